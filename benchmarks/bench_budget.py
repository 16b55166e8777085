"""What budget and loop checks add per request, against a real Redis (target: ≤ 0.5 ms at p50).

One request = what the processor does for it: ``check_async`` on the request (one atomic
Lua reserve; plus the loop guard's counter when enabled), the upstream's time (an idle
wait, not counted), then ``settle`` with the response's usage (the charge, whose store
write runs in the background). The timed phases are the latency the checks add; the
baseline decodes the same request with no checks. Runs on uvloop like ``irl serve``; starts its own redis-server unless
``--redis-url`` is given.

    .venv/bin/python -m benchmarks.bench_budget [--requests 3000] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from irl_extproc.budgets.memory import MemoryStore
from irl_extproc.budgets.redis_store import RedisStore
from irl_extproc.budgets.store import CounterStore, StoreConfig
from irl_extproc.invariants.budget import Budget, BudgetConfig
from irl_extproc.invariants.loop_guard import LoopGuard, LoopGuardConfig
from tests.budget_helpers import chat, context, usage
from tests.redis.server import running_redis

Step = Callable[[int], Awaitable[float]]  # one request; returns the seconds spent in checks
UPSTREAM_SECONDS = 0.0005  # the upstream's time between the two phases (not counted)


def budget(store: CounterStore) -> Budget:
    config = BudgetConfig.model_validate({
        "limits": [{"window": "minute", "tokens": 10**12}, {"window": "day", "tokens": 10**12},
                   {"window": "month", "usd": 10**6}],
        "prices": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}},
    })
    return Budget(config, store=store)


def steps(guard: Budget, store: CounterStore, *, loop_guard: bool) -> Step:
    """One request's checks; its charge is written in the background, as in the server."""
    loop = LoopGuard(LoopGuardConfig(max_repeats=10**9), store=store) if loop_guard else None
    reply = usage(120, 40)

    async def one(i: int) -> float:
        ctx = context(f"tenant-{i % 50}")
        started = time.perf_counter()
        conversation = chat(f"request {i} " + "x" * 2000, max_tokens=200)
        if loop is not None:
            await loop.check_async(conversation, ctx)
        await guard.check_async(conversation, ctx)
        request_phase = time.perf_counter() - started
        await asyncio.sleep(UPSTREAM_SECONDS)  # the upstream answers; the event loop is free meanwhile
        started = time.perf_counter()
        await guard.settle(reply, ctx, completed=True)
        return request_phase + time.perf_counter() - started

    return one


async def baseline(i: int) -> float:
    started = time.perf_counter()
    chat(f"request {i} " + "x" * 2000, max_tokens=200)  # the same request decoding, no checks
    request_phase = time.perf_counter() - started
    await asyncio.sleep(UPSTREAM_SECONDS)
    return request_phase


async def measure(step: Step, requests: int, concurrency: int) -> list[float]:
    for i in range(200):  # warm: connections, scripts, caches
        await step(i)
    latencies: list[float] = []
    queue = iter(range(requests))

    async def worker() -> None:
        for i in queue:
            latencies.append(await step(i))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def row(name: str, latencies: list[float], base_p50: float, wall: float) -> str:
    ordered = sorted(latencies)
    p50, p99 = statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]
    return (f"{name:<28} {p50 * 1e3:>8.3f} {p99 * 1e3:>8.3f} {(p50 - base_p50) * 1e3:>10.3f} "
            f"{len(ordered) / wall:>10.0f}")


async def run(url: str, requests: int, concurrency: int) -> None:
    redis_config = StoreConfig.model_validate({"backend": "redis", "url": url, "timeout": "1s"})
    cases: list[tuple[str, Callable[[], CounterStore], bool]] = [
        ("budget, memory store", MemoryStore, False),
        ("budget, redis", lambda: RedisStore(redis_config), False),
        ("budget + loop_guard, redis", lambda: RedisStore(redis_config), True),
    ]
    print(f"{requests} requests, concurrency {concurrency}, redis {url}")
    print(f"{'case':<28} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'req/s':>10}")
    started = time.perf_counter()
    latencies = await measure(baseline, requests, concurrency)
    base_p50 = statistics.median(latencies)
    print(row("baseline (no checks)", latencies, base_p50, time.perf_counter() - started))
    for name, make_store, loop_guard in cases:
        store = make_store()
        guard = budget(store)
        started = time.perf_counter()
        latencies = await measure(steps(guard, store, loop_guard=loop_guard), requests, concurrency)
        await guard.flush()
        print(row(name, latencies, base_p50, time.perf_counter() - started))
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--redis-url", help="use this server instead of starting one")
    args = parser.parse_args()
    if args.redis_url:
        uvloop.run(run(args.redis_url, args.requests, args.concurrency))
        return
    with running_redis(Path(tempfile.mkdtemp(prefix="irl-bench-redis-"))) as server:
        uvloop.run(run(server.url, args.requests, args.concurrency))


if __name__ == "__main__":
    main()
