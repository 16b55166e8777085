"""`irl diff OLD NEW`: semantic changes per service and route, then the rendered-config diff.

Exit codes follow diff(1): 0 no change, 1 changes, 2 trouble (an invalid policy).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from irl_extproc.policy.load import LoadedPolicy, PolicyError, load_policy
from irl_extproc.render.diff import semantic_diff, text_diff
from irl_extproc.render.envoy import dump_yaml, render_bootstrap

# Fixed deployment options: only the policy differs between the two renderings.
_ENVOY_OPTIONS: dict[str, Any] = {"extproc_endpoints": [("127.0.0.1", 50051)], "admin_port": 9901}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("diff", help="what changes between two policies (semantic and rendered)")
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--target", choices=("envoy", "istio", "none"), default="envoy", help="rendered diff")
    parser.set_defaults(func=run)


def _render(policy: LoadedPolicy, target: str) -> str:
    if target == "istio":
        from irl_extproc.render.istio import IstioOptions, dump_istio, render_istio

        return dump_istio(render_istio(policy, IstioOptions()), policy)
    return dump_yaml(render_bootstrap(policy, **_ENVOY_OPTIONS), policy)


def run(args: argparse.Namespace) -> int:
    try:
        old, new = load_policy(args.old), load_policy(args.new)
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    changes = semantic_diff(old, new)
    if not changes:
        print("no semantic changes")
    for line in changes:
        print(line)
    if args.target != "none":
        rendered = text_diff(_render(old, args.target), _render(new, args.target), args.old, args.new)
        if rendered:
            print(f"\nrendered {args.target} config:")
            print("\n".join(rendered))
    return 1 if changes else 0
