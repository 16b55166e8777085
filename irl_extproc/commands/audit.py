"""`irl audit verify FILE|DIR`: prove the decision log was not edited, cut or reordered."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from irl_extproc.telemetry.audit_verify import verify


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="work with the hash-chained decision log")
    actions = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    check = actions.add_parser("verify", help="verify audit chains: exit 1 on any edited, removed or moved record")
    check.add_argument("path", type=Path, help="an audit file, or a directory of chains (<chain>-<index>.jsonl)")
    check.add_argument("--allow-pruned", action="store_true",
                       help="accept chains whose oldest files were deleted by retention (start past sequence 0)")
    check.add_argument("--schema", action="store_true", help="also check each record against irl.v1.DecisionRecord")
    check.add_argument("--anchor", action="append", default=[], metavar="[CHAIN:]SEQUENCE:HASH",
                       help="a head printed by an earlier verify and kept elsewhere: it must still be in the chain "
                            "(detects records cut off the end); repeatable")
    check.set_defaults(func=run_verify)


def _anchors(values: list[str]) -> dict[str, tuple[int, str]]:
    anchors = {}
    for value in values:
        parts = value.rsplit(":", 2)
        if len(parts) == 2:
            parts = ["audit", *parts]
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[2]) != 64:
            raise ValueError(f"--anchor {value!r}: expected [CHAIN:]SEQUENCE:HASH, as printed by `irl audit verify`")
        anchors[parts[0]] = (int(parts[1]), parts[2])
    return anchors


def run_verify(args: argparse.Namespace) -> int:
    try:
        anchors = _anchors(args.anchor)
        reports = verify(args.path, allow_pruned=args.allow_pruned, check_schema=args.schema, anchors=anchors)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = False
    for report in reports:
        for problem in report.problems:
            print(f"error: {problem}", file=sys.stderr)
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        span = f"sequence {report.first_sequence}..{report.head[0]}" if report.head else "no records"
        state = "ok" if report.ok else f"BROKEN ({len(report.problems)} problems)"
        print(f"{state}: chain {report.chain!r}: {report.records} records ({span}) in {len(report.files)} file(s)")
        if report.head:
            sequence, digest = report.head
            print(f"  head (keep it to detect truncation later): --anchor {report.chain}:{sequence}:{digest}")
        failed = failed or not report.ok
    return 1 if failed else 0
