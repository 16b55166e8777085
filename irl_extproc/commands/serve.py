"""`irl serve`: the ext_proc server, optionally as several processes on consecutive ports.

One Envoy worker multiplexes all streams on one HTTP/2 connection per endpoint, so
scaling out means more endpoints (ports) in the ext_proc cluster, not SO_REUSEPORT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import uvloop

from irl_extproc.policy.load import PolicyError, load_policy
from irl_extproc.processes import die_with_parent
from irl_extproc.telemetry.setup import TelemetryOptions, options_from_args, worker_arguments
from irl_extproc.telemetry.setup import add_arguments as add_telemetry_arguments


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the ext_proc gRPC server")
    parser.add_argument("--policy", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50051, help="first port; worker i listens on port+i")
    parser.add_argument("--workers", type=int, default=1, help="server processes (one per core is typical)")
    parser.add_argument("--ready-file", type=Path, help="write the bound port here once serving")
    parser.add_argument("--log-level", default="INFO")
    add_telemetry_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    telemetry = options_from_args(args, policy_otlp_endpoint=policy.document.telemetry.otlp_endpoint)
    if args.workers > 1:
        return _supervise(args, telemetry)
    from irl_extproc.server.app import serve

    try:
        uvloop.run(serve(args.policy, f"{args.host}:{args.port}", ready_file=args.ready_file, telemetry=telemetry))
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _supervise(args: argparse.Namespace, telemetry: TelemetryOptions) -> int:
    """Start one single-process server per port and pass signals on to them."""
    children = []
    for i in range(args.workers):
        argv = [
            sys.executable,
            "-m",
            "irl_extproc.cli",
            "serve",
            "--policy",
            str(args.policy),
            "--host",
            args.host,
            "--port",
            str(args.port + i),
            "--log-level",
            args.log_level,
        ]
        argv += worker_arguments(telemetry, i)  # each worker: its own metrics port and audit chain
        if args.ready_file:
            argv += ["--ready-file", f"{args.ready_file}.{i}"]
        children.append(subprocess.Popen(argv, preexec_fn=die_with_parent))  # noqa: PLW1509 - prctl only

    def forward(signum: int, _: FrameType | None) -> None:
        for child in children:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
