"""The normalized conversation every invariant sees, whatever the provider's API format.

Codecs turn a provider body into a ``Conversation``; each text ``Segment`` remembers its
JSON path in the parsed body, so a redaction is written back in place and the body's
structure stays intact (see ``codecs.base.apply_replacements``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["system", "user", "assistant", "tool_call", "tool_result", "tool_definition", "document"]
JsonPath = tuple[str | int, ...]
Direction = Literal["request", "response"]


@dataclass(slots=True)
class Segment:
    """One piece of text in the conversation and where it lives in the body."""

    source: Source
    text: str
    path: JsonPath
    name: str | None = None  # tool name, for tool calls/results/definitions


@dataclass(slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    estimated: bool = False


@dataclass(slots=True)
class Conversation:
    direction: Direction
    api_format: str
    body: Any  # the parsed JSON document, mutated in place by redactions
    segments: list[Segment] = field(default_factory=list)
    model: str | None = None
    max_tokens: int | None = None
    stream: bool = False
    usage: Usage | None = None

    def texts(self, *sources: Source) -> list[tuple[int, Segment]]:
        """Segments (with their index) from the given sources, or all when none given."""
        return [(i, s) for i, s in enumerate(self.segments) if not sources or s.source in sources]

    @property
    def char_count(self) -> int:
        return sum(len(s.text) for s in self.segments)
