"""OpenAI Chat Completions streams: ``chat.completion.chunk`` events, then ``data: [DONE]``.

Channels: ``(choice, "content")``, ``(choice, "refusal")`` and ``(choice, "tool", n)`` for
the arguments of tool call ``n``. A choice's ``finish_reason`` ends its channels; the
usage chunk (``stream_options.include_usage``) has no choices.
"""

from __future__ import annotations

from typing import Any

from irl_extproc.codecs.base import encode_json
from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.conversation import Usage
from irl_extproc.streaming.events import Parsed, TextField, integer, items, json_object
from irl_extproc.streaming.sse import SseEvent, encode_event

_ERRORS = OpenAIChat()


def _choice_fields(parsed: Parsed, position: int, number: int, delta: dict[str, Any]) -> None:
    path = ("choices", position, "delta")
    for key in ("content", "refusal"):
        text = delta.get(key)
        if text and isinstance(text, str):
            parsed.fields.append(TextField((number, key), "assistant", (*path, key), text))
    if not delta.get("tool_calls"):
        return
    for j, call in items(delta["tool_calls"]):
        function = call.get("function")
        if not isinstance(function, dict):
            continue
        call_number = integer(call.get("index"))
        channel = (number, "tool", j if call_number is None else call_number)
        if isinstance(function.get("name"), str):
            parsed.tools[channel] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            text_path = (*path, "tool_calls", j, "function", "arguments")
            parsed.fields.append(TextField(channel, "tool_call", text_path, arguments))


class OpenAIChatStream:
    name = "openai-chat"
    summaries = False

    def parse(self, event: SseEvent) -> Parsed:
        data = event.data
        if data is None:
            return Parsed()
        if data.strip() == "[DONE]":
            return Parsed(terminal=True)
        document = json_object(data)
        parsed = Parsed(document)
        closes = []
        for position, choice in items(document.get("choices")):
            number = integer(choice.get("index"))
            number = position if number is None else number
            delta = choice.get("delta")
            if delta and isinstance(delta, dict):
                _choice_fields(parsed, position, number, delta)
            if choice.get("finish_reason") is not None:
                closes.append((number,))
        if closes:
            parsed.closes = tuple(closes)
        usage = document.get("usage")
        if isinstance(usage, dict):
            parsed.usage = Usage(integer(usage.get("prompt_tokens")), integer(usage.get("completion_tokens")))
        return parsed

    def error_event(self, status: int, message: str, code: str) -> bytes:
        return encode_event(encode_json(_ERRORS.error_body(status, message, code)))
