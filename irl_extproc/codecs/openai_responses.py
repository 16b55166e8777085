"""OpenAI Responses API: request and non-streamed response."""

from __future__ import annotations

from typing import Any

from irl_extproc.codecs.base import request_conversation, require, response_conversation
from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.conversation import Conversation, JsonPath, Segment, Source

_ROLE_SOURCE: dict[str, Source] = {"system": "system", "developer": "system", "user": "user",
                                   "assistant": "assistant"}
_TEXT_PARTS = ("input_text", "output_text", "text")


def _parts(content: Any, source: Source, path: JsonPath) -> list[Segment]:
    """A content string, or the text/refusal parts of a content list (images and files carry no text)."""
    if isinstance(content, str):
        return [Segment(source, content, path)]
    require(isinstance(content, list), f"{'.'.join(map(str, path))} must be a string or a list of parts")
    segments = []
    for i, part in enumerate(content):
        require(isinstance(part, dict), "each content part must be an object")
        if part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
            segments.append(Segment(source, part["text"], (*path, i, "text")))
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            segments.append(Segment(source, part["refusal"], (*path, i, "refusal")))
    return segments


def _item(item: Any, path: JsonPath) -> list[Segment]:
    require(isinstance(item, dict), "each input item must be an object")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        require(role in _ROLE_SOURCE, f"input message role {role!r} is not a Responses role")
        return _parts(item.get("content"), _ROLE_SOURCE[role], (*path, "content"))
    if kind in ("function_call", "custom_tool_call"):
        field = "arguments" if kind == "function_call" else "input"
        value = item.get(field)
        return [Segment("tool_call", value, (*path, field), item.get("name"))] if isinstance(value, str) else []
    if kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        return _parts(output, "tool_result", (*path, "output")) if output is not None else []
    return []  # reasoning, web search calls, item references: no text to check


class OpenAIResponses:
    name = "openai-responses"

    def decode_request(self, body: Any) -> Conversation:
        require(isinstance(body, dict), "request body must be a JSON object")
        segments: list[Segment] = []
        if isinstance(body.get("instructions"), str):
            segments.append(Segment("system", body["instructions"], ("instructions",)))
        given = body.get("input")
        require(isinstance(given, (str, list)) and bool(given), "'input' must be a non-empty string or list")
        if isinstance(given, str):
            segments.append(Segment("user", given, ("input",)))
        else:
            segments += [s for i, item in enumerate(given) for s in _item(item, ("input", i))]
        for i, tool in enumerate(body.get("tools") or []):
            if isinstance(tool, dict) and isinstance(tool.get("description"), str):
                segments.append(Segment("tool_definition", tool["description"], ("tools", i, "description"),
                                        tool.get("name")))
        max_tokens = body.get("max_output_tokens")
        return request_conversation(self.name, body, segments, max_tokens)

    def decode_response(self, body: Any) -> Conversation:
        require(isinstance(body, dict) and isinstance(body.get("output"), list),
                "response is not a Responses object with an 'output' list")
        segments: list[Segment] = []
        for i, item in enumerate(body["output"]):
            if isinstance(item, dict) and item.get("type", "message") == "message":
                segments += _parts(item.get("content") or [], "assistant", ("output", i, "content"))
            elif isinstance(item, dict):
                segments += _item(item, ("output", i))
        return response_conversation(self.name, body, segments, ("input_tokens", "output_tokens"))

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        return OpenAIChat().error_body(status, message, code)  # the same OpenAI error shape
