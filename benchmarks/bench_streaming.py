"""Streamed (SSE) responses: Envoy alone vs Envoy + IRL (full duplex, default window), one run.

Both stacks proxy the same demo upstream, which streams an OpenAI chat completion as fast
as it can, one event per word. A small asyncio HTTP/1.1 client (keep-alive, chunked
decoding, nothing else) measures:

- time to first token (TTFT): request sent → first non-empty content delta, 1 stream at a time;
- per-chunk overhead: (stream duration with IRL - without) / content events, 1 stream at a time;
- chunks/s: content events delivered per second with 16 concurrent streams.

    .venv/bin/python -m benchmarks.bench_streaming                    # ~40 s
    .venv/bin/python -m benchmarks.bench_streaming --words 400 --seconds 10

The IRL route inspects only the response (pii, secrets, a deny pattern; the policy's default
128-character / 1 s window), so the numbers are the cost of streaming enforcement; such a
route skips the request headers round trip (docs/streaming.md). The headers-only route (one
request headers round trip, no body) shows what opening an ext_proc stream costs alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

from benchmarks.run_extproc import environment

POLICY = """
version: 1
services:
  llm:
    upstream: {address: 127.0.0.1, port: 18080}
    routes:
      - name: chat
        match: {prefix: /v1/chat/completions}
        sentinel:
          format: openai-chat{window}
          response:
            - pii: {action: redact}
            - secrets: {action: redact}
            - deny_patterns: {patterns: ['CANARY-[0-9a-f]{12}'], action: block}
  headers-only:
    hosts: [headers-only.test]
    upstream: {address: 127.0.0.1, port: 18080}
    sentinel: {}
