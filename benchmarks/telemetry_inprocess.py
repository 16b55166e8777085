"""What telemetry adds to IRL's own work per stream, in one process, off and on interleaved.

Drives ``ExternalProcessor.Process`` through fake gRPC contexts with the messages Envoy sends
for the buffered ~2 KB chat exchange of ``run_extproc`` (request headers and body, response
headers and body; ``policies/example.yaml``), 16 streams at a time, and reads the main
thread's CPU time (``time.thread_time``) per stream. Blocks of streams alternate between a
server with telemetry off and one with it on, so drift and noise hit both alike.

No gRPC, Envoy or upstream run here, so this is not the cost a user sees; that is
``telemetry_overhead``. This one resolves a few µs where the end-to-end benchmark resolves
~30 µs, which is what attributing a change to IRL's telemetry code needs. In the server the
same code costs 1.5-2x what it costs here (its caches are colder between messages).

    .venv/bin/python -m benchmarks.telemetry_inprocess                         # trace, audit, metrics
    .venv/bin/python -m benchmarks.telemetry_inprocess --parts audit --rounds 40
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import uvloop

from benchmarks.run_extproc import CHAT, REPO
from benchmarks.telemetry_overhead import OtlpSink
from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc.server.app import ExternalProcessor
from irl_extproc.server.policy_holder import PolicyHolder, freeze_heap
from irl_extproc.telemetry.setup import Telemetry, TelemetryOptions
from tests.extproc_messages import body, completion, headers, request_headers

BATCH = 16  # streams in flight together, as wrk's 16 connections
ANSWER = "Three bullet points: pressure steady overnight; two valve seals replaced; inspection passed. " * 4
EXCHANGE = [
    request_headers(**{"x-request-id": "5b1b9c9e-4d7f-4a3e-9f44-2c0a0b0f0e11", "content-length": "2048"}),
    body("request_body", CHAT.body),
    headers("response_headers", {":status": "200", "content-type": "application/json"}),
    body("response_body", completion(ANSWER)),
]


class FakeStream:
    """What ``Process`` uses of a grpc.aio context: Envoy's metadata, the messages, a sink for replies."""

    def __init__(self) -> None:
        traceparent = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
        self._metadata = (("x-irl-route", "chat-llm/chat"), ("traceparent", traceparent))
        self._messages = iter(EXCHANGE)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def read(self) -> ep.ProcessingRequest | object:
        return next(self._messages, grpc.aio.EOF)

    async def write(self, response: ep.ProcessingResponse) -> None:
        pass


async def cpu_per_stream(server: ExternalProcessor, batches: int) -> float:
    """Main-thread CPU µs per stream over ``batches`` x ``BATCH`` streams."""
    started = time.thread_time()
    for _ in range(batches):
        await asyncio.gather(*(server.Process(None, FakeStream()) for _ in range(BATCH)))  # type: ignore[arg-type]
    return (time.thread_time() - started) / (batches * BATCH) * 1e6


async def measure(parts: list[str], rounds: int, batches: int) -> tuple[list[float], list[float]]:
    sink = OtlpSink()
    with tempfile.TemporaryDirectory() as audit_dir:
        options = TelemetryOptions(
            otlp_endpoint=f"127.0.0.1:{sink.port}" if "trace" in parts else None,
            audit_dir=Path(audit_dir) if "audit" in parts else None,
            metrics_port=0 if "metrics" in parts else None,
            metrics_address="127.0.0.1",
        )
        telemetry = Telemetry(options)
        await telemetry.start()
        policy = PolicyHolder(REPO / "policies" / "example.yaml")
        off, on = ExternalProcessor(policy), ExternalProcessor(policy, telemetry)
        try:
            for server in (off, on):
                await cpu_per_stream(server, 20)  # warm up: caches, lazy models, the audit file
            freeze_heap()  # as ``irl serve`` does once serving starts: full collections skip the models
            results: tuple[list[float], list[float]] = ([], [])
            for round_ in range(rounds):
                order = (off, on) if round_ % 2 else (on, off)
                measured = {id(server): await cpu_per_stream(server, batches) for server in order}
                results[0].append(measured[id(off)])
                results[1].append(measured[id(on)])
            return results
        finally:
            await telemetry.aclose()
            sink.server.stop(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="trace,audit,metrics", help="what is on: trace, audit, metrics")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batches", type=int, default=25, help=f"per server and round, of {BATCH} streams")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    off, on = uvloop.run(measure(parts, args.rounds, args.batches))
    added = sorted(b - a for a, b in zip(off, on, strict=True))
    print(f"telemetry on: {', '.join(parts)}; {args.rounds} rounds of {args.batches * BATCH} streams per server")
    print(f"main-thread CPU per stream: off {statistics.median(off):.1f} µs, on {statistics.median(on):.1f} µs")
    print(
        f"added by telemetry: {statistics.median(added):.1f} µs per stream "
        f"(median of the rounds; range {added[0]:.1f} … {added[-1]:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
