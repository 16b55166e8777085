"""OpenAI Chat Completions: request and non-streamed response."""

from __future__ import annotations

from typing import Any

from irl_extproc.codecs.base import as_dict, as_list, request_conversation, require, response_conversation
from irl_extproc.conversation import Conversation, JsonPath, Segment, Source

_ROLE_SOURCE: dict[str, Source] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool_result",
    "function": "tool_result",
}


def _content_segments(content: Any, source: Source, path: JsonPath, name: str | None = None) -> list[Segment]:
    """String content, or the text parts of multi-part content."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Segment(source, content, path, name)]
    require(isinstance(content, list), f"{'.'.join(map(str, path))} must be a string or a list of parts")
    segments = []
    for i, part in enumerate(content):
        require(isinstance(part, dict), "each content part must be an object")
        if isinstance(part.get("text"), str):
            segments.append(Segment(source, part["text"], (*path, i, "text"), name))
        elif isinstance(part.get("refusal"), str):
            segments.append(Segment(source, part["refusal"], (*path, i, "refusal"), name))
    return segments


def _tool_call_segments(calls: Any, path: JsonPath) -> list[Segment]:
    segments = []
    for i, call in enumerate(as_list(calls, "tool_calls must be a list")):
        function = as_dict(
            as_dict(call, "each tool call must be an object").get("function"),
            "each tool call needs a 'function' object",
        )
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            segments.append(Segment("tool_call", arguments, (*path, i, "function", "arguments"), function.get("name")))
    return segments


def _message_segments(message: Any, path: JsonPath) -> list[Segment]:
    require(isinstance(message, dict), "each message must be an object")
    role = message.get("role")
    require(role in _ROLE_SOURCE, f"message role {role!r} is not a Chat Completions role")
    source = _ROLE_SOURCE[role]
    name = message.get("name") if source == "tool_result" else None
    segments = _content_segments(message.get("content"), source, (*path, "content"), name)
    if message.get("tool_calls") is not None:
        segments += _tool_call_segments(message["tool_calls"], (*path, "tool_calls"))
    return segments


def _tool_definition_segments(tools: Any) -> list[Segment]:
    require(isinstance(tools, list), "tools must be a list")
    segments = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("description"), str):
            segments.append(
                Segment(
                    "tool_definition",
                    function["description"],
                    ("tools", i, "function", "description"),
                    function.get("name"),
                )
            )
    return segments


class OpenAIChat:
    name = "openai-chat"

    def decode_request(self, body: Any) -> Conversation:
        require(isinstance(body, dict), "request body must be a JSON object")
        messages = body.get("messages")
        require(isinstance(messages, list) and bool(messages), "'messages' must be a non-empty list")
        segments = [s for i, m in enumerate(messages) for s in _message_segments(m, ("messages", i))]
        if body.get("tools") is not None:
            segments += _tool_definition_segments(body["tools"])
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return request_conversation(self.name, body, segments, max_tokens)

    def decode_response(self, body: Any) -> Conversation:
        require(isinstance(body, dict), "response body must be a JSON object")
        choices = body.get("choices")
        require(isinstance(choices, list), "'choices' must be a list")
        segments = []
        for i, choice in enumerate(choices):
            message = as_dict(
                as_dict(choice, "each choice must be an object").get("message"), "each choice needs a 'message' object"
            )
            segments += _content_segments(message.get("content"), "assistant", ("choices", i, "message", "content"))
            if message.get("tool_calls") is not None:
                segments += _tool_call_segments(message["tool_calls"], ("choices", i, "message", "tool_calls"))
        return response_conversation(self.name, body, segments, ("prompt_tokens", "completion_tokens"))

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
