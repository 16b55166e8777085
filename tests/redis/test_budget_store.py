"""The counter-store contract, run against the memory store and a real Redis alike."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator

import pytest

from irl_extproc.budgets.memory import MemoryStore
from irl_extproc.budgets.redis_store import RedisStore
from irl_extproc.budgets.store import Adjustment, CounterSpec, CounterStore, StoreConfig, amount, largest_fit

LATER = int(time.time()) + 3600


def redis_store(url: str) -> RedisStore:
    return RedisStore(StoreConfig(backend="redis", url=url, timeout="2s"))


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.unit), pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        chosen: CounterStore = MemoryStore()
    else:
        chosen = redis_store(request.getfixturevalue("redis_url"))
    yield chosen
    await chosen.close()


def spec(key: str, limit: int, base: int = 0, per_unit: float = 1.0, expire_at: int = LATER) -> CounterSpec:
    return CounterSpec(key, limit, base, per_unit, expire_at)


async def test_grants_everything_that_fits(store: CounterStore) -> None:
    got = await store.reserve([spec("t:a", 1000, base=30)], 16, 100)
    assert (got.granted, got.used, got.amounts) == (100, (130,), (130,))


async def test_grants_the_largest_allowance_that_fits(store: CounterStore) -> None:
    await store.reserve([spec("t:a", 100, base=30)], 1, 1)  # 31 used
    got = await store.reserve([spec("t:a", 100, base=30)], 16, 500)
    assert (got.granted, got.used) == (39, (100,))  # 31 + 30 + 39: exactly the limit


async def test_refuses_when_the_minimum_does_not_fit_and_changes_nothing(store: CounterStore) -> None:
    counters = [spec("t:a", 1000, base=10), spec("t:b", 50, base=10)]
    await store.reserve(counters, 30, 30)  # b: 40
    got = await store.reserve(counters, 16, 100)
    assert (got.granted, got.used, got.amounts) == (None, (40, 40), (0, 0))
    again = await store.reserve(counters, 0, 0)  # base alone (10) still fits b exactly
    assert (again.granted, again.used) == (0, (50, 50))


async def test_the_tightest_counter_decides_for_all(store: CounterStore) -> None:
    tokens = spec("t:tokens", 10_000, base=100)
    usd = spec("t:usd", 1000, base=150, per_unit=0.6)  # micro-USD: 850 left for output → 1416 tokens
    got = await store.reserve([tokens, usd], 16, 4096)
    assert got.granted == 1416
    assert got.amounts == (100 + 1416, 150 + 850)
    assert got.used == got.amounts


async def test_float_rounding_never_overshoots(store: CounterStore) -> None:
    # 187 / 1.1 is 170.0 in floating point, but 170 * 1.1 is 187.00000000000003: granting 170
    # would overshoot by one micro-dollar.
    got = await store.reserve([spec("t:usd", 187, per_unit=1.1)], 1, 1000)
    assert (got.granted, got.used) == (169, (186,))
    # 33 / 1.1 is 29.999999999999996, yet 30 units cost exactly 33: grant all of them.
    got = await store.reserve([spec("t:usd2", 33, per_unit=1.1)], 1, 100)
    assert (got.granted, got.used) == (30, (33,))


async def test_adjust_charges_and_refunds(store: CounterStore) -> None:
    await store.reserve([spec("t:a", 1000, base=100)], 0, 0)
    await store.adjust([Adjustment("t:a", 25, LATER), Adjustment("t:gone", -5, LATER), Adjustment("t:new", 7, LATER)])
    await store.adjust([Adjustment("t:a", -50, LATER)])
    assert await store.scan("t:") == {"t:a": 75, "t:new": 7}


async def test_an_expired_counter_counts_as_zero(store: CounterStore) -> None:
    past = int(time.time()) - 1
    await store.reserve([spec("t:old", 100, base=100, expire_at=past)], 0, 0)
    got = await store.reserve([spec("t:old", 100, base=100)], 0, 0)
    assert (got.granted, got.used) == (0, (100,))


async def test_hit_counts_occurrences_in_a_window(store: CounterStore) -> None:
    counts = [await store.hit("l:x", 60) for _ in range(3)]
    assert [c for c, _ in counts] == [1, 2, 3]
    assert all(0 < ttl <= 60 for _, ttl in counts)
    assert (await store.hit("l:y", 60))[0] == 1


async def test_scan_sees_only_its_prefix(store: CounterStore) -> None:
    await store.adjust([Adjustment("a:1", 1, LATER), Adjustment("b:1", 2, LATER)])
    assert await store.scan("a:") == {"a:1": 1}


@pytest.mark.redis
async def test_lua_script_and_python_agree_on_random_workloads(redis_url: str) -> None:
    """The Redis script mirrors store.largest_fit/amount; any drift shows up as a different answer."""
    rng = random.Random(7)
    memory, shared = MemoryStore(), redis_store(redis_url)
    keys = [f"t:{i}" for i in range(4)]
    try:
        for _ in range(300):
            chosen = rng.sample(keys, rng.randint(1, 3))
            prices = [0.0, 0.15, 0.6, 0.7, 1.0, 1.1, 2.5]
            counters = [spec(k, rng.randint(50, 5000), rng.randint(0, 80), rng.choice(prices)) for k in chosen]
            k_min = rng.randint(0, 40)
            k_max = k_min + rng.randint(0, 400)
            expected = await memory.reserve(counters, k_min, k_max)
            assert await shared.reserve(counters, k_min, k_max) == expected
            if rng.random() < 0.3:
                change = [Adjustment(rng.choice(keys), rng.randint(-60, 60), LATER)]
                await memory.adjust(change)
                await shared.adjust(change)
        assert await shared.scan("t:") == await memory.scan("t:")
    finally:
        await shared.close()


@pytest.mark.unit
def test_largest_fit_is_exact_at_the_boundary() -> None:
    for limit in range(200):
        for per in (0.15, 0.3, 0.6, 0.7, 1.0, 1.1, 2.5):
            s = spec("k", limit, base=3, per_unit=per)
            units = largest_fit(s, 0, 10_000)
            assert units < 0 or amount(s, units) <= limit
            assert amount(s, max(units, -1) + 1) > limit  # and not one unit more
