"""Every rendered Envoy config passes `envoy --mode validate` with no deprecation warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from irl_extproc.cli import main
from irl_extproc.policy.load import load_policy
from irl_extproc.render.envoy import dump_yaml, render_bootstrap
from irl_extproc.render.validate import validate_with_envoy
from tests.conftest import POLICIES, REPO, TESTS

pytestmark = pytest.mark.envoy

POLICY_FILES = sorted(
    [*(TESTS / "golden" / "policies").glob("*.yaml"), *POLICIES.glob("*.yaml"), *(REPO / "policies").glob("*.yaml")]
)


def assert_envoy_accepts(config: Path) -> None:
    verdict = validate_with_envoy(config)
    assert verdict.ok, "\n".join(verdict.problems)


@pytest.mark.parametrize("policy_file", POLICY_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("tracing", [False, True], ids=["plain", "otlp"])
def test_rendered_bootstrap_is_valid(policy_file: Path, tracing: bool, tmp_path: Path) -> None:
    policy = load_policy(policy_file)
    config = render_bootstrap(
        policy,
        extproc_endpoints=[("127.0.0.1", 50051), ("localhost", 50052)],
        admin_port=19000,
        otlp_endpoint=("127.0.0.1", 4317) if tracing else None,
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(dump_yaml(config, policy))
    assert_envoy_accepts(path)


@pytest.mark.parametrize("golden", sorted((TESTS / "golden" / "envoy").glob("*.yaml")), ids=lambda p: p.name)
def test_golden_envoy_files_are_valid(golden: Path) -> None:
    assert_envoy_accepts(golden)


def test_validator_rejects_deprecated_options(tmp_path: Path) -> None:
    """The check itself must be able to fail: a deprecated field is reported."""
    path = tmp_path / "deprecated.yaml"
    path.write_text(
        "static_resources:\n  clusters:\n  - name: x\n    connect_timeout: 1s\n    http2_protocol_options: {}\n"
    )
    verdict = validate_with_envoy(path)
    assert not verdict.ok
    assert any("deprecated" in line.lower() for line in verdict.problems)


def test_irl_render_runs_envoy_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = TESTS / "golden" / "policies" / "mesh.yaml"
    assert main(["render", str(policy), "--target", "envoy-xds", "--out", str(tmp_path)]) == 0
    assert "envoy --mode validate: ok" in capsys.readouterr().err
