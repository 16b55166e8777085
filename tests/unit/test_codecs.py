"""OpenAI Chat Completions and Anthropic Messages into one conversation model, and back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from irl_extproc.codecs.anthropic_messages import AnthropicMessages
from irl_extproc.codecs.base import CodecError, apply_redactions, encode_json, parse_json
from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.codecs.registry import codec_for
from irl_extproc.invariants.base import Finding

pytestmark = pytest.mark.unit

OPENAI_REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "max_tokens": 50,
    "messages": [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "a@b.co"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "result text"},
    ],
    "tools": [{"type": "function", "function": {"name": "lookup", "description": "search the web"}}],
}


def test_openai_request_covers_every_place_text_hides() -> None:
    conversation = OpenAIChat().decode_request(OPENAI_REQUEST)
    found = [(s.source, s.text, s.path) for s in conversation.segments]
    assert found == [
        ("system", "be brief", ("messages", 0, "content")),
        ("user", "look", ("messages", 1, "content", 0, "text")),
        ("tool_call", '{"q": "a@b.co"}', ("messages", 2, "tool_calls", 0, "function", "arguments")),
        ("tool_result", "result text", ("messages", 3, "content")),
        ("tool_definition", "search the web", ("tools", 0, "function", "description")),
    ]
    assert (conversation.model, conversation.max_tokens, conversation.stream) == ("gpt-4o-mini", 50, False)


def test_anthropic_request_covers_system_blocks_tools_and_results() -> None:
    body = {
        "model": "claude-3-5-haiku",
        "max_tokens": 10,
        "stream": True,
        "system": [{"type": "text", "text": "sys"}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": ["x", 1]}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "tool says"}]}
                ],
            },
        ],
        "tools": [{"name": "f", "description": "finds", "input_schema": {"type": "object"}}],
    }
    conversation = AnthropicMessages().decode_request(body)
    assert [(s.source, s.text) for s in conversation.segments] == [
        ("system", "sys"),
        ("user", "hi"),
        ("tool_call", "x"),
        ("tool_result", "tool says"),
        ("tool_definition", "finds"),
    ]
    assert conversation.stream


def test_responses_decode_with_usage() -> None:
    openai = OpenAIChat().decode_response(
        {
            "choices": [{"message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
    )
    assert [s.text for s in openai.segments] == ["ok"]
    assert openai.usage is not None
    assert (openai.usage.input_tokens, openai.usage.output_tokens) == (3, 1)
    anthropic = AnthropicMessages().decode_response(
        {
            "type": "message",
            "content": [{"type": "text", "text": "yo"}],
            "usage": {"input_tokens": 2, "output_tokens": 1},
        }
    )
    assert [s.text for s in anthropic.segments] == ["yo"]


def test_redaction_writes_back_in_place_and_keeps_structure() -> None:
    body = json.loads(json.dumps(OPENAI_REQUEST))
    conversation = OpenAIChat().decode_request(body)
    findings = [
        Finding("pii", "pii.email", "redact", "e-mail", segment=2, start=7, end=13, replacement="[EMAIL_1]"),
        Finding("x", "x", "redact", "overlapping, dropped", segment=2, start=8, end=11, replacement="?"),
        Finding("y", "y", "redact", "word", segment=1, start=0, end=4, replacement="[W]"),
    ]
    assert apply_redactions(conversation, findings) == 2
    assert body["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"q": "[EMAIL_1]"}'
    assert body["messages"][1]["content"][0]["text"] == "[W]"
    assert body["messages"][1]["content"][1]["type"] == "image_url"
    assert json.loads(encode_json(body)) == body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "message role 'wizard' is not a Chat Completions role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content must be a string or a list of parts"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"function": 1}]}]}, "each tool call needs a 'function'"),
        ([1], "request body must be a JSON object"),
    ],
)
def test_unreadable_openai_bodies_name_the_problem(body: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        OpenAIChat().decode_request(body)


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"\xc3\x28", "not valid UTF-8"), (b"", "empty"), (b"{", "not valid JSON"), (b"[" * 100_000, "nested too deeply"),
     (b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}', "unpaired UTF-16 surrogate"),
     (b'{"\\uDC00": 1}', "unpaired UTF-16 surrogate")],
)
def test_parse_json_errors_are_clear(raw: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        parse_json(raw)


def test_escaped_surrogate_pairs_are_text() -> None:
    assert parse_json(b'{"content": "\\ud83d\\ude00 \\u00e9"}') == {"content": "\U0001f600 \u00e9"}


def test_auto_format_by_path() -> None:
    assert codec_for("auto", "/v1/chat/completions?x=1").name == "openai-chat"  # type: ignore[union-attr]
    assert codec_for("auto", "/anthropic/v1/messages").name == "anthropic-messages"  # type: ignore[union-attr]
    assert codec_for("auto", "/v1/embeddings") is None
    assert codec_for("openai-chat", "/anything").name == "openai-chat"  # type: ignore[union-attr]
