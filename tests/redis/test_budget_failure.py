"""Redis dies or stalls mid-load: the configured fail mode holds and nothing hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from irl_extproc.budgets.metrics import BudgetMetrics
from irl_extproc.budgets.redis_store import RedisStore
from irl_extproc.invariants.base import CheckContext, Finding
from irl_extproc.invariants.budget import Budget, BudgetConfig
from irl_extproc.invariants.loop_guard import LoopGuard, LoopGuardConfig
from tests.budget_helpers import chat, context, usage
from tests.redis.server import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT = 0.25  # generous for a shared 2-core machine; the point is that waits are bounded


def budget(url: str, on_error: str, metrics: BudgetMetrics | None = None) -> Budget:
    config = BudgetConfig.model_validate({
        "limits": [{"window": "day", "tokens": 10_000_000}],
        "store": {"backend": "redis", "url": url, "timeout": f"{TIMEOUT * 1000:.0f}ms", "cooldown": "200ms",
                  "on_error": on_error},
    })
    return Budget(config, store=RedisStore(config.store), metrics=metrics)


@dataclass
class Result:
    findings: list[Finding]
    headers: dict[str, str]
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Run:
    results: list[Result]
    disrupted_at: float

    @property
    def before(self) -> list[Result]:
        return [r for r in self.results if r.ended < self.disrupted_at]

    @property
    def after(self) -> list[Result]:
        return [r for r in self.results if r.started > self.disrupted_at]


async def drive(guard: Budget, disrupt: Callable[[], None], *, workers: int = 8, each: int = 30) -> Run:
    """Requests from several workers; ``disrupt`` runs once a third of them are done."""
    results: list[Result] = []
    run = Run(results, float("inf"))
    await guard.check_async(chat(max_tokens=1), context())  # a warm pool, scripts loaded

    async def worker() -> None:
        for _ in range(each):
            ctx = context()
            started = time.perf_counter()
            findings = await guard.check_async(chat(max_tokens=100), ctx)
            await guard.settle(usage(100, 50), ctx, completed=True)
            results.append(Result(findings, ctx.client_headers, started, time.perf_counter()))
            if len(results) == workers * each // 3:
                disrupt()
                run.disrupted_at = time.perf_counter()
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), timeout=30)
    return run


async def test_fail_open_when_redis_is_killed_mid_load(own_redis: RedisServer) -> None:
    metrics = BudgetMetrics()
    guard = budget(own_redis.url, "fail_open", metrics)
    run = await drive(guard, own_redis.kill)
    assert len(run.before) >= 70
    assert all(r.findings == [] for r in run.before)
    assert len(run.after) > 100
    unavailable = [("budget.store_unavailable", "monitor")]
    assert all([(f.rule, f.action) for f in r.findings] == unavailable for r in run.after)  # flagged, never refused
    assert all([(f.rule, f.action) for f in r.findings] in ([], unavailable) for r in run.results)
    assert max(r.seconds for r in run.results) < 2.0  # nothing hung on the dead server
    errors = dict(metrics.store_errors.snapshot())
    assert errors[("budget", "redis", "fail_open")] == sum(1 for r in run.results if r.findings)
    await guard.flush()
    await guard.store.close()


async def test_fail_closed_when_redis_is_killed_mid_load(own_redis: RedisServer) -> None:
    guard = budget(own_redis.url, "fail_closed")
    run = await drive(guard, own_redis.kill)
    assert all(r.findings == [] for r in run.before)
    assert len(run.after) > 100
    for r in run.after:
        assert [(f.rule, f.action, f.status) for f in r.findings] == [("budget.store_unavailable", "block", 503)]
        assert r.headers["retry-after"] == "1"
    assert max(r.seconds for r in run.results) < 2.0
    await guard.flush()
    await guard.store.close()


async def test_a_stalled_redis_times_out_then_recovers(own_redis: RedisServer) -> None:
    guard = budget(own_redis.url, "fail_closed")
    ctx = context()
    assert await guard.check_async(chat(max_tokens=100), ctx) == []
    own_redis.freeze()
    try:
        started = time.perf_counter()
        stalled = await guard.check_async(chat(max_tokens=100), context())
        assert time.perf_counter() - started < TIMEOUT + 1.0
        assert [f.status for f in stalled] == [503]
        started = time.perf_counter()
        assert [f.status for f in await guard.check_async(chat(), context())] == [503]  # cooldown: no wait at all
        assert time.perf_counter() - started < TIMEOUT
    finally:
        own_redis.thaw()
    await asyncio.sleep(0.25)  # past the 200ms cooldown
    assert await guard.check_async(chat(max_tokens=100), context()) == []
    await guard.settle(usage(100, 10), ctx, completed=True)
    await guard.flush()
    await guard.store.close()


async def test_a_restarted_redis_is_used_again(
    own_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    guard = budget(own_redis.url, "fail_open")
    assert await guard.check_async(chat(max_tokens=100), context()) == []
    own_redis.kill()
    assert [f.action for f in await guard.check_async(chat(), context())] == ["monitor"]
    revived = RedisServer(tmp_path_factory.mktemp("revived"), port=own_redis.port)
    try:
        await asyncio.sleep(0.25)  # past the cooldown
        assert await guard.check_async(chat(max_tokens=100), context()) == []  # pooled connections reconnect
        assert await guard.store.scan("irl:b:")  # the new server holds the new reservation
    finally:
        await guard.flush()
        await guard.store.close()
        revived.stop()


async def test_loop_guard_follows_its_fail_mode(own_redis: RedisServer) -> None:
    config = LoopGuardConfig.model_validate(
        {"max_repeats": 2, "store": {"backend": "redis", "url": own_redis.url, "timeout": "50ms",
                                     "on_error": "fail_closed"}}
    )
    loop = LoopGuard(config, store=RedisStore(config.store))
    assert await loop.check_async(chat(), CheckContext("a/b", tenant="t")) == []
    own_redis.kill()
    findings = await loop.check_async(chat(), CheckContext("a/b", tenant="t"))
    assert [(f.rule, f.status) for f in findings] == [("loop_guard.store_unavailable", 503)]
    await loop.store.close()
