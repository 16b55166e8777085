"""Streamed responses through a real Envoy (full duplex) and IRL: no cross-chunk bypass.

The demo upstream cuts its reply at chosen offsets (``x-demo-split``), so a sensitive value
arrives in 2-5 pieces, each its own SSE event and TCP write. Clients are raw HTTP (to see
every byte) and the official SDKs (to see how a block or fault surfaces).
"""

from __future__ import annotations

import json
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from irl_extproc.render.envoy_clusters import EXTPROC_CLUSTER
from tests.conftest import POLICIES
from tests.stack import Stack
from tests.unit.streaming_helpers import client_text, events

pytestmark = pytest.mark.envoy

BODIES: dict[str, dict[str, Any]] = {
    "openai-chat": {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    "openai-responses": {"model": "gpt-4o-mini", "stream": True, "input": "hi"},
    "anthropic-messages": {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    },
}
PATHS = {
    "openai-chat": "/v1/chat/completions",
    "openai-responses": "/v1/responses",
    "anthropic-messages": "/v1/messages",
}
VALUES = {  # value → what the client must get instead
    "jane.doe@example.com": "[EMAIL_1]",
    "4111 1111 1111 1111": "[CREDIT_CARD_1]",
    "GB82 WEST 1234 5698 7654 32": "[IBAN_1]",
    "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5": "[GITHUB_TOKEN_1]",
}
SPLIT = {"x-demo-split": "8,12,20"}
WORDS = ["alpha", "beta", "gamma", "delta", "streams", "arrive", "in", "pieces", "over", "time"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("streaming"), Path())
    try:
        yield running.start(POLICIES / "streaming.yaml")
    finally:
        running.stop()


def steer(reply: str, **extra: str) -> dict[str, str]:
    return {"x-demo-reply": urllib.parse.quote(reply), **extra}


def stream_raw(
    stack: Stack, api_format: str, headers: dict[str, str], body: dict[str, Any] | None = None
) -> tuple[int, bytes]:
    with httpx.stream(
        "POST", stack.url + PATHS[api_format], json=body or BODIES[api_format], headers=headers, timeout=10
    ) as reply:
        return reply.status_code, b"".join(reply.iter_raw())


def asking(api_format: str, user_text: str) -> dict[str, Any]:
    """The streamed request body of ``api_format`` with ``user_text`` as the user's message."""
    body = json.loads(json.dumps(BODIES[api_format]))
    if api_format == "openai-responses":
        body["input"] = user_text
    else:
        body["messages"][0]["content"] = user_text
    return body


def split_inside(rng: random.Random, text: str, start: int, length: int) -> str:
    """x-demo-split: 1-4 cuts inside text[start:start+length] (2-5 pieces) and up to 6 elsewhere."""
    inside = [start + c for c in rng.sample(range(1, length), rng.randint(1, min(4, length - 1)))]
    elsewhere = rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 6)))
    return ",".join(map(str, sorted(set(inside + elsewhere))))


def around(rng: random.Random, value: str) -> tuple[str, int]:
    """``value`` between random words (often none before it: right at the start of the stream)."""
    before = " ".join(rng.choices(WORDS, k=rng.choice([0, 0, rng.randint(1, 12)])))
    after = " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))
    return (f"{before} {value} {after}" if before else f"{value} {after}"), len(before) + bool(before)


@pytest.mark.parametrize("api_format", list(PATHS))
def test_property_no_value_split_across_chunks_reaches_the_client(stack: Stack, api_format: str) -> None:
    rng = random.Random(api_format)
    for case in range(6):
        value = rng.choice(list(VALUES))
        text, start = around(rng, value)
        split = split_inside(rng, text, start, len(value))
        status, body = stream_raw(stack, api_format, steer(text, **{"x-demo-split": split}))
        assert status == 200
        assert value.encode() not in body, (case, split)
        assert client_text(api_format, body) == text.replace(value, VALUES[value]), (case, split)


