"""What a stream codec reads out of one provider event, and what every codec shares.

A codec turns an ``SseEvent`` into ``Parsed``: the text it carries (``TextField``s, each
on a *channel*: one choice's content, one content block, one tool call's arguments),
the channels it ends, token usage, and whether it is the stream's regular last event.
It also writes the provider's own in-band error event. Re-encoding a rewritten event is
the same for all of them (``rewrite``): the text is set back at its JSON path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from irl_extproc.codecs.base import encode_json, set_at
from irl_extproc.conversation import JsonPath, Source, Usage
from irl_extproc.streaming.sse import SseError, SseEvent, encode_event

ChannelKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class TextField:
    channel: ChannelKey
    source: Source
    path: JsonPath  # where the text lives in the event's JSON document
    text: str
    whole: bool = False  # the channel's complete text (a summary event), not a delta


@dataclass(slots=True)
class Parsed:
    document: Any = None  # the event's JSON data; None when it is not JSON (``[DONE]``)
    fields: list[TextField] = field(default_factory=list)
    closes: tuple[ChannelKey, ...] = ()  # key prefixes of the channels this event ends
    tools: dict[ChannelKey, str] = field(default_factory=dict)  # tool-call channels this event names
    usage: Usage | None = None
    terminal: bool = False  # the stream's regular last event: [DONE], message_stop, response.completed


class StreamCodec(Protocol):
    """One per stream (codecs may remember e.g. the last sequence number)."""

    name: str
    summaries: bool  # events repeat whole texts (TextField.whole): the released text must be kept

    def parse(self, event: SseEvent) -> Parsed: ...

    def error_event(self, status: int, message: str, code: str) -> bytes:
        """The provider's in-band error event, which its SDK raises as an error."""
        ...


def json_object(data: str) -> dict[str, Any]:
    try:
        document = orjson.loads(data)  # 4x json's speed; refuses unpaired surrogate escapes as loads_unicode does
    except (ValueError, RecursionError):
        raise SseError("an event's data is not valid JSON") from None
    if not isinstance(document, dict):
        raise SseError("an event's data is not a JSON object")
    return document


def text_at(document: Any, path: JsonPath) -> str | None:
    """The string at ``path``, or None when the path does not lead to one."""
    target = document
    for part in path:
        if isinstance(part, int) and isinstance(target, list) and 0 <= part < len(target):
            target = target[part]
        elif isinstance(part, str) and isinstance(target, dict):
            target = target.get(part)
        else:
            return None
    return target if isinstance(target, str) else None


def items(value: Any) -> Iterable[tuple[int, dict[str, Any]]]:
    """(position, object) for the objects in a JSON list (anything else: none)."""
    if isinstance(value, list):
        yield from ((i, v) for i, v in enumerate(value) if isinstance(v, dict))


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rewrite(event: SseEvent, parsed: Parsed, texts: list[str]) -> bytes:
    """The event with each field's text replaced (in ``parsed.fields`` order)."""
    for text_field, text in zip(parsed.fields, texts, strict=True):
        set_at(parsed.document, text_field.path, text)
    return encode_event(encode_json(parsed.document), event.event)
