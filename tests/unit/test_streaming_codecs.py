"""Stream codecs: text per channel, closing events, usage, the regular last event, error events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from irl_extproc.conversation import Usage
from irl_extproc.streaming.anthropic_messages import AnthropicMessagesStream
from irl_extproc.streaming.events import Parsed, rewrite
from irl_extproc.streaming.openai_chat import OpenAIChatStream
from irl_extproc.streaming.openai_responses import OpenAIResponsesStream
from irl_extproc.streaming.sse import SseError, SseEvent, SseParser
from tests.unit.streaming_helpers import events, provider_stream

pytestmark = pytest.mark.unit


def sse(document: Any, name: str | None = None) -> SseEvent:
    data = document if isinstance(document, str) else json.dumps(document)
    raw = (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
    return SseEvent(name, data, raw.encode())


def texts(parsed: Parsed) -> list[tuple[Any, str, str, bool]]:
    return [(f.channel, f.source, f.text, f.whole) for f in parsed.fields]


def test_openai_chat_content_refusal_tool_calls_and_end() -> None:
    codec = OpenAIChatStream()
    chunk = {
        "choices": [
            {"index": 0, "delta": {"content": "Hel"}, "finish_reason": None},
            {"index": 1, "delta": {"refusal": "No"}, "finish_reason": "stop"},
        ]
    }
    parsed = codec.parse(sse(chunk))
    assert texts(parsed) == [((0, "content"), "assistant", "Hel", False), ((1, "refusal"), "assistant", "No", False)]
    assert parsed.closes == ((1,),)
    call = {
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 2, "function": {"name": "lookup", "arguments": '{"q":'}}]},
                "finish_reason": None,
            }
        ]
    }
    parsed = codec.parse(sse(call))
    assert texts(parsed) == [((0, "tool", 2), "tool_call", '{"q":', False)]
    assert parsed.tools == {(0, "tool", 2): "lookup"}
    usage = codec.parse(sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}))
    assert usage.usage == Usage(3, 5)
    assert codec.parse(sse("[DONE]")).terminal


def test_anthropic_blocks_deltas_usage_and_end() -> None:
    codec = AnthropicMessagesStream()
    start = codec.parse(sse({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}))
    assert start.usage == Usage(9, 1)
    tool = codec.parse(
        sse(
            {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "name": "f", "input": {}}}
        )
    )
    assert tool.tools == {(1,): "f"}
    assert not tool.fields
    assert texts(
        codec.parse(sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hi"}}))
    ) == [((0,), "assistant", "Hi", False)]
    deltas = [
        ({"type": "text_delta", "text": "a"}, ((0,), "assistant", "a", False)),
        ({"type": "thinking_delta", "thinking": "hmm"}, ((0,), "assistant", "hmm", False)),
        ({"type": "input_json_delta", "partial_json": '{"x'}, ((0,), "tool_call", '{"x', False)),
    ]
    for delta, expected in deltas:
        assert texts(codec.parse(sse({"type": "content_block_delta", "index": 0, "delta": delta}))) == [expected]
    assert codec.parse(sse({"type": "content_block_stop", "index": 0})).closes == ((0,),)
    final = codec.parse(sse({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 42}}))
    assert final.usage == Usage(9, 42)  # input from message_start, output from message_delta
    assert codec.parse(sse({"type": "message_stop"})).terminal
    assert not codec.parse(sse({"type": "ping"})).fields


def test_responses_deltas_whole_texts_and_completion() -> None:
    codec = OpenAIResponsesStream()
    delta = codec.parse(
        sse(
            {
                "type": "response.output_text.delta",
                "output_index": 0,
                "content_index": 1,
                "delta": "x",
                "sequence_number": 4,
            }
        )
    )
    assert texts(delta) == [((0, 1), "assistant", "x", False)]
    args = codec.parse(sse({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{"}))
    assert texts(args) == [((2, "args"), "tool_call", "{", False)]
    done = codec.parse(sse({"type": "response.output_text.done", "output_index": 0, "content_index": 1, "text": "xy"}))
    assert texts(done) == [((0, 1), "assistant", "xy", True)]
    assert done.closes == ((0, 1),)
    item = {"type": "function_call", "name": "f", "arguments": "{}"}
    added = codec.parse(sse({"type": "response.output_item.added", "output_index": 2, "item": item}))
    assert added.tools == {(2, "args"): "f"}
    completed = {
        "type": "response.completed",
        "sequence_number": 9,
        "response": {
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "xy"}]}],
            "usage": {"input_tokens": 3, "output_tokens": 2},
        },
    }
    parsed = codec.parse(sse(completed))
    assert parsed.terminal
    assert parsed.closes == ((),)
    assert parsed.usage == Usage(3, 2)
    assert texts(parsed) == [((0, 0), "assistant", "xy", True)]
    error = json.loads(codec.error_event(403, "blocked", "irl_pii").decode().split("data: ", 1)[1])
    assert error["sequence_number"] == 10  # after the last one seen
    assert error["error"]["code"] == "irl_pii"
    assert error["message"] == "blocked"


@pytest.mark.parametrize(
    ("codec", "name", "check"),
    [
        (OpenAIChatStream(), None, lambda d: d["error"]["code"] == "irl_x"),
        (
            AnthropicMessagesStream(),
            "error",
            lambda d: d["type"] == "error" and d["error"]["type"] == "permission_error",
        ),
    ],
)
def test_error_events_have_the_provider_shape(codec: Any, name: str | None, check: Any) -> None:
    [(event_name, data)] = events(codec.error_event(403, "blocked", "irl_x"))
    assert event_name == name
    assert check(json.loads(data))


@pytest.mark.parametrize("data", ["not json", "[1, 2]"])
def test_unreadable_event_data_is_an_error(data: str) -> None:
    with pytest.raises(SseError):
        OpenAIChatStream().parse(sse(data))


@pytest.mark.parametrize("api_format", ["openai-chat", "openai-responses", "anthropic-messages"])
def test_rewrite_changes_only_the_text(api_format: str) -> None:
    codec = {
        "openai-chat": OpenAIChatStream,
        "openai-responses": OpenAIResponsesStream,
        "anthropic-messages": AnthropicMessagesStream,
    }[api_format]()
    body = provider_stream(api_format, ["Hello ", "world"])
    for event in SseParser(1 << 20).feed(body):
        parsed = codec.parse(event)
        if not parsed.fields or parsed.fields[0].whole:
            continue
        original = json.loads(event.data or "")
        again = rewrite(event, parsed, ["<" + f.text + ">" for f in parsed.fields])
        [reparsed] = SseParser(1 << 20).feed(again)
        assert reparsed.event == event.event
        assert [f.text for f in codec.parse(reparsed).fields] == ["<" + f.text + ">" for f in parsed.fields]
        document = json.loads(reparsed.data or "")
        for f in parsed.fields:  # everything but the text is as it was
            target = document
            for part in f.path[:-1]:
                target = target[part]
            target[f.path[-1]] = f.text
        assert document == original
