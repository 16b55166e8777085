"""The budget invariant on the in-memory store: reserve, cap, refuse, charge, release, model rules."""

from __future__ import annotations

from typing import Any

import pytest

from irl_extproc.budgets.memory import MemoryStore
from irl_extproc.budgets.metrics import BudgetMetrics
from irl_extproc.codecs.anthropic_messages import AnthropicMessages
from irl_extproc.conversation import Conversation, Usage
from irl_extproc.invariants.base import Finding, apply_edits
from irl_extproc.invariants.budget import Budget, BudgetConfig, charges
from tests.budget_helpers import chat, completion, context

pytestmark = pytest.mark.unit

PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.6}, "gpt-4o*": {"input": 2.5, "output": 10.0}}


def budget(metrics: BudgetMetrics | None = None, **config: Any) -> Budget:
    return Budget(BudgetConfig.model_validate(config), store=MemoryStore(), metrics=metrics)


def rules(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


async def spent(guard: Budget) -> dict[str, int]:
    """The guard's counters by metric, once its background charge writes have landed."""
    await guard.flush()
    found = await guard.store.scan("")
    return {k.rsplit(":", 3)[-1] if k.endswith(("tokens", "usd")) else k: v for k, v in found.items()}


async def test_reserves_then_charges_the_exact_usage() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 10_000}])
    ctx = context()
    assert await guard.check_async(chat(max_tokens=200), ctx) == []
    assert await spent(guard) == {"tokens": 100 + 200}
    assert ctx.client_headers["x-irl-budget-remaining-tokens"] == str(10_000 - 300)
    assert 0 < int(ctx.client_headers["x-irl-budget-reset-tokens"]) <= 86_400
    await guard.settle(completion(usage={"prompt_tokens": 90, "completion_tokens": 35}), ctx, completed=True)
    assert await spent(guard) == {"tokens": 125}
    assert charges(ctx) == [{"model": "gpt-4o-mini", "input_tokens": 90, "output_tokens": 35, "estimated": False}]
    await guard.settle(None, ctx, completed=False)  # the stream's clean-up call changes nothing now
    assert await spent(guard) == {"tokens": 125}


async def test_caps_max_tokens_to_what_the_budget_still_covers() -> None:
    guard = budget(limits=[{"window": "minute", "tokens": 600}])
    conversation = chat(max_tokens=5000)
    findings = await guard.check_async(conversation, context())
    assert [(f.rule, f.action, f.edit) for f in findings] == [("budget.max_tokens", "redact", (("max_tokens",), 500))]
    assert apply_edits(conversation, findings) == 1
    assert conversation.body["max_tokens"] == 500
    assert await spent(guard) == {"tokens": 600}


async def test_a_request_without_max_tokens_gets_its_reserved_allowance_written() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 1_000_000}], default_max_tokens=1000)
    findings = await guard.check_async(chat(), context())
    assert [f.edit for f in findings] == [(("max_tokens",), 1000)]


async def test_the_field_written_is_the_one_the_api_uses() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 300}])
    openai = await guard.check_async(chat(max_completion_tokens=4000), context("a"))
    anthropic = await guard.check_async(
        AnthropicMessages().decode_request(
            {"model": "claude-3-5-haiku", "max_tokens": 4000, "messages": [{"role": "user", "content": "x" * 400}]}
        ),
        context("b"),
    )
    assert [f.edit for f in openai + anthropic] == [(("max_completion_tokens",), 200), (("max_tokens",), 200)]


async def test_exhausted_budget_is_refused_with_429_and_retry_after() -> None:
    guard = budget(limits=[{"window": "hour", "tokens": 1000}], min_output_tokens=50)
    await guard.check_async(chat(max_tokens=850), context())  # 950 reserved
    ctx = context()
    findings = await guard.check_async(chat(max_tokens=850), ctx)
    assert [(f.rule, f.action, f.status) for f in findings] == [("budget.exhausted", "block", 429)]
    assert "tokens budget for this tenant is exhausted for the current hour" in findings[0].message
    assert 0 < int(ctx.client_headers["retry-after"]) <= 3600
    assert ctx.client_headers["x-irl-budget-remaining-tokens"] == "50"
    assert await spent(guard) == {"tokens": 950}  # the refusal reserved nothing
    await guard.settle(None, ctx, completed=False)
    assert await spent(guard) == {"tokens": 950}


async def test_without_capping_the_whole_request_must_fit() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 1000}], cap_max_tokens=False)
    assert rules(await guard.check_async(chat(max_tokens=901), context())) == ["budget.exhausted"]
    assert await guard.check_async(chat(max_tokens=900), context()) == []


