"""OpenAI Responses streams: typed ``response.*`` events with a ``sequence_number``.

Channels: ``(output, content)`` for output text and refusals, ``(output, "args")`` for a
function call's arguments, ``(output, "summary", n)`` / ``(output, "reasoning", n)`` for
reasoning text. Besides the ``*.delta`` events, the ``*.done``, ``output_item.*``,
``content_part.*`` and ``response.completed`` events repeat whole texts: those are
rewritten with what the client was actually given (``TextField.whole``).
"""

from __future__ import annotations

from typing import Any

from irl_extproc.codecs.base import encode_json
from irl_extproc.codecs.openai_responses import OpenAIResponses
from irl_extproc.conversation import JsonPath, Source, Usage
from irl_extproc.streaming.events import ChannelKey, Parsed, TextField, integer, items, json_object
from irl_extproc.streaming.sse import SseEvent, encode_event

_ERRORS = OpenAIResponses()
_TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))
_DELTA_SUFFIXES = (".delta", ".done")
# event type (without .delta/.done) → (channel kind, its text key in a .done event)
_TEXT_EVENTS: dict[str, tuple[str, str]] = {
    "response.output_text": ("content", "text"),
    "response.refusal": ("content", "refusal"),
    "response.function_call_arguments": ("args", "arguments"),
    "response.reasoning_summary_text": ("summary", "text"),
    "response.reasoning_text": ("reasoning", "text"),
}
_PART_EVENTS = {
    "response.content_part.added": "content",
    "response.content_part.done": "content",
    "response.reasoning_summary_part.added": "summary",
    "response.reasoning_summary_part.done": "summary",
}


def _channel(kind: str, output: int, index: int | None) -> ChannelKey:
    if kind == "content":
        return (output, index or 0)
    if kind == "args":
        return (output, "args")
    return (output, kind, index or 0)


def _source(kind: str) -> Source:
    return "tool_call" if kind == "args" else "assistant"


def _part_field(kind: str, output: int, index: int, part: dict[str, Any], path: JsonPath) -> list[TextField]:
    key = "refusal" if part.get("type") == "refusal" else "text"
    text = part.get(key)
    if not isinstance(text, str):
        return []
    return [TextField(_channel(kind, output, index), _source(kind), (*path, key), text, whole=True)]


def _item_fields(output: int, item: dict[str, Any], path: JsonPath) -> list[TextField]:
    """Whole texts of one output item: message parts, function arguments, reasoning."""
    kind = item.get("type")
    if kind == "function_call" and isinstance(item.get("arguments"), str):
        return [TextField((output, "args"), "tool_call", (*path, "arguments"), item["arguments"], whole=True)]
    fields: list[TextField] = []
    if kind == "message":
        for index, part in items(item.get("content")):
            fields += _part_field("content", output, index, part, (*path, "content", index))
    elif kind == "reasoning":
        for index, part in items(item.get("summary")):
            fields += _part_field("summary", output, index, part, (*path, "summary", index))
        for index, part in items(item.get("content")):
            fields += _part_field("reasoning", output, index, part, (*path, "content", index))
    return fields


class OpenAIResponsesStream:
    name = "openai-responses"
    summaries = True

    def __init__(self) -> None:
        self._sequence = -1

    def parse(self, event: SseEvent) -> Parsed:
        if event.data is None:
            return Parsed()
        document = json_object(event.data)
        sequence = integer(document.get("sequence_number"))
        if sequence is not None:
            self._sequence = max(self._sequence, sequence)
        kind = document.get("type")
        parsed = Parsed(document)
        if not isinstance(kind, str):
            return parsed
        output = integer(document.get("output_index"))
        if kind.endswith(_DELTA_SUFFIXES) and kind.rsplit(".", 1)[0] in _TEXT_EVENTS and output is not None:
            self._text_event(parsed, kind, output)
        elif kind in _PART_EVENTS and output is not None and isinstance(document.get("part"), dict):
            index = integer(document.get("content_index", document.get("summary_index"))) or 0
            parsed.fields = _part_field(_PART_EVENTS[kind], output, index, document["part"], ("part",))
            if kind.endswith(".done"):
                parsed.closes = tuple(f.channel for f in parsed.fields)
        elif kind.startswith("response.output_item.") and output is not None and isinstance(document.get("item"), dict):
            item = document["item"]
            parsed.fields = _item_fields(output, item, ("item",))
            if item.get("type") == "function_call" and isinstance(item.get("name"), str):
                parsed.tools[(output, "args")] = item["name"]
            if kind.endswith(".done"):
                parsed.closes = ((output,),)
        elif kind.startswith("response.") and isinstance(document.get("response"), dict):
            self._response_event(parsed, kind, document["response"])
        return parsed

    @staticmethod
    def _text_event(parsed: Parsed, kind: str, output: int) -> None:
        base, suffix = kind.rsplit(".", 1)
        channel_kind, done_key = _TEXT_EVENTS[base]
        document = parsed.document
        index = integer(document.get("content_index", document.get("summary_index")))
        channel = _channel(channel_kind, output, index)
        key = "delta" if suffix == "delta" else done_key
        text = document.get(key)
        if isinstance(text, str) and (text or suffix == "done"):
            parsed.fields = [TextField(channel, _source(channel_kind), (key,), text, whole=suffix == "done")]
        if suffix == "done":
            parsed.closes = (channel,)

    @staticmethod
    def _response_event(parsed: Parsed, kind: str, response: dict[str, Any]) -> None:
        for output, item in items(response.get("output")):
            parsed.fields += _item_fields(output, item, ("response", "output", output))
        usage = response.get("usage")
        if isinstance(usage, dict):
            parsed.usage = Usage(integer(usage.get("input_tokens")), integer(usage.get("output_tokens")))
        if kind in _TERMINAL:
            parsed.terminal = True
            parsed.closes = ((),)  # every channel

    def error_event(self, status: int, message: str, code: str) -> bytes:
        # The live API nests the error (the SDK raises on a top-level "error" object); the
        # flat fields are the documented ResponseErrorEvent shape. Both are sent.
        error = _ERRORS.error_body(status, message, code)["error"]
        self._sequence += 1
        document = {
            "type": "error",
            "sequence_number": self._sequence,
            "code": code,
            "message": message,
            "param": None,
            "error": error,
        }
        return encode_event(encode_json(document), "error")
