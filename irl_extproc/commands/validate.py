"""`irl validate FILE...`: exit 1 when any policy has errors."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from irl_extproc.policy.load import PolicyError, load_policy


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("validate", help="validate policy files")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--strict", action="store_true", help="fail on lint warnings too")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    failed = False
    for file in args.files:
        try:
            load_policy(file)
        except PolicyError as exc:
            failed = True
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
            continue
        print(f"ok: {file}")
    return 1 if failed else 0
