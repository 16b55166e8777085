"""Rendered output is byte-identical to the reviewed golden files.

After an intended change, regenerate them with
`IRL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render_golden.py` and review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from irl_extproc.policy.load import LoadedPolicy, load_policy
from irl_extproc.render.envoy import dump_yaml, render_bootstrap, render_xds
from irl_extproc.render.istio import IstioOptions, dump_istio, render_istio
from tests.conftest import REPO

pytestmark = pytest.mark.unit

GOLDEN = Path("tests/golden")  # relative to the repository: it is named in every header
POLICIES = sorted(p.name for p in (REPO / GOLDEN / "policies").glob("*.yaml"))
XDS_PATH = Path("/etc/envoy/irl-xds")
ENVOY_OPTIONS = {
    "extproc_endpoints": [("127.0.0.1", 50051), ("127.0.0.1", 50052)],
    "admin_port": 9901,
    "otlp_endpoint": ("127.0.0.1", 4317),
}


def envoy(policy: LoadedPolicy) -> str:
    return dump_yaml(render_bootstrap(policy, **ENVOY_OPTIONS), policy)  # type: ignore[arg-type]


def envoy_xds(policy: LoadedPolicy) -> str:
    bootstrap = dump_yaml(render_bootstrap(policy, xds_dir=XDS_PATH, **ENVOY_OPTIONS), policy)  # type: ignore[arg-type]
    responses = render_xds(policy, XDS_PATH, otlp_endpoint=("127.0.0.1", 4317))
    return bootstrap + "".join(f"---\n{dump_yaml(responses[k], policy)}" for k in ("cds", "rds", "lds"))


def istio(policy: LoadedPolicy) -> str:
    output = render_istio(policy, IstioOptions(version="1.27"))
    warnings = "".join(f"# warning: {w}\n" for w in output.warnings)
    return warnings + dump_istio(output, policy)


RENDERERS: dict[str, Callable[[LoadedPolicy], str]] = {"envoy": envoy, "envoy-xds": envoy_xds, "istio": istio}


@pytest.mark.parametrize("target", sorted(RENDERERS))
@pytest.mark.parametrize("policy_name", POLICIES)
def test_rendered_output_matches_golden(policy_name: str, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    policy = load_policy(GOLDEN / "policies" / policy_name)
    rendered = RENDERERS[target](policy)
    assert rendered == RENDERERS[target](load_policy(GOLDEN / "policies" / policy_name)), "not deterministic"
    golden = GOLDEN / target / policy_name
    if os.environ.get("IRL_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    assert golden.exists(), f"no golden file {golden}: run with IRL_UPDATE_GOLDEN=1 and review it"
    assert rendered == golden.read_text(), f"{golden} differs: review, then regenerate with IRL_UPDATE_GOLDEN=1"