@pytest.mark.parametrize("api_format", list(PATHS))
def test_property_a_denied_value_split_anywhere_is_blocked_before_any_of_it_shows(
    stack: Stack, api_format: str
) -> None:
    rng = random.Random("deny " + api_format)
    for case in range(3):
        value = "CANARY-" + "".join(rng.choices("0123456789abcdef", k=12))
        text, start = around(rng, value)
        split = split_inside(rng, text, start, len(value))
        status, body = stream_raw(stack, api_format, steer(text, **{"x-demo-split": split}))
        assert status == 200
        assert text[:start].startswith(client_text(api_format, body)), (case, split)  # none of the value
        assert "deny_patterns" in events(body)[-1][1], (case, split)


@pytest.mark.parametrize("api_format", list(PATHS))
def test_property_echoed_placeholders_split_anywhere_are_restored(stack: Stack, api_format: str) -> None:
    rng = random.Random("restore " + api_format)
    for case in range(3):
        user, _ = around(rng, "jane.doe@example.com")
        echoed = "echo: " + user.replace("jane.doe@example.com", "[EMAIL_1]")  # what the model sees and says
        split = split_inside(rng, echoed, echoed.index("[EMAIL_1]"), len("[EMAIL_1]"))
        status, body = stream_raw(stack, api_format, {"x-demo-split": split}, asking(api_format, user))
        assert status == 200
        assert client_text(api_format, body) == "echo: " + user, (case, split)


def test_a_response_only_route_skips_the_request_round_trip_and_still_inspects(stack: Stack) -> None:
    headers = {"host": "response-only.test", "accept-encoding": "gzip, br"}
    status, body = stream_raw(stack, "openai-chat", {**headers, **steer("mail jane.doe@example.com", **SPLIT)})
    assert status == 200
    assert client_text("openai-chat", body) == "mail [EMAIL_1]"
    assert "accept-encoding" not in stack.received()[-1]["headers"]  # removed by the route itself


def test_openai_sdk_streams_redacted_text(stack: Stack) -> None:
    client = openai.OpenAI(
        base_url=f"{stack.url}/v1",
        api_key="test",
        max_retries=0,
        default_headers=steer("write to jane.doe@example.com now", **{"x-demo-chunks": "9"}),
    )
    chunks = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "write to [EMAIL_1] now"


def stream_with_sdk(stack: Stack, api_format: str, headers: dict[str, str], seen: list[str]) -> None:
    """Iterate a streamed completion with the official SDK, keeping the text deltas it yields."""
    if api_format == "anthropic-messages":
        aclient = anthropic.Anthropic(base_url=stack.url, api_key="t", max_retries=0, default_headers=headers)
        messages: Any = [{"role": "user", "content": "x"}]
        for event in aclient.messages.create(model="m", max_tokens=9, messages=messages, stream=True):
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                seen.append(event.delta.text)
        return
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="t", max_retries=0, default_headers=headers)
    if api_format == "openai-chat":
        for chunk in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            seen.append(chunk.choices[0].delta.content or "")
        return
    for response_event in client.responses.create(model="m", input="x", stream=True):
        if response_event.type == "response.output_text.delta":
            seen.append(response_event.delta)


@pytest.mark.parametrize("api_format", list(PATHS))
def test_sdks_raise_on_a_mid_stream_block(stack: Stack, api_format: str) -> None:
    reply = "Here it is: " + "filler " * 30 + "CANARY-0123456789ab and then more text " * 3
    headers = steer(reply, **{"x-demo-chunks": "25", "x-demo-seed": "4"})
    seen: list[str] = []
    error: type[Exception] = anthropic.APIError if api_format == "anthropic-messages" else openai.APIError
    with pytest.raises(error) as info:
        stream_with_sdk(stack, api_format, headers, seen)
    assert "deny_patterns" in str(info.value)
    assert reply.startswith("".join(seen))
    assert "CANARY" not in "".join(seen)


