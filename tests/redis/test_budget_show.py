"""`irl budget show` reads the shared counters back as spend per pool, principal and window."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from irl_extproc.budgets.redis_store import RedisStore
from irl_extproc.cli import main
from irl_extproc.invariants.budget import Budget, BudgetConfig
from irl_extproc.policy.load import load_policy
from irl_extproc.policy.resolve import resolve_routes
from tests.budget_helpers import chat, context, one_route_policy, usage

pytestmark = pytest.mark.redis

BUDGET = """\
            - budget:
                limits: [{window: day, tokens: 10000}, {window: month, usd: 2}]
                prices: {gpt-4o-mini: {input: 0.15, output: 0.6}}
                tenants: {vip: {limits: [{window: day, tokens: 90000}]}}
"""


def policy(tmp_path: Path, url: str | None) -> Path:
    path = tmp_path / "policy.yaml"
    store = f"                store: {{backend: redis, url: '{url}'}}\n" if url else ""
    path.write_text(one_route_policy(BUDGET + store))
    return path


async def spend(config: BudgetConfig, tenant: str, prompt: int, output: int) -> None:
    store = RedisStore(config.store)
    guard = Budget(config, store=store)
    ctx = context(tenant)
    assert await guard.check_async(chat(max_tokens=output), ctx) == []
    await guard.settle(usage(prompt, output), ctx, completed=True)
    await guard.flush()
    await store.close()


def test_show_reports_spend_limits_and_what_remains(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = policy(tmp_path, redis_url)
    (route,) = resolve_routes(load_policy(path).document)
    assert route.sentinel is not None
    config = route.sentinel.request[0]
    assert isinstance(config, BudgetConfig)
    asyncio.run(spend(config, "acme", 1000, 200))
    asyncio.run(spend(config, "vip", 3000, 100))

    assert main(["budget", "show", "--policy", str(path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = {(r["principal"], r["window"], r["metric"]): (r["used"], r["limit"], r["remaining"]) for r in rows}
    assert summary == {
        ("acme", "day", "tokens"): ("1200", "10000", "8800"),
        ("acme", "month", "usd"): ("0.000270", "2.000000", "1.999730"),
        ("vip", "day", "tokens"): ("3100", "90000", "86900"),
    }
    assert {r["pool"] for r in rows} == {"chat"}

    assert main(["budget", "show", "--policy", str(path), "--tenant", "vip"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["POOL", "PER", "PRINCIPAL", "WINDOW", "START", "METRIC", "MODEL", "USED", "LIMIT",
                                "REMAINING"]
    assert len(table) == 2
    assert table[1].split()[-3:] == ["3100", "90000", "86900"]


def test_show_says_why_a_memory_store_cannot_be_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["budget", "show", "--policy", str(policy(tmp_path, None))]) == 0
    assert "a memory store lives inside each `irl serve` process" in capsys.readouterr().err


def test_show_fails_clearly_when_redis_is_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from irl_extproc.processes import free_ports

    (port,) = free_ports(1)
    assert main(["budget", "show", "--policy", str(policy(tmp_path, f"redis://127.0.0.1:{port}/0"))]) == 1
    assert "redis store unavailable" in capsys.readouterr().err
