"""Instructions telemetry adds per stream, counted by valgrind: exact where CPU time is noise.

On a shared VM, CPU time per stream moves by tens of percent between runs; instruction counts
barely move (~1 %: timers and batch boundaries still depend on the clock). This drives IRL
in-process as ``telemetry_inprocess`` does (the run_extproc chat exchange, 16 streams at a
time), under callgrind, and counts the main thread's instructions. Each configuration runs
twice, with ``--short`` and ``--long`` batches after the same warm-up, and the difference per
stream is reported, so start-up cancels out. Use it to decide whether a change to telemetry
code pays; ``telemetry_overhead`` is still what a user sees.

    .venv/bin/python -m benchmarks.telemetry_instructions                      # off vs trace,audit,metrics
    .venv/bin/python -m benchmarks.telemetry_instructions --parts audit --parts metrics

Needs valgrind (not installed by the project). Each configuration takes ~1.5 min (its two runs
in parallel). valgrind's CPU has no SHA-NI, so each audit record's SHA-256 counts ~20k
instructions more than it costs natively (~1.3 µs a record).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import uvloop

from benchmarks.run_extproc import REPO
from benchmarks.telemetry_inprocess import BATCH, cpu_per_stream
from benchmarks.telemetry_overhead import OtlpSink
from irl_extproc.server.app import ExternalProcessor
from irl_extproc.server.policy_holder import PolicyHolder, freeze_heap
from irl_extproc.telemetry.setup import Telemetry, TelemetryOptions

WARM_UP = 10  # batches before the counted ones: caches, lazy models, the audit file


async def drive(parts: list[str], batches: int) -> None:
    """What runs under valgrind: warm up, freeze the heap as ``irl serve`` does, run ``batches``."""
    sink = OtlpSink()
    with tempfile.TemporaryDirectory() as audit_dir:
        telemetry = Telemetry(
            TelemetryOptions(
                otlp_endpoint=f"127.0.0.1:{sink.port}" if "trace" in parts else None,
                audit_dir=Path(audit_dir) if "audit" in parts else None,
                metrics_port=0 if "metrics" in parts else None,
                metrics_address="127.0.0.1",
            )
        )
        await telemetry.start()
        server = ExternalProcessor(PolicyHolder(REPO / "policies" / "example.yaml"), telemetry)
        try:
            await cpu_per_stream(server, WARM_UP)
            freeze_heap()
            await cpu_per_stream(server, batches)
        finally:
            await telemetry.aclose()
            sink.server.stop(None)


def count(parts: str, batches: int, directory: Path) -> subprocess.Popen[bytes]:
    """Start one callgrind run; its main thread's count is in ``directory/<parts>.<batches>-01``."""
    out = directory / f"{parts}.{batches}"
    argv = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}"]
    argv += [sys.executable, "-m", "benchmarks.telemetry_instructions", "--drive", parts, str(batches)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # dict layouts, and so their costs, repeat
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main_thread_instructions(directory: Path, parts: str, batches: int) -> int:
    for line in (directory / f"{parts}.{batches}-01").read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no callgrind summary for {parts} {batches}")


def per_stream(parts: str, short: int, long: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        runs = [count(parts, batches, directory) for batches in (short, long)]
        for run in runs:
            if run.wait() != 0:
                raise RuntimeError(f"valgrind run for {parts} failed (exit {run.returncode})")
        counts = [main_thread_instructions(directory, parts, batches) for batches in (short, long)]
    return (counts[1] - counts[0]) / ((long - short) * BATCH)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", action="append", help="trace, audit, metrics, comma-separated (repeatable)")
    parser.add_argument("--short", type=int, default=5, help=f"batches of {BATCH} streams in the short run")
    parser.add_argument("--long", type=int, default=45, help="... and in the long run")
    parser.add_argument("--drive", nargs=2, metavar=("PARTS", "BATCHES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        uvloop.run(drive(args.drive[0].split(","), int(args.drive[1])))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    off = per_stream("none", args.short, args.long)
    print(f"telemetry off: {off:,.0f} instructions per stream (main thread)")
    for parts in args.parts or ["trace,audit,metrics"]:
        on = per_stream(parts, args.short, args.long)
        print(f"{parts}: {on:,.0f} per stream, +{on - off:,.0f} (+{(on - off) / off:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
