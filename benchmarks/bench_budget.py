"""What budget and loop checks add per request, against a real Redis (target: ≤ 0.5 ms at p50).

One request = what the processor does for it: ``check_async`` on the request (one atomic
Lua reserve; plus the loop guard's counter when enabled), the upstream's time (an idle
wait, not counted), then ``settle`` with the response's usage (the charge, whose store
write runs in the background). The timed phases are the latency the checks add; the
baseline decodes the same request with no checks. On a shared machine wall time includes
waiting for the CPU, so the table also gives this process's CPU per request (background
writes included) and redis-server's command time per request. Runs on uvloop like
``irl serve``; starts its own redis-server unless ``--redis-url`` is given.

    .venv/bin/python -m benchmarks.bench_budget [--requests 3000] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis
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


@dataclass
class Sample:
    latencies: list[float]  # wall seconds per request, checks only
    wall: float
    cpu: float  # this process's CPU seconds for the whole run (background writes included)
    redis_usec: float = 0.0  # redis-server's command time for the run

    def row(self, name: str, base_p50: float) -> str:
        ordered = sorted(self.latencies)
        count = len(ordered)
        p50, p99 = statistics.median(ordered), ordered[int(count * 0.99) - 1]
        return (f"{name:<28} {p50 * 1e3:>8.3f} {p99 * 1e3:>8.3f} {(p50 - base_p50) * 1e3:>10.3f} "
                f"{self.cpu / count * 1e3:>10.3f} {self.redis_usec / count:>10.1f} {count / self.wall:>8.0f}")


def redis_usec(url: str) -> float:
    with redis.Redis.from_url(url) as client:
        return float(sum(stat["usec"] for stat in client.info("commandstats").values()))


async def measure(step: Step, requests: int, concurrency: int) -> Sample:
    for i in range(200):  # warm: connections, scripts, caches
        await step(i)
    latencies: list[float] = []
    queue = iter(range(requests))

    async def worker() -> None:
        for i in queue:
            latencies.append(await step(i))

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Sample(latencies, time.perf_counter() - wall, time.process_time() - cpu)


async def run(url: str, requests: int, concurrency: int) -> None:
    redis_config = StoreConfig.model_validate({"backend": "redis", "url": url, "timeout": "1s"})
    cases: list[tuple[str, Callable[[], CounterStore], bool]] = [
        ("budget, memory store", MemoryStore, False),
        ("budget, redis", lambda: RedisStore(redis_config), False),
        ("budget + loop_guard, redis", lambda: RedisStore(redis_config), True),
    ]
    print(f"{requests} requests, concurrency {concurrency}, redis {url}")
    print(f"{'case':<28} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'CPU ms/req':>10} "
          f"{'redis us':>10} {'req/s':>8}")
    base = await measure(baseline, requests, concurrency)
    base_p50 = statistics.median(base.latencies)
    print(base.row("baseline (no checks)", base_p50))
    for name, make_store, loop_guard in cases:
        store = make_store()
        guard = budget(store)
        before = redis_usec(url)
        sample = await measure(steps(guard, store, loop_guard=loop_guard), requests, concurrency)
        await guard.flush()
        sample.redis_usec = redis_usec(url) - before
        print(sample.row(name, base_p50))
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