def test_echoed_placeholders_are_restored_even_split_across_events(stack: Stack) -> None:
    client = anthropic.Anthropic(
        base_url=stack.url, api_key="t", max_retries=0, default_headers={"x-demo-split": "12,15,18,21"}
    )
    with client.messages.stream(
        model="m", max_tokens=9, messages=[{"role": "user", "content": "mail jane.doe@example.com"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "echo: mail jane.doe@example.com"  # the model saw and echoed [EMAIL_1]
    sent = json.loads(stack.received()[-1]["body"])
    assert sent["messages"][0]["content"] == "mail [EMAIL_1]"


@pytest.mark.parametrize(("reply", "valid"), [('{"city": "Paris"}', True), ('{"town": "Paris"}', False)])
def test_whole_response_schema_buffered_until_valid(stack: Stack, reply: str, valid: bool) -> None:
    headers = {"host": "structured.test", **steer(reply, **{"x-demo-chunks": "5"})}
    status, body = stream_raw(stack, "openai-chat", headers)
    assert status == 200
    assert client_text("openai-chat", body) == (reply if valid else "")
    assert (events(body)[-1][1] == "[DONE]") is valid
    assert valid or "irl_json_schema" in events(body)[-1][1]


@pytest.mark.parametrize(
    ("fault", "code"), [("not-sse", "irl_stream_not_sse"), ("long-event", "irl_stream_event_too_long")]
)
def test_unreadable_streams_get_the_fail_behaviour(stack: Stack, fault: str, code: str) -> None:
    headers = steer("mail jane.doe@example.com", **{"x-demo-fault": fault, "x-demo-event-bytes": "300000"})
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="t", max_retries=0, default_headers=headers)
    with pytest.raises(openai.APIError) as info:
        list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert info.value.code == code
    status, body = stream_raw(stack, "openai-chat", {"host": "open.test", **headers})  # fail_open: as it came
    assert status == 200
    assert (b"jane.doe@example.com" if fault == "not-sse" else b"x" * 300000) in body


def extproc_streams_active(stack: Stack) -> int:
    url = f"http://127.0.0.1:{stack.admin_port}/stats?format=json&filter=^cluster.{EXTPROC_CLUSTER}.upstream_rq_active$"
    with urllib.request.urlopen(url, timeout=5) as reply:
        stats = json.loads(reply.read())["stats"]
    return int(stats[0]["value"]) if stats else 0


def wait_until_no_extproc_streams(stack: Stack) -> None:
    deadline = time.monotonic() + 5
    while extproc_streams_active(stack) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling Envoy's gauge, not a fixed wait
    assert extproc_streams_active(stack) == 0


def read_raw(stack: Stack, headers: dict[str, str], into: list[bytes]) -> None:
    with httpx.stream(
        "POST", stack.url + PATHS["openai-chat"], json=BODIES["openai-chat"], headers=headers, timeout=10
    ) as reply:
        into.extend(reply.iter_raw())


def test_upstream_closing_mid_stream_leaks_nothing_and_ends(stack: Stack) -> None:
    headers = steer(
        "ok then, the card is 4111 1111 1111 1111 and the rest",
        **{
            "x-demo-split": "5,10,24,28",
            "x-demo-fault": "close-mid-stream",
            "x-demo-close-after": "3",
            "x-demo-chunk-delay-ms": "20",
        },
    )
    got: list[bytes] = []
    with pytest.raises(httpx.HTTPError):
        read_raw(stack, headers, got)
    assert b"".join(got).startswith(b"data: ")  # the stream had begun: the cut came mid-stream
    assert b"411" not in b"".join(got)  # the upstream had sent "...the card is 411": all held back
    wait_until_no_extproc_streams(stack)


def test_client_disconnect_ends_the_ext_proc_stream(stack: Stack) -> None:
    headers = steer("a slow reply " * 40, **{"x-demo-chunks": "60", "x-demo-chunk-delay-ms": "50"})
    with httpx.stream(
        "POST", stack.url + PATHS["openai-chat"], json=BODIES["openai-chat"], headers=headers, timeout=10
    ) as reply:
        chunks = reply.iter_raw()  # kept: a dropped iterator closes the response at once
        assert next(chunks).startswith(b"data: ")
        assert extproc_streams_active(stack) == 1
    wait_until_no_extproc_streams(stack)  # the held window and its timer went with it
    status, body = stream_raw(stack, "openai-chat", steer("still serving"))
    assert status == 200
    assert client_text("openai-chat", body) == "still serving"


def test_a_non_streamed_response_in_full_duplex_is_rewritten_whole(stack: Stack) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(stack.url + PATHS["openai-chat"], json=body, headers=steer("mail jane.doe@example.com"))
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "mail [EMAIL_1]"
    # The upstream announced the original length; Envoy dropped it for the rewritten body.
    assert reply.headers.get("content-length") in (None, str(len(reply.content)))
