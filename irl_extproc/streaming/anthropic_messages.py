"""Anthropic Messages streams: ``message_start``, ``content_block_start/delta/stop``,
``message_delta`` (stop reason, usage), ``message_stop``; ``ping`` and ``error`` in between.

Channels: ``(block index,)``. Text, thinking and a tool's ``partial_json`` are inspected;
``content_block_stop`` ends the block's channel.
"""

from __future__ import annotations

from typing import Any

from irl_extproc.codecs.anthropic_messages import AnthropicMessages
from irl_extproc.codecs.base import encode_json
from irl_extproc.conversation import Source, Usage
from irl_extproc.streaming.events import Parsed, TextField, integer, json_object
from irl_extproc.streaming.sse import SseEvent, encode_event

_ERRORS = AnthropicMessages()
# delta type → (the delta's text key, what the text is)
_DELTAS: dict[str, tuple[str, Source]] = {
    "text_delta": ("text", "assistant"),
    "thinking_delta": ("thinking", "assistant"),
    "input_json_delta": ("partial_json", "tool_call"),
}


class AnthropicMessagesStream:
    name = "anthropic-messages"
    summaries = False

    def __init__(self) -> None:
        self._usage = Usage()

    def parse(self, event: SseEvent) -> Parsed:
        if event.data is None:
            return Parsed()
        document = json_object(event.data)
        parsed = Parsed(document)
        kind = document.get("type")
        index = integer(document.get("index"))
        if kind == "content_block_delta" and index is not None:
            parsed.fields = self._delta(index, document.get("delta"))
        elif kind == "content_block_start" and index is not None:
            block = document.get("content_block")
            parsed.fields = self._block_start(index, block)
            if isinstance(block, dict) and block.get("type") == "tool_use" and isinstance(block.get("name"), str):
                parsed.tools[(index,)] = block["name"]
        elif kind == "content_block_stop" and index is not None:
            parsed.closes = ((index,),)
        elif kind == "message_start" and isinstance(document.get("message"), dict):
            parsed.usage = self._merge_usage(document["message"].get("usage"))
        elif kind == "message_delta":
            parsed.usage = self._merge_usage(document.get("usage"))
        elif kind == "message_stop":
            parsed.terminal = True
        return parsed

    @staticmethod
    def _delta(index: int, delta: Any) -> list[TextField]:
        if not isinstance(delta, dict) or delta.get("type") not in _DELTAS:
            return []
        key, source = _DELTAS[delta["type"]]
        text = delta.get(key)
        return [TextField((index,), source, ("delta", key), text)] if isinstance(text, str) and text else []

    @staticmethod
    def _block_start(index: int, block: Any) -> list[TextField]:
        """A text or thinking block may start with text: the first delta of its channel."""
        if not isinstance(block, dict) or block.get("type") not in ("text", "thinking"):
            return []
        key = block["type"]
        text = block.get(key)
        if not isinstance(text, str) or not text:
            return []
        return [TextField((index,), "assistant", ("content_block", key), text)]

    def _merge_usage(self, usage: Any) -> Usage | None:
        """message_start carries the input tokens, message_delta the (cumulative) output tokens."""
        if not isinstance(usage, dict):
            return None
        for name in ("input_tokens", "output_tokens"):
            value = integer(usage.get(name))
            if value is not None:
                setattr(self._usage, name, value)
        return Usage(self._usage.input_tokens, self._usage.output_tokens)

    def error_event(self, status: int, message: str, code: str) -> bytes:
        return encode_event(encode_json(_ERRORS.error_body(status, message, code)), "error")
