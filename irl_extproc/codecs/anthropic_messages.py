"""Anthropic Messages: request and non-streamed response."""

from __future__ import annotations

from typing import Any

from irl_extproc.codecs.base import request_conversation, require, response_conversation
from irl_extproc.conversation import Conversation, JsonPath, Segment, Source

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def _blocks(content: Any, source: Source, path: JsonPath) -> list[Segment]:
    """Text of a content string or of text / tool_use / tool_result blocks."""
    if isinstance(content, str):
        return [Segment(source, content, path)]
    require(isinstance(content, list), f"{'.'.join(map(str, path))} must be a string or a list of blocks")
    segments: list[Segment] = []
    for i, block in enumerate(content):
        require(isinstance(block, dict), "each content block must be an object")
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            segments.append(Segment(source, block["text"], (*path, i, "text")))
        elif kind == "tool_use" and isinstance(block.get("input"), dict):
            segments += _json_strings(block["input"], (*path, i, "input"), block.get("name"))
        elif kind == "tool_result" and block.get("content") is not None:
            segments += _blocks(block["content"], "tool_result", (*path, i, "content"))
        elif kind == "document" and isinstance(block.get("source"), dict):
            data = block["source"].get("data")
            if block["source"].get("type") == "text" and isinstance(data, str):
                segments.append(Segment("document", data, (*path, i, "source", "data")))
    return segments


def _json_strings(value: Any, path: JsonPath, name: str | None) -> list[Segment]:
    """Every string leaf of a tool_use input object, so redaction keeps it an object."""
    if isinstance(value, str):
        return [Segment("tool_call", value, path, name)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _json_strings(v, (*path, k), name)]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _json_strings(v, (*path, i), name)]
    return []


class AnthropicMessages:
    name = "anthropic-messages"

    def decode_request(self, body: Any) -> Conversation:
        require(isinstance(body, dict), "request body must be a JSON object")
        messages = body.get("messages")
        require(isinstance(messages, list) and bool(messages), "'messages' must be a non-empty list")
        segments: list[Segment] = []
        if body.get("system") is not None:
            segments += _blocks(body["system"], "system", ("system",))
        for i, message in enumerate(messages):
            require(isinstance(message, dict), "each message must be an object")
            role = message.get("role")
            require(role in ("user", "assistant"), f"message role {role!r} is not a Messages role")
            segments += _blocks(
                message.get("content"), "user" if role == "user" else "assistant", ("messages", i, "content")
            )
        for i, tool in enumerate(body.get("tools") or []):
            if isinstance(tool, dict) and isinstance(tool.get("description"), str):
                segments.append(
                    Segment("tool_definition", tool["description"], ("tools", i, "description"), tool.get("name"))
                )
        max_tokens = body.get("max_tokens")
        return request_conversation(self.name, body, segments, max_tokens)

    def decode_response(self, body: Any) -> Conversation:
        require(isinstance(body, dict) and body.get("type") == "message", "response is not a Messages 'message'")
        return response_conversation(
            self.name,
            body,
            _blocks(body.get("content") or [], "assistant", ("content",)),
            ("input_tokens", "output_tokens"),
        )

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