"""
HEADERS_ONLY = "envoy+irl headers only"  # the same IRL, one request headers round trip: a stream's fixed cost
_CONTENT = re.compile(rb'"delta":\{"content":"[^"]')  # a non-empty content delta (linear, fixed)
_WORDS = ("pressure", "valve", "station", "logged", "steady", "crew", "replaced", "seals", "before", "inspection")


class Failed(Exception):
    """A stream that did not answer 200 (e.g. 504 when IRL missed Envoy's message timeout)."""


@dataclass
class Timing:
    ttft: float  # seconds to the first non-empty content delta
    total: float  # seconds to the end of the response
    events: int  # non-empty content deltas received


def request_bytes(host: str, words: int) -> bytes:
    text = " ".join(_WORDS[i % len(_WORDS)] for i in range(words))
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": text}]})
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body.encode()


class Connection:
    """One keep-alive HTTP/1.1 connection that reads chunked SSE responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def stream(self, request: bytes) -> Timing:
        start = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
            length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            if length is None:
                raise RuntimeError(f"unexpected response head: {head[:200]!r}")
            await self.reader.readexactly(int(length.group(1)))  # the connection stays usable
            raise Failed(head.split(b"\r\n", 1)[0].decode())
        ttft, events, tail = 0.0, 0, b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
            data = (await self.reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
            window = tail + data
            found = len(_CONTENT.findall(window)) - len(_CONTENT.findall(tail))
            if found and not events:
                ttft = time.perf_counter() - start
            events += found
            tail = window[-24:]  # a delta's marker may straddle two HTTP chunks
        return Timing(ttft, time.perf_counter() - start, events)

    def close(self) -> None:
        self.writer.close()


async def sequential(targets: dict[str, tuple[str, bytes]], count: int) -> dict[str, list[Timing]]:
    """``count`` streams per stack, one at a time, taking turns (so load drift hits all alike)."""
    connections = {name: await Connection.open(url) for name, (url, _) in targets.items()}
    timings: dict[str, list[Timing]] = {name: [] for name in targets}
    try:
        for round_number in range(count + 3):  # the first three rounds warm up
            for name, (_, request) in targets.items():
                timing = await connections[name].stream(request)
                if round_number >= 3:
                    timings[name].append(timing)
        return timings
    finally:
        for connection in connections.values():
            connection.close()


async def concurrent(url: str, request: bytes, streams: int, seconds: float) -> tuple[int, int, int, float]:
    """(content events, streams, failed streams, seconds) with ``streams`` clients streaming back to back."""
    deadline = time.perf_counter() + seconds
    totals = [0, 0, 0]

    async def client() -> None:
        connection = await Connection.open(url)
        try:
            while time.perf_counter() < deadline:
                try:
                    timing = await connection.stream(request)
                except Failed:
                    totals[2] += 1
                    continue
                totals[0] += timing.events
                totals[1] += 1
        finally:
            connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(streams)))
    return totals[0], totals[1], totals[2], time.perf_counter() - start


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


async def measure(urls: dict[str, str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    targets = {
        stack: (url, request_bytes("headers-only.test" if stack == HEADERS_ONLY else urlsplit(url).netloc, args.words))
        for stack, url in urls.items()
    }
    timings = await sequential(targets, args.requests)
    print("  measured time to first token and stream time", flush=True)
    totals = {stack: [0.0, 0.0, 0.0, 0.0] for stack in targets}
    rounds = 3  # the concurrent runs also take turns, in short slices
    for _ in range(rounds):
        for stack, (url, request) in targets.items():
            run = await concurrent(url, request, args.streams, args.seconds / rounds)
            totals[stack] = [a + b for a, b in zip(totals[stack], run, strict=True)]
    print(f"  measured chunks/s at {args.streams} streams", flush=True)
    return {
        stack: {
            "ttft_p50_ms": p([t.ttft for t in timings[stack]], 50) * 1000,
            "ttft_p99_ms": p([t.ttft for t in timings[stack]], 99) * 1000,
            "stream_p50_ms": p([t.total for t in timings[stack]], 50) * 1000,
            "stream_p99_ms": p([t.total for t in timings[stack]], 99) * 1000,
            "events": statistics.median(t.events for t in timings[stack]),
            "chunks_per_s": totals[stack][0] / totals[stack][3],
            "streams_per_s": totals[stack][1] / totals[stack][3],
            "failed": totals[stack][2],
        }
        for stack in targets
    }


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.words} words per reply, {args.requests} sequential streams, {args.streams} concurrent for "
        f"{args.seconds:.0f}s, window {args.window or 'default (128 chars)'}\n"
    )
    header = (
        f"{'stack':<22} {'TTFT p50':>9} {'TTFT p99':>9} {'stream p50':>11} {'stream p99':>11} "
        f"{'chunks':>7} {'chunks/s @' + str(args.streams):>14} {'streams/s':>10} {'failed':>7}"
    )
    print(header)
    print("-" * len(header))
    for stack, r in results.items():
        print(
            f"{stack:<22} {r['ttft_p50_ms']:>7.2f}ms {r['ttft_p99_ms']:>7.2f}ms {r['stream_p50_ms']:>9.2f}ms "
            f"{r['stream_p99_ms']:>9.2f}ms {r['events']:>7.0f} {r['chunks_per_s']:>14.0f} {r['streams_per_s']:>10.1f} "
            f"{r['failed']:>7.0f}"
        )
    alone, irl = results["envoy"], results["envoy+irl"]
    ttft_added = irl["ttft_p50_ms"] - alone["ttft_p50_ms"]
    per_chunk = (irl["stream_p50_ms"] - alone["stream_p50_ms"]) / max(1.0, irl["events"])
    ratio = irl["chunks_per_s"] / alone["chunks_per_s"]
    print()
    print(f"[{'PASS' if ttft_added <= 2 else 'FAIL'}] TTFT added (p50) <= 2 ms: {ttft_added:.3f} ms")
    print(
        f"[{'PASS' if per_chunk <= 0.2 else 'FAIL'}] per-chunk overhead (p50 stream time / chunks) <= 0.2 ms: "
        f"{per_chunk:.4f} ms"
    )
    print(f"[INFO] chunks/s at {args.streams} streams, Envoy + IRL vs Envoy alone: {ratio:.2f}x")
    failed = sum(r["failed"] for r in results.values())
    print(f"[{'PASS' if not failed else 'FAIL'}] no failed streams at {args.streams} concurrent: {failed:.0f}")
    fixed = results[HEADERS_ONLY]["ttft_p50_ms"] - alone["ttft_p50_ms"]
    print(
        f"[INFO] TTFT added by a route with one header round trip and no body (headers-only): {fixed:.3f} ms; "
        f"the streaming route (response headers, then the first text checked and released): {ttft_added:.3f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=200, help="content deltas per streamed reply")
    parser.add_argument("--requests", type=int, default=100, help="sequential streams for TTFT and per-chunk cost")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams for chunks/s")
    parser.add_argument("--seconds", type=float, default=5, help="duration of the concurrent run, per stack")
    parser.add_argument("--irl-workers", type=int, default=2)
    parser.add_argument("--window", type=int, help="stream_window_chars (default: the policy default, 128)")
    args = parser.parse_args(argv)
    print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="irl-bench-stream-") as tmp:
        policy = Path(tmp) / "policy.yaml"
        window = f"\n          stream_window_chars: {args.window}" if args.window else ""
        policy.write_text(POLICY.replace("{window}", window))
        with environment(Path(tmp), ("envoy", "envoy+irl"), policy, args.irl_workers) as env:
            urls = {name: target.url for name, target in env.targets.items()}
            urls[HEADERS_ONLY] = urls["envoy+irl"]
            results = uvloop.run(measure(urls, args))
    report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
