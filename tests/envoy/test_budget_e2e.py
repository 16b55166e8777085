"""Budgets and loop detection through a real Envoy, two IRL workers and one real Redis.

The official SDKs are the clients: an exhausted budget and a runaway agent loop surface as
their normal 429 error (``RateLimitError``), with ``Retry-After``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from tests.conftest import POLICIES
from tests.redis.server import RedisServer, running_redis
from tests.stack import Stack

pytestmark = pytest.mark.envoy

DAY_TOKENS = 3000


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def budget_stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("budget-stack")
    document = yaml.safe_load((POLICIES / "budget.yaml").read_text())
    document["services"]["chat"]["routes"][0]["sentinel"]["request"][0]["budget"]["store"]["url"] = redis_server.url
    source = directory / "budget-source.yaml"
    source.write_text(yaml.safe_dump(document, sort_keys=False))
    running = Stack(directory, Path(), workers=2)  # two replicas behind one Envoy, one Redis
    try:
        yield running.start(source)
    finally:
        running.stop()


@pytest.fixture
def stack(budget_stack: Stack, redis_server: RedisServer) -> Stack:
    with redis_server.client() as client:
        client.flushdb()
    return budget_stack


def openai_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="test", max_retries=0)


def ask(client: openai.OpenAI, text: str, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **extra
    )


def spent_tokens(redis_server: RedisServer) -> int:
    with redis_server.client() as client:
        keys = list(client.scan_iter(match="irl:b:*:tokens"))
        return sum(int(v) for v in client.mget(keys)) if keys else 0


def settled_spend(redis_server: RedisServer, expected: int) -> int:
    """The spend once IRL's charge has landed: it is written after the response is released."""
    deadline = time.monotonic() + 3
    while (spent := spent_tokens(redis_server)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return spent


def test_a_completion_is_charged_its_exact_usage(stack: Stack, redis_server: RedisServer) -> None:
    raw = ask(openai_client(stack), "how much is this?", max_tokens=50)
    completion = raw.parse()
    assert completion.usage is not None
    assert settled_spend(redis_server, completion.usage.total_tokens) == completion.usage.total_tokens
    assert 0 < int(raw.headers["x-irl-budget-remaining-tokens"]) < DAY_TOKENS


def test_max_tokens_is_capped_before_the_upstream_sees_it(stack: Stack) -> None:
    ask(openai_client(stack), "write a novel", max_tokens=100_000)
    received = stack.received()[-1]
    assert '"max_tokens":256' in received["body"].replace(" ", "")


def test_a_streamed_completion_is_charged_its_reported_usage(stack: Stack, redis_server: RedisServer) -> None:
    chunks = openai_client(stack).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream it"}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in chunks if c.usage is not None][-1]
    assert settled_spend(redis_server, usage.total_tokens) == usage.total_tokens  # settled at stream close


def test_parallel_requests_through_two_replicas_are_held_to_one_budget(stack: Stack, redis_server: RedisServer) -> None:
    client = openai_client(stack)

    def one(i: int) -> int:
        """Tokens the provider reported, or 0 when refused."""
        try:
            completion = ask(client, f"request {i} " + "x" * 800, max_tokens=200).parse()
        except openai.RateLimitError:
            return 0
        return int(completion.usage.total_tokens)

    with ThreadPoolExecutor(max_workers=16) as pool:
        used = list(pool.map(one, range(40)))
    assert used.count(0) > 0  # some were refused
    assert settled_spend(redis_server, sum(used)) == sum(used)  # the books hold exactly what was used
    assert sum(used) <= DAY_TOKENS  # and that never overshoots a capped budget


def spend_until_refused(client: openai.OpenAI) -> openai.RateLimitError:
    for i in range(100):
        try:
            ask(client, f"spend {i} " + "y" * 2000, max_tokens=200)
        except openai.RateLimitError as error:
            return error
    raise AssertionError("the budget never ran out")


def test_an_exhausted_budget_is_a_429_the_sdk_raises(stack: Stack) -> None:
    error = spend_until_refused(openai_client(stack))
    assert error.status_code == 429
    assert error.code == "irl_budget"
    assert "is exhausted for the current day" in error.message
    assert 0 < int(error.response.headers["retry-after"]) <= 86_400
    assert error.response.headers["x-irl-rule"] == "budget.exhausted"


def run_agent(client: anthropic.Anthropic, turns: int) -> tuple[int, anthropic.RateLimitError]:
    """An agent that calls the same tool and gets the same answer, turn after turn."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "what is the weather in Oslo?"}]
    for turn in range(1, turns + 1):
        try:
            client.messages.create(model="claude-3-5-haiku", max_tokens=50, messages=messages)  # type: ignore[arg-type]
        except anthropic.RateLimitError as error:
            return turn, error
        messages += [
            {"role": "assistant", "content": [{"type": "tool_use", "id": f"t{turn}", "name": "weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{turn}", "content": "21C"}]},
        ]
    raise AssertionError(f"the loop ran {turns} turns unstopped")


def test_a_scripted_agent_loop_is_stopped(stack: Stack) -> None:
    turn, error = run_agent(anthropic.Anthropic(base_url=stack.url, api_key="test", max_retries=0), 8)
    assert turn == 5  # the first request, then three identical tool states; the next is the fourth repeat
    assert error.status_code == 429
    assert "runaway agent loop" in error.message
    assert int(error.response.headers["retry-after"]) > 0
