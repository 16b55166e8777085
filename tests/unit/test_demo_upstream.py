"""The demo LLM upstream, driven by the official openai and anthropic SDKs (no Envoy)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import anthropic
import httpx
import openai
import pytest

from irl_extproc.demo.directives import DirectiveError, Directives, parse_directives, split_reply
from irl_extproc.demo.http import serve_http
from irl_extproc.demo.process import DemoUpstreamProcess, start_demo_upstream

pytestmark = pytest.mark.unit

MODEL = "demo-model"


@pytest.fixture(scope="module")
def upstream() -> Iterator[DemoUpstreamProcess]:
    with start_demo_upstream() as process:
        yield process


@pytest.fixture
def http(upstream: DemoUpstreamProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, timeout=10) as client:
        yield client


@pytest.fixture
def oai(upstream: DemoUpstreamProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream.url + "/v1", api_key="test", max_retries=0)


@pytest.fixture
def claude(upstream: DemoUpstreamProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=upstream.url, api_key="test", max_retries=0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """(event, data) pairs of an SSE body, framing checked strictly."""
    assert raw.endswith("\n\n")
    events = []
    for block in raw[:-2].split("\n\n"):
        lines = block.split("\n")
        event = lines[0].removeprefix("event: ") if lines[0].startswith("event: ") else None
        data = lines[-1]
        assert data.startswith("data: "), block
        assert len(lines) == (2 if event else 1), block
        events.append((event, data.removeprefix("data: ")))
    return events


# -- pure parts ------------------------------------------------------------------------


def test_split_reply_at_offsets_seeded_and_per_word() -> None:
    text = "key sk-ABCDEFGH done"
    assert split_reply(text, Directives(split_at=(6, 9, 12))) == ["key sk", "-AB", "CDE", "FGH done"]
    seeded = split_reply(text, Directives(chunks=4, seed=7))
    assert len(seeded) == 4
    assert "".join(seeded) == text
    assert seeded == split_reply(text, Directives(chunks=4, seed=7))
    assert split_reply(text, Directives()) == ["key ", "sk-ABCDEFGH ", "done"]
    assert split_reply("ab", Directives(chunks=5)) == ["a", "b"]
    assert split_reply("", Directives()) == [""]


def test_directives_reject_bad_values_naming_the_header() -> None:
    with pytest.raises(DirectiveError, match="x-demo-status must be between 400 and 599"):
        parse_directives({"x-demo-status": "200"})
    with pytest.raises(DirectiveError, match="x-demo-fault must be one of reset"):
        parse_directives({"x-demo-fault": "explode"})
    with pytest.raises(DirectiveError, match="x-demo-split"):
        parse_directives({"x-demo-split": "3,x"})
    assert parse_directives({"x-demo-reply": "caf%C3%A9"}).reply == "café"


# -- OpenAI Chat Completions -----------------------------------------------------------


def test_chat_completion_echoes_with_deterministic_usage(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "be brief"}, *user("hello there")]
    )
    assert result.choices[0].message.content == "echo: hello there"
    assert result.choices[0].finish_reason == "stop"
    assert result.model == MODEL
    assert result.usage is not None
    # ceil(len/4) per text: "be brief" 2 + "hello there" 3; "echo: hello there" 5
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (5, 5, 10)


def test_chat_stream_ends_with_usage_chunk(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(
        model=MODEL, messages=user("one two three"), stream=True, stream_options={"include_usage": True}
    ))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert deltas == ["echo: ", "one ", "two ", "three"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_chat_stream_raw_framing_without_usage(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": user("hi"), "stream": True}
    response = http.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    events = sse_events(response.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)


def test_reply_override_split_through_a_secret(oai: openai.OpenAI) -> None:
    reply = "your key is sk-ABCDEF123456 ok"
    stream = oai.chat.completions.create(
        model=MODEL, messages=user("leak it"), stream=True,
        extra_headers={"x-demo-reply": quote(reply), "x-demo-split": "14,17,22"},
    )
    deltas = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert deltas == ["your key is sk", "-AB", "CDEF1", "23456 ok"]


def test_seeded_chunks_are_reproducible(oai: openai.OpenAI) -> None:
    def pieces() -> list[str]:
        stream = oai.chat.completions.create(
            model=MODEL, messages=user("a fairly long message to cut"), stream=True,
            extra_headers={"x-demo-chunks": "5", "x-demo-seed": "42"},
        )
        return [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]

    first = pieces()
    assert len(first) == 5
    assert "".join(first) == "echo: a fairly long message to cut"
    assert pieces() == first


# -- OpenAI Responses ------------------------------------------------------------------


def test_responses_create_and_stream(oai: openai.OpenAI) -> None:
    result = oai.responses.create(model=MODEL, input="hi there", instructions="be nice")
    assert result.output_text == "echo: hi there"
    assert result.usage is not None
    assert result.usage.input_tokens == 2 + 2

    kinds = []
    with oai.responses.stream(model=MODEL, input=[{"role": "user", "content": "streamed words"}]) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert final.output_text == "echo: streamed words"
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds.count("response.output_text.delta") == 3
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]


# -- Anthropic Messages ----------------------------------------------------------------


def test_anthropic_message(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MODEL, max_tokens=50, system="sys",
        messages=[{"role": "user", "content": [{"type": "text", "text": "yo"}]}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: yo"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 2)


def test_anthropic_stream_events_and_usage(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model=MODEL, max_tokens=50, messages=user("stream me please")) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text == "echo: stream me please"
    assert final.usage.output_tokens == 6
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "message_delta" in kinds
    assert kinds.count("content_block_delta") == 4


def test_anthropic_raw_framing(http: httpx.Client) -> None:
    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": user("x"), "stream": True})
    names = [event for event, _ in sse_events(response.text)]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]


# -- verification endpoint, models, errors ---------------------------------------------


def test_received_keeps_bodies_and_can_be_cleared(http: httpx.Client, oai: openai.OpenAI) -> None:
    assert http.delete("/__irl/received").status_code == 204
    oai.chat.completions.create(model=MODEL, messages=user("mail [REDACTED_EMAIL]"),
                                extra_headers={"x-trace": "t1"})
    received = http.get("/__irl/received").json()["requests"]
    assert len(received) == 1
    assert received[0]["path"] == "/v1/chat/completions"
    assert received[0]["headers"]["x-trace"] == "t1"
    assert json.loads(received[0]["body"])["messages"][0]["content"] == "mail [REDACTED_EMAIL]"
    http.delete("/__irl/received")
    assert http.get("/__irl/received").json() == {"requests": []}


def test_models_in_both_shapes(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    assert MODEL in [m.id for m in oai.models.list()]
    assert MODEL in [m.id for m in claude.models.list()]


def test_bad_requests_get_provider_errors(http: httpx.Client, oai: openai.OpenAI,
                                          claude: anthropic.Anthropic) -> None:
    response = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = http.post("/v1/messages", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    with pytest.raises(openai.BadRequestError, match="x-demo-chunks"):
        oai.chat.completions.create(model=MODEL, messages=user("x"), extra_headers={"x-demo-chunks": "many"})
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        claude.messages.create(model=MODEL, max_tokens=5, messages=[])
    assert http.get("/v1/unknown").status_code == 404


# -- fault injection -------------------------------------------------------------------


def test_status_fault_maps_to_sdk_errors(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model=MODEL, messages=user("x"), extra_headers={"x-demo-status": "429"})
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(model=MODEL, max_tokens=5, messages=user("x"), extra_headers={"x-demo-status": "529"})
    assert caught.value.status_code == 529


def test_fault_key_fails_only_the_first_n(oai: openai.OpenAI) -> None:
    headers = {"x-demo-status": "503", "x-demo-fault-key": f"k-{time.monotonic_ns()}", "x-demo-fault-times": "2"}
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oai.chat.completions.create(model=MODEL, messages=user("x"), extra_headers=headers)
    result = oai.chat.completions.create(model=MODEL, messages=user("third"), extra_headers=headers)
    assert result.choices[0].message.content == "echo: third"


def test_delay(oai: openai.OpenAI) -> None:
    started = time.monotonic()
    oai.chat.completions.create(model=MODEL, messages=user("x"), extra_headers={"x-demo-delay-ms": "150"})
    assert time.monotonic() - started >= 0.15


def test_reset_and_mid_stream_close_surface_as_connection_errors(oai: openai.OpenAI,
                                                                claude: anthropic.Anthropic) -> None:
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model=MODEL, messages=user("x"), extra_headers={"x-demo-fault": "reset"})
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model=MODEL, messages=user("x"), extra_headers={"x-demo-fault": "close-mid-stream"})
    received: list[str] = []
    # The SDK lets the transport's error through mid-stream (httpx's RemoteProtocolError).
    headers = {"x-demo-fault": "close-mid-stream", "x-demo-close-after": "2"}
    with (
        pytest.raises(Exception, match="incomplete chunked read"),
        claude.messages.stream(
            model=MODEL, max_tokens=50, messages=user("a b c d e f"), extra_headers=headers
        ) as stream,
    ):
        received.extend(stream.text_stream)
    assert received == ["echo: ", "a "]


def test_not_sse_and_long_event(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": user("x"), "stream": True}
    response = http.post("/v1/chat/completions", json=body, headers={"x-demo-fault": "not-sse"})
    assert response.headers["content-type"] == "text/event-stream"
    assert response.json()["object"] == "chat.completion"
    response = http.post("/v1/chat/completions", json={**body, "stream": False}, headers={"x-demo-fault": "not-sse"})
    with pytest.raises(json.JSONDecodeError):
        response.json()
    response = http.post("/v1/chat/completions", json=body,
                         headers={"x-demo-fault": "long-event", "x-demo-event-bytes": "200000"})
    deltas = [json.loads(data)["choices"][0]["delta"].get("content") for _, data in sse_events(response.text)[:-1]]
    assert [d for d in deltas if d] == ["x" * 200_000]


def test_chunk_delay_paces_the_stream(oai: openai.OpenAI) -> None:
    started = time.monotonic()
    stream = oai.chat.completions.create(model=MODEL, messages=user("a b c"), stream=True,
                                         extra_headers={"x-demo-chunk-delay-ms": "40"})
    assert len([c for c in stream if c.choices and c.choices[0].delta.content]) == 4
    assert time.monotonic() - started >= 3 * 0.04


# -- HTTP/1.1 behaviour and process handling -------------------------------------------


def test_pipelined_requests_answered_in_order(upstream: DemoUpstreamProcess) -> None:
    def post(text: str, extra: str = "") -> bytes:
        body = json.dumps({"model": MODEL, "messages": user(text)}).encode()
        return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}"
                f"content-length: {len(body)}\r\n\r\n").encode() + body

    with socket.create_connection((upstream.host, upstream.port), timeout=5) as sock:
        sock.sendall(post("first", "x-demo-delay-ms: 50\r\n") + post("second", "connection: close\r\n"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"echo: first") < data.index(b"echo: second")


def test_malformed_http_gets_400(upstream: DemoUpstreamProcess) -> None:
    with socket.create_connection((upstream.host, upstream.port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")


def test_process_stops_gracefully_on_sigterm() -> None:
    process = start_demo_upstream()
    assert httpx.get(process.url + "/healthz").json() == {"status": "ok"}
    assert process.stop() == 0


def test_expect_100_continue_is_answered(upstream: DemoUpstreamProcess) -> None:
    body = json.dumps({"model": MODEL, "messages": user("x")}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    with socket.create_connection((upstream.host, upstream.port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert b"echo: x" in sock.recv(65536)


async def test_oversized_body_gets_413() -> None:
    server = await serve_http(lambda _request, responder: responder.send(200, b"ok"), "127.0.0.1", 0, max_body=10)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r\n" + b"a" * 20)
        assert (await reader.readline()).startswith(b"HTTP/1.1 413")
        writer.close()
    finally:
        server.close()