async def test_released_when_the_exchange_never_completes() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 10_000}])
    ctx = context()
    await guard.check_async(chat(max_tokens=100), ctx)
    await guard.settle(None, ctx, completed=False)
    assert await spent(guard) == {"tokens": 0}
    assert charges(ctx) == []


async def test_an_unread_completed_response_is_charged_its_reservation_as_an_estimate() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 10_000}])
    ctx = context()
    await guard.check_async(chat(max_tokens=100), ctx)
    await guard.settle(None, ctx, completed=True)
    assert await spent(guard) == {"tokens": 200}
    assert charges(ctx)[0]["estimated"] is True


async def test_missing_usage_falls_back_to_a_marked_estimate() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 10_000}])
    ctx = context()
    await guard.check_async(chat(max_tokens=500), ctx)
    await guard.settle(completion("y" * 80), ctx, completed=True)
    assert charges(ctx) == [{"model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 20, "estimated": True}]
    assert await spent(guard) == {"tokens": 120}


async def test_streamed_usage_marked_estimated_stays_estimated() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 10_000}])
    ctx = context()
    await guard.check_async(chat(max_tokens=500, stream=True), ctx)
    streamed = Conversation("response", "openai-chat", {}, usage=Usage(100, 42, estimated=True))
    await guard.settle(streamed, ctx, completed=True)
    assert charges(ctx)[0] == {"model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 42, "estimated": True}


async def test_spend_limits_use_the_price_table() -> None:
    guard = budget(limits=[{"window": "month", "usd": 0.001}], prices=PRICES)
    ctx = context()
    findings = await guard.check_async(chat(max_tokens=4000), ctx)
    # $0.001 = 1000 µ$: the prompt costs 100 * 0.15 = 15, leaving 985 / 0.6 = 1641 output tokens.
    assert [f.edit for f in findings] == [(("max_tokens",), 1641)]
    assert ctx.client_headers["x-irl-budget-remaining-usd"] == "0.000000"
    await guard.settle(completion(usage={"prompt_tokens": 1000, "completion_tokens": 500}), ctx, completed=True)
    assert charges(ctx)[0]["usd"] == "0.000450"  # 1000 * 0.15 + 500 * 0.6 µ$
    assert await spent(guard) == {"usd": 450}


async def test_prefix_prices_and_an_unpriced_model() -> None:
    guard = budget(limits=[{"window": "day", "usd": 5}], prices=PRICES)
    ctx = context()
    await guard.check_async(chat(model="gpt-4o-2024-08-06", max_tokens=10), ctx)
    await guard.settle(completion(usage={"prompt_tokens": 1000, "completion_tokens": 100}), ctx, completed=True)
    assert charges(ctx)[0]["usd"] == "0.003500"
    findings = await guard.check_async(chat(model="llama-3"), context())
    assert [(f.rule, f.action) for f in findings] == [("budget.unpriced_model", "block")]
    assert "add it to prices or set default_price" in findings[0].message


async def test_per_model_limits_count_only_that_model() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 110, "model": "gpt-4o"}])
    assert rules(await guard.check_async(chat(model="gpt-4o", max_tokens=100), context())) == ["budget.exhausted"]
    assert await guard.check_async(chat(model="gpt-4o-mini", max_tokens=100), context()) == []
    assert await spent(guard) == {}  # the mini request touched no counter


async def test_budgets_are_per_tenant_and_anonymous_requests_share_one() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 300}])
    assert await guard.check_async(chat(max_tokens=200), context("a")) == []
    assert rules(await guard.check_async(chat(max_tokens=200), context("a"))) == ["budget.exhausted"]
    assert await guard.check_async(chat(max_tokens=200), context("b")) == []
    assert await guard.check_async(chat(max_tokens=200), context(None)) == []
    assert rules(await guard.check_async(chat(max_tokens=200), context(None))) == ["budget.exhausted"]


async def test_per_api_key_budgets_read_the_trusted_identity() -> None:
    guard = budget(per="api_key", limits=[{"window": "day", "tokens": 300}])
    assert await guard.check_async(chat(max_tokens=200), context("acme", api_key="k1")) == []
    assert rules(await guard.check_async(chat(max_tokens=200), context("acme", api_key="k1"))) == ["budget.exhausted"]
    assert await guard.check_async(chat(max_tokens=200), context("acme", api_key="k2")) == []


async def test_tenant_overrides_replace_limits_and_add_model_rules() -> None:
    guard = budget(
        limits=[{"window": "day", "tokens": 300}],
        allowed_models=["gpt-4o*"],
        tenants={"big": {"limits": [{"window": "day", "tokens": 100_000}], "denied_models": ["gpt-4o"]}},
    )
    assert await guard.check_async(chat(max_tokens=5000), context("big")) == []
    assert rules(await guard.check_async(chat(model="gpt-4o"), context("big"))) == ["budget.model_denied"]
    assert rules(await guard.check_async(chat(model="o1"), context("small"))) == ["budget.model_not_allowed"]


