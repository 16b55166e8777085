"""Render ``istio/istio.yaml`` from ``base/policy.yaml`` with IRL's renderer.

    .venv/bin/python deploy/kubernetes/generate.py

The same file is the policy the IRL Deployment serves (``base/`` mounts it), so the
EnvoyFilter's route ids and policy hash match what the server enforces.
``tests/envoy/test_trace_deploy.py`` fails when the committed output is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from irl_extproc.policy.load import load_policy
from irl_extproc.render.istio import IstioOptions, dump_istio, render_istio

HERE = Path(__file__).resolve().parent
POLICY = HERE / "base" / "policy.yaml"
APP_NAMESPACE = "apps"  # where the guarded workloads (and so the Istio resources) live
OPTIONS = IstioOptions(namespace=APP_NAMESPACE, extproc_host="irl-extproc.irl-system.svc.cluster.local",
                       extproc_port=50051)


def generate(out: Path) -> list[Path]:
    loaded = load_policy(POLICY)
    policy = type(loaded)(loaded.document, "deploy/kubernetes/base/policy.yaml", loaded.version)  # stable header
    rendered = render_istio(policy, OPTIONS)
    if rendered.warnings:
        raise SystemExit("\n".join(f"warning: {w}" for w in rendered.warnings))
    path = out / "istio.yaml"
    path.write_text(dump_istio(rendered, policy))
    return [path]


if __name__ == "__main__":
    for written in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "istio"):
        print(f"wrote {written}")
