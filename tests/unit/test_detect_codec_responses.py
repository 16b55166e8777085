"""OpenAI Responses codec: every text part is a segment, redaction keeps the structure."""

from __future__ import annotations

import copy

import pytest

from irl_extproc.codecs.base import CodecError, apply_redactions
from irl_extproc.codecs.registry import codec_for
from irl_extproc.invariants.base import CheckContext
from irl_extproc.invariants.pii import Pii, PiiConfig

pytestmark = pytest.mark.unit

REQUEST = {
    "model": "gpt-4.1-mini",
    "instructions": "You are a billing assistant.",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Refund to bob@example.com"},
                                     {"type": "input_image", "image_url": "https://x/y.png"}]},
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"email": "bob@example.com"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "customer bob@example.com, plan pro"},
        {"type": "reasoning", "summary": []},
    ],
    "tools": [{"type": "function", "name": "lookup", "description": "Find a customer", "parameters": {}}],
    "max_output_tokens": 200,
}


def test_request_segments_and_redaction_in_place() -> None:
    codec = codec_for("auto", "/v1/responses")
    assert codec is not None
    assert codec.name == "openai-responses"
    body = copy.deepcopy(REQUEST)
    conversation = codec.decode_request(body)
    assert [(s.source, s.path) for s in conversation.segments] == [
        ("system", ("instructions",)),
        ("user", ("input", 0, "content", 0, "text")),
        ("tool_call", ("input", 1, "arguments")),
        ("tool_result", ("input", 2, "output")),
        ("tool_definition", ("tools", 0, "description")),
    ]
    assert conversation.max_tokens == 200
    findings = Pii(PiiConfig()).check(conversation, CheckContext("r"))
    apply_redactions(conversation, findings)
    assert body["input"][0]["content"][0]["text"] == "Refund to [EMAIL_1]"
    assert body["input"][1]["arguments"] == '{"email": "[EMAIL_1]"}'
    assert body["input"][2]["output"] == "customer [EMAIL_1], plan pro"
    assert body["input"][0]["content"][1] == REQUEST["input"][0]["content"][1]  # type: ignore[index]


def test_string_input_and_response() -> None:
    codec = codec_for("openai-responses", "/")
    assert codec is not None
    assert [s.source for s in codec.decode_request({"model": "m", "input": "hi"}).segments] == ["user"]
    response = codec.decode_response({"object": "response", "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
        {"type": "function_call", "name": "f", "arguments": "{}"},
    ], "usage": {"input_tokens": 3, "output_tokens": 2}})
    assert [(s.source, s.text) for s in response.segments] == [("assistant", "Done."), ("tool_call", "{}")]
    assert response.usage is not None
    assert response.usage.output_tokens == 2


@pytest.mark.parametrize("body", [{"model": "m"}, {"input": [{"role": "robot", "content": "x"}]}, [], {"input": ""}])
def test_bad_bodies_are_codec_errors(body: object) -> None:
    codec = codec_for("openai-responses", "/")
    assert codec is not None
    with pytest.raises(CodecError):
        codec.decode_request(body)
