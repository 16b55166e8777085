"""Loop detection: a scripted agent that repeats itself is stopped; progress is not."""

from __future__ import annotations

from typing import Any

import pytest

from irl_extproc.budgets.memory import MemoryStore
from irl_extproc.codecs.anthropic_messages import AnthropicMessages
from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.conversation import Conversation
from irl_extproc.invariants.base import CheckContext
from irl_extproc.invariants.loop_guard import LoopGuard, LoopGuardConfig, prompt_state_digest

pytestmark = pytest.mark.unit


def guard(**config: Any) -> LoopGuard:
    return LoopGuard(LoopGuardConfig.model_validate(config), store=MemoryStore())


def context(tenant: str | None = "acme") -> CheckContext:
    return CheckContext(route_id="agents/chat", tenant=tenant)


def agent_turns(turns: int, result: str = "weather: 21C, sunny", question: str = "plan my day") -> Conversation:
    """An OpenAI agent history after ``turns`` identical tool calls, each answered the same way."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    for i in range(turns):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}
        messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": f"c{i}", "content": result}]
    return OpenAIChat().decode_request({"model": "gpt-4o-mini", "messages": messages})


async def test_a_scripted_agent_loop_is_stopped_on_the_repeat_after_the_limit() -> None:
    loop = guard(max_repeats=3, window="10m")
    outcomes = []
    for turn in range(1, 6):
        ctx = context()
        outcomes.append((await loop.check_async(agent_turns(turn), ctx), ctx.client_headers.get("retry-after")))
    assert [len(f) for f, _ in outcomes] == [0, 0, 0, 1, 1]
    finding, retry_after = outcomes[3][0][0], outcomes[3][1]
    assert (finding.rule, finding.action, finding.status) == ("loop_guard.repeated_prompt", "block", 429)
    assert "sent 4 times within 600s" in finding.message
    assert "weather" not in finding.message
    assert "plan my day" not in finding.message
    assert retry_after is not None
    assert 0 < int(retry_after) <= 600


async def test_an_agent_making_progress_is_not_a_loop() -> None:
    loop = guard(max_repeats=2)
    for step in range(6):
        assert await loop.check_async(agent_turns(step + 1, result=f"page {step}"), context()) == []


async def test_whitespace_does_not_hide_a_repeat_and_tenants_are_apart() -> None:
    loop = guard(max_repeats=1)
    assert await loop.check_async(agent_turns(1, result="a  b\n c"), context("t1")) == []
    assert await loop.check_async(agent_turns(1, result="a  b\n c"), context("t2")) == []
    assert len(await loop.check_async(agent_turns(2, result=" a b c "), context("t1"))) == 1


async def test_anthropic_tool_loops_with_argument_less_calls_are_seen() -> None:
    def history(turns: int) -> Conversation:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "tidy the inbox"}]
        for i in range(turns):
            messages += [
                {"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "list", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "0 mails"}]},
            ]
        return AnthropicMessages().decode_request({"model": "claude-3-5-haiku", "max_tokens": 9, "messages": messages})

    assert prompt_state_digest(history(1)) == prompt_state_digest(history(7))
    loop = guard(max_repeats=2)
    found = [await loop.check_async(history(turn), context()) for turn in (1, 2, 3)]
    assert [len(f) for f in found] == [0, 0, 1]


async def test_monitor_only_records_and_empty_prompts_are_ignored() -> None:
    loop = guard(max_repeats=1, action="monitor")
    await loop.check_async(agent_turns(1), context())
    assert [f.action for f in await loop.check_async(agent_turns(2), context())] == ["monitor"]
    system_only = OpenAIChat().decode_request({"model": "m", "messages": [{"role": "system", "content": "hi"}]})
    assert prompt_state_digest(system_only) is None
    assert loop.check(agent_turns(1), context()) == []
