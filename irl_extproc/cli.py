"""`irl` entry point. Each subcommand lives in ``irl_extproc.commands.<name>``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# One line per subcommand; each module has ``register(subparsers)`` that sets ``func``.
COMMAND_MODULES = (
    "validate",
    "render",
    "diff",
    "schema",
    "serve",
    "up",
    "check",
    "audit",
    "budget",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands, or just ``only``: `irl serve` need not import the renderer or detectors."""
    parser = argparse.ArgumentParser(prog="irl", description="Integration Resilience Layer")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        if only is None or name == only:
            importlib.import_module(f"irl_extproc.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMAND_MODULES else None).parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
