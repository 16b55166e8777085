"""`irl validate FILE...`: schema errors, then lints (settings that will not do what you expect).

Exit codes: 0 valid (hints allowed), 1 errors (invalid policy or error lints),
3 warnings with ``--strict``. (2 is argparse's usage error.)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from irl_extproc.policy.load import PolicyError, load_policy
from irl_extproc.render.lint import lint

EXIT_ERRORS = 1
EXIT_STRICT_WARNINGS = 3


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate policy files and lint their resilience settings",
        description="Exit codes: 0 valid, 1 errors, 3 warnings with --strict.",
    )
    parser.add_argument("files", nargs="+")
    parser.add_argument("--strict", action="store_true", help="fail on lint warnings too (exit 3)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    errors = warnings = False
    for file in args.files:
        try:
            policy = load_policy(file)
        except PolicyError as exc:
            errors = True
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
            continue
        findings = lint(policy)
        for finding in findings:
            print(f"{file}: {finding}", file=sys.stderr)
        errors |= any(f.severity == "error" for f in findings)
        warnings |= any(f.severity == "warning" for f in findings)
        counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "hint")}
        summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n)
        verdict = f"invalid: {file}" if counts["error"] else f"ok: {file}"
        print(f"{verdict} ({summary})" if summary else verdict)
    if errors:
        return EXIT_ERRORS
    return EXIT_STRICT_WARNINGS if warnings and args.strict else 0
