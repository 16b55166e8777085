"""`irl validate` lint severities and exit codes; `irl render` targets and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from irl_extproc.cli import main
from tests.conftest import TESTS

pytestmark = pytest.mark.unit

MESH = TESTS / "golden" / "policies" / "mesh.yaml"
CLEAN = """version: 1
services:
  a:
    upstream: {address: a.svc, port: 80}
    resilience: {circuit_breakers: {max_connections: 10, max_pending_requests: 10, max_requests: 10}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = write(tmp_path, CLEAN)
    assert main(["validate", str(clean), "--strict"]) == 0
    assert capsys.readouterr().out == f"ok: {clean}\n"
    warned = write(tmp_path, CLEAN.replace("max_pending_requests: 10", "max_pending_requests: 0"))
    assert main(["validate", str(warned)]) == 0
    assert main(["validate", str(warned), "--strict"]) == 3
    captured = capsys.readouterr()
    assert "warning: a: circuit_breakers.max_pending_requests 0" in captured.err
    assert f"ok: {warned} (1 warning)" in captured.out
    broken = write(tmp_path, CLEAN + "    routes: [{match: {prefix: /}, resilience: {rate_limit: {requests: 1}}}]\n")
    assert main(["validate", str(broken)]) == 1
    assert f"invalid: {broken} (1 error)" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 1


def test_render_envoy_balances_every_extproc_given(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["render", str(MESH), "--out", str(out), "--extproc", "10.0.0.5:50051", "--extproc", "irl:50052"]
    assert main([*argv, "--no-validate"]) == 0
    bootstrap = yaml.safe_load((out / "envoy.yaml").read_text())
    extproc = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "irl_extproc")
    assert extproc["type"] == "STRICT_DNS"
    assert len(extproc["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2
    assert (out / "envoy.yaml").read_text().startswith(f"# Rendered by irl from {MESH} (sha256 ")


def test_render_xds_points_at_the_runtime_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["render", str(MESH), "--target", "envoy-xds", "--out", str(out), "--xds-path", "/srv/xds"]
    assert main([*argv, "--no-validate"]) == 0
    bootstrap = yaml.safe_load((out / "bootstrap.yaml").read_text())
    assert bootstrap["dynamic_resources"]["cds_config"]["path_config_source"]["path"] == "/srv/xds/cds.yaml"
    assert sorted(p.name for p in (out / "xds").iterdir()) == ["cds.yaml", "lds.yaml", "rds.yaml"]


def test_render_istio_prints_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["render", str(MESH), "--target", "istio", "--istio-version", "1.27", "--out", str(out)]) == 0
    assert "Istio has no active health checks" in capsys.readouterr().err
    kinds = [d["kind"] for d in yaml.safe_load_all((out / "istio.yaml").read_text()) if d]
    assert kinds.count("EnvoyFilter") == 1


def test_render_refuses_lint_errors_and_invalid_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = write(tmp_path, CLEAN + "    routes: [{match: {prefix: /}, resilience: {rate_limit: {per: 1s}}}]\n")
    assert main(["render", str(broken), "--out", str(tmp_path / "out")]) == 1
    assert "not rendered: fix the lint errors above" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main(["render", str(MESH), "--out", str(tmp_path), "--extproc", "no-port"])
