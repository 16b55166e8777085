"""Two IRL replicas sharing one Redis enforce one budget under many parallel requests.

Each replica is a Budget invariant with its own RedisStore (its own connection pool), as two
`irl serve` processes would have. Requests run the processor's sequence: check_async, the
upstream call (an await that keeps the request in flight), settle with the usage.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from irl_extproc.budgets.redis_store import RedisStore
from irl_extproc.invariants.base import apply_edits
from irl_extproc.invariants.budget import Budget, BudgetConfig
from tests.budget_helpers import chat, context, usage

pytestmark = pytest.mark.redis

TOKENS_PER_DAY = 30_000
USD_PER_DAY = 0.012  # 12,000 µ$
PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}


def config(url: str) -> BudgetConfig:
    return BudgetConfig.model_validate({
        "limits": [{"window": "day", "tokens": TOKENS_PER_DAY}, {"window": "day", "usd": USD_PER_DAY}],
        "prices": PRICES,
        "min_output_tokens": 16,
        "store": {"backend": "redis", "url": url, "timeout": "5s"},
    })


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[list[Budget]]:
    shared = config(redis_url)
    stores = [RedisStore(shared.store), RedisStore(shared.store)]
    yield [Budget(shared, store=store) for store in stores]
    for store in stores:
        await store.close()


@dataclass
class Load:
    """What the run admitted, charged and refused, and how many requests overlapped."""

    in_flight: int = 0
    most_in_flight: int = 0
    admitted: int = 0
    refused: int = 0
    charged_tokens: int = 0
    charged_usd: int = 0
    overrun: list[int] = field(default_factory=list)  # tokens each request used beyond its reservation


async def run(replicas: list[Budget], requests: int, *, extra_prompt_tokens: int, seed: int) -> Load:
    rng, load = random.Random(seed), Load()

    async def one(i: int) -> None:
        replica, ctx = replicas[i % len(replicas)], context("acme")
        conversation = chat(max_tokens=rng.randint(50, 400))
        findings = await replica.check_async(conversation, ctx)
        if any(f.action == "block" for f in findings):
            assert [f.rule for f in findings] == ["budget.exhausted"]
            load.refused += 1
            return
        apply_edits(conversation, findings)
        granted: Any = conversation.body["max_tokens"]
        load.admitted += 1
        load.in_flight += 1
        load.most_in_flight = max(load.most_in_flight, load.in_flight)
        await asyncio.sleep(rng.uniform(0, 0.02))  # the upstream call: other requests reserve meanwhile
        prompt, output = 100 + extra_prompt_tokens, rng.randint(granted // 2, granted)  # the model honours the cap
        await replica.settle(usage(prompt, output), ctx, completed=True)
        load.in_flight -= 1
        load.charged_tokens += prompt + output
        load.charged_usd += round(prompt * 0.15 + output * 0.6)
        load.overrun.append(extra_prompt_tokens)

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(requests))), timeout=60)
    return load


async def counters(replicas: list[Budget]) -> dict[str, int]:
    for replica in replicas:
        await replica.flush()
    found = await replicas[0].store.scan("irl:b:")
    return {key.rsplit(":", 1)[1]: value for key, value in found.items()}


async def test_exact_usage_never_exceeds_the_shared_budget(replicas: list[Budget]) -> None:
    load = await run(replicas, 400, extra_prompt_tokens=0, seed=1)
    spent = await counters(replicas)
    assert load.refused > 0
    assert load.admitted > 20
    assert load.most_in_flight > 10  # the requests really overlapped
    assert spent == {"tokens": load.charged_tokens, "usd": load.charged_usd}  # books are exact
    assert spent["tokens"] <= TOKENS_PER_DAY
    assert spent["usd"] <= USD_PER_DAY * 1_000_000


async def test_overrun_is_bounded_by_the_requests_in_flight(replicas: list[Budget]) -> None:
    # The prompt estimate is 40 tokens short on every request: only requests admitted while
    # others were still in flight can add to the overshoot.
    load = await run(replicas, 400, extra_prompt_tokens=40, seed=2)
    spent = await counters(replicas)
    assert load.refused > 0
    assert spent["tokens"] == load.charged_tokens
    assert spent["tokens"] <= TOKENS_PER_DAY + load.most_in_flight * 40
    assert spent["usd"] <= USD_PER_DAY * 1_000_000 + load.most_in_flight * round(40 * 0.15)