async def test_rewrite_to_a_cheaper_model_always_for_some_tenants() -> None:
    guard = budget(rewrites=[{"from": "gpt-4o", "to": "gpt-4o-mini", "tenants": ["free"]}], prices=PRICES)
    conversation = chat(model="gpt-4o")
    findings = await guard.check_async(conversation, context("free"))
    assert [(f.rule, f.action, f.edit) for f in findings] == [
        ("budget.rewrite_model", "redact", (("model",), "gpt-4o-mini"))
    ]
    apply_edits(conversation, findings)
    assert conversation.body["model"] == "gpt-4o-mini"
    assert await guard.check_async(chat(model="gpt-4o"), context("paid")) == []


async def test_rewrite_when_the_requested_model_is_exhausted() -> None:
    guard = budget(
        limits=[{"window": "day", "tokens": 110, "model": "gpt-4o"}],
        rewrites=[{"from": "gpt-4o", "to": "gpt-4o-mini", "when": "exhausted"}],
    )
    ctx = context()
    findings = await guard.check_async(chat(model="gpt-4o", max_tokens=100), ctx)
    assert rules(findings) == ["budget.rewrite_model"]
    assert "retry-after" not in ctx.client_headers
    await guard.settle(completion(usage={"prompt_tokens": 1, "completion_tokens": 1}), ctx, completed=True)
    assert charges(ctx)[0]["model"] == "gpt-4o-mini"


async def test_monitor_never_blocks_or_edits_but_keeps_the_books() -> None:
    guard = budget(action="monitor", limits=[{"window": "day", "tokens": 250}], max_tokens=50)
    await guard.check_async(chat(max_tokens=50), context())
    findings = await guard.check_async(chat(max_tokens=50), context())
    assert [(f.rule, f.action) for f in findings] == [("budget.exhausted", "monitor")]
    assert await spent(guard) == {"tokens": 300}


async def test_max_tokens_ceiling_offline_and_online() -> None:
    guard = budget(max_tokens=256, tenants={"t": {"max_tokens": 64}})
    offline = guard.check(chat(max_tokens=1000), context())
    assert [(f.rule, f.edit) for f in offline] == [("budget.max_tokens", (("max_tokens",), 256))]
    assert guard.check(chat(max_tokens=100), context()) == []
    online = await guard.check_async(chat(), context("t"))
    assert [f.edit for f in online] == [(("max_tokens",), 64)]


async def test_stream_usage_is_requested_when_configured() -> None:
    guard = budget(stream_usage=True)
    findings = await guard.check_async(chat(stream=True), context())
    assert [f.edit for f in findings] == [(("stream_options", "include_usage"), True)]
    conversation = chat(stream=True, stream_options={"include_usage": True})
    assert await guard.check_async(conversation, context()) == []


async def test_metrics_count_spend_and_refusals() -> None:
    metrics = BudgetMetrics()
    guard = budget(metrics=metrics, limits=[{"window": "day", "tokens": 200}], prices=PRICES)
    ctx = context()
    await guard.check_async(chat(max_tokens=50), ctx)
    await guard.settle(completion(usage={"prompt_tokens": 1000, "completion_tokens": 1000}), ctx, completed=True)
    await guard.check_async(chat(max_tokens=50), context())
    assert metrics.spend.snapshot() == [(("chat", "acme", "gpt-4o-mini", "false"), 750)]
    assert sorted(metrics.tokens.snapshot()) == [
        (("chat", "acme", "gpt-4o-mini", "input", "false"), 1000),
        (("chat", "acme", "gpt-4o-mini", "output", "false"), 1000),
    ]
    assert metrics.refusals.snapshot() == [(("chat", "acme", "budget.exhausted"), 1)]


async def test_responses_are_not_checked_on_the_response_side() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 1}])
    assert await guard.check_async(completion(), context()) == []
    assert guard.check(completion(), context()) == []


async def test_a_stream_without_usage_or_kept_text_is_charged_its_reservation() -> None:
    guard = budget(limits=[{"window": "day", "tokens": 10_000}])
    ctx = context()
    await guard.check_async(chat(max_tokens=300, stream=True), ctx)
    await guard.settle(Conversation("response", "openai-chat", {}, stream=True), ctx, completed=True)
    assert charges(ctx) == [{"model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 300, "estimated": True}]


def test_only_redact_findings_edit_the_body() -> None:
    conversation = chat(max_tokens=10)
    monitor = Finding("budget", "budget.max_tokens", "monitor", "would cap", edit=(("max_tokens",), 5))
    assert apply_edits(conversation, [monitor]) == 0
    assert conversation.body["max_tokens"] == 10
