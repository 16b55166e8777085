"""The hold-back window: text reaches the client only once no invariant can still change it.

Every text-carrying event is queued; its text is appended to its channel. A check runs
the response invariants over each channel's held text (plus a little released text as
left context) and settles a *safe* offset per channel:

- ``window``: up to the channel's *hold point*, the earliest offset from which some
  invariant's verdict could still change with more text (each invariant's ``hold``: the
  start of a tail that could still grow into a match; an invariant without one holds
  everything), but never more than the last ``window_chars`` characters;
- ``flush`` (the time bound expired): everything that waited long enough;
- a closed channel (its choice/block ended) or the end of the stream: everything.

The safe offset never cuts a redaction (or a restorable placeholder) in two: it moves
back to the span's start. Events then leave the queue in their original order, each as
it came (byte for byte) or re-encoded with its rewritten text; an event whose text is
not yet safe holds back every event behind it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from irl_extproc.conversation import Conversation, Segment, Source
from irl_extproc.invariants.base import Finding
from irl_extproc.streaming.events import ChannelKey, Parsed, TextField, rewrite
from irl_extproc.streaming.restore import Restorer, open_placeholder, placeholder_spans
from irl_extproc.streaming.sse import SseError, SseEvent

How = Literal["window", "flush", "final"]


class StreamTooLarge(SseError):
    code = "irl_body_too_large"


@dataclass(slots=True)
class Span:
    """Raw channel text [start, end) that the client gets as ``replacement``."""

    start: int
    end: int
    replacement: str


def non_overlapping(spans: Iterable[Span]) -> list[Span]:
    """The earliest (then longest) span wins where spans overlap."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept


@dataclass(slots=True)
class Channel:
    """One stream of text (a choice's content, a content block, a tool call's arguments)."""

    key: ChannelKey
    source: Source
    name: str | None = None  # the tool's name, for tool-call arguments
    received: int = 0
    released: int = 0
    safe: int = 0
    checked: int = 0  # ``received`` at the last check
    held: str = ""  # raw text [released, received)
    context: str = ""  # raw text just before ``released``: left context for the detectors
    closed: bool = False
    spans: list[Span] = field(default_factory=list)
    emitted: list[str] | None = None  # what the client got (for events that repeat whole texts)
    whole: list[str] | None = None  # every raw delta (for whole-response invariants)

    def append(self, text: str) -> int:
        self.held += text
        self.received += len(text)
        if self.whole is not None:
            self.whole.append(text)
        return self.received

    def take(self, end: int, context_chars: int) -> str:
        """Release raw [released, end) and return it rewritten by the spans."""
        start, raw = self.released, self.held[: end - self.released]
        out: list[str] = []
        position = start
        for span in self.spans:
            if span.end <= start or span.start >= end:
                continue
            if span.start >= start:  # a span already cut at an earlier event only drops text here
                out += (raw[position - start : span.start - start], span.replacement)
            position = min(span.end, end)
        out.append(raw[position - start :])
        self.held = self.held[end - start :]
        self.context = (self.context + raw)[-context_chars:] if context_chars else ""
        self.released = end
        self.spans = [s for s in self.spans if s.end > end]
        text = "".join(out)
        if self.emitted is not None:
            self.emitted.append(text)
        return text


@dataclass(slots=True)
class Placed:
    channel: Channel
    end: int  # where this field's text ends in the channel
    whole: bool  # rendered as everything the client got on the channel so far


@dataclass(slots=True)
class Entry:
    event: SseEvent
    parsed: Parsed
    placed: list[Placed]
    arrived: float

    def ready(self) -> bool:
        return all(p.whole or p.end <= p.channel.safe for p in self.placed)


class HoldBack:
    def __init__(
        self,
        *,
        window_chars: int | None,  # None: hold everything until the end (whole-response buffering)
        limit_bytes: int,
        keep_emitted: bool = False,
        keep_whole: bool = False,
        restore: Restorer | None = None,
    ) -> None:
        self.window = window_chars
        self.context_chars = min(window_chars, 64) if window_chars else 0
        self.limit_bytes = limit_bytes
        self.keep_emitted, self.keep_whole = keep_emitted, keep_whole
        self.restore = restore
        self.channels: dict[ChannelKey, Channel] = {}
        self.queue: deque[Entry] = deque()
        self.queued_bytes = 0
        self.kept_chars = 0
        self._checked: list[tuple[Channel, int]] = []  # per segment of the last conversation: channel, offset
        self._reported: set[tuple[ChannelKey, int, str]] = set()

    # -- intake ------------------------------------------------------------------------------

    def add(self, event: SseEvent, parsed: Parsed, now: float) -> None:
        """Queue one event; refused (and not queued) once the stream would hold over the limit."""
        kept = sum(len(f.text) for f in parsed.fields) if self.keep_emitted or self.keep_whole else 0
        if self.queued_bytes + len(event.raw) > self.limit_bytes or self.kept_chars + kept > self.limit_bytes:
            raise StreamTooLarge(f"the stream holds more than {self.limit_bytes} bytes")
        self.kept_chars += kept
        self.queued_bytes += len(event.raw)
        for key, name in parsed.tools.items():
            self._channel(key, "tool_call").name = name
        placed = [self._place(f) for f in parsed.fields]
        for prefix in parsed.closes:
            for channel in self.channels.values():
                if channel.key[: len(prefix)] == prefix:
                    channel.closed = True
        self.queue.append(Entry(event, parsed, placed, now))

    def _channel(self, key: ChannelKey, source: Source) -> Channel:
        channel = self.channels.get(key)
        if channel is None:
            channel = self.channels[key] = Channel(
                key, source, emitted=[] if self.keep_emitted else None, whole=[] if self.keep_whole else None
            )
        return channel

    def _place(self, text_field: TextField) -> Placed:
        channel = self._channel(text_field.channel, text_field.source)
        if text_field.whole and (channel.received or not text_field.text):
            return Placed(channel, channel.received, whole=True)
        # A delta, or a whole text on a channel without deltas (it is new text either way).
        return Placed(channel, channel.append(text_field.text), whole=False)

    # -- checking ----------------------------------------------------------------------------

    @property
    def oldest(self) -> float | None:
        """When the text at the head of the queue arrived (None: nothing is held)."""
        return self.queue[0].arrived if self.queue else None

    def due(self) -> bool:
        """Whether a check now could release something: text arrived since the last one, or a
        channel closed."""
        if self.window is None:  # buffering: nothing leaves before the end
            return False
        return any(
            channel.safe < channel.received and (channel.closed or channel.checked < channel.received)
            for channel in self.channels.values()
        )

    def conversation(self, api_format: str) -> Conversation:
        """What the invariants check now: each channel's held text, after its left context."""
        self._checked = []
        segments: list[Segment] = []
        for channel in self.channels.values():
            if channel.released < channel.received:
                text = channel.context + channel.held
                segments.append(Segment(channel.source, text, ("stream", len(segments)), channel.name))
                self._checked.append((channel, channel.released - len(channel.context)))
                channel.checked = channel.received
        return Conversation("response", api_format, body={}, segments=segments)

    def whole_conversation(self, api_format: str) -> Conversation:
        """Every channel's complete raw text (``keep_whole``), for whole-response invariants."""
        segments = [
            Segment(c.source, "".join(c.whole or ()), ("stream", i), c.name)
            for i, c in enumerate(self.channels.values())
        ]
        return Conversation("response", api_format, body={}, segments=segments)

    def aged_ends(self, cutoff: float) -> dict[ChannelKey, int]:
        """Per channel, where the text that arrived at or before ``cutoff`` ends."""
        ends: dict[ChannelKey, int] = {}
        for entry in self.queue:
            if entry.arrived > cutoff:
                break
            for placed in entry.placed:
                if not placed.whole:
                    ends[placed.channel.key] = placed.end
        return ends

    def settle(
        self,
        findings: tuple[Finding, ...],
        *,
        enforced: bool,
        how: How,
        holds: list[int] | None = None,
        aged: dict[ChannelKey, int] | None = None,
    ) -> list[Finding]:
        """Apply the last check to each checked channel: its redactions, and how far it is safe.

        ``holds``: per segment of the last conversation, its hold point (an offset into the
        segment's text; None: hold the whole window). ``flush`` releases up to ``aged`` (text
        past the time bound). Returns the findings that lie in text now settled and were not
        reported before.
        """
        by_segment: dict[int, list[Finding]] = {}
        for finding in findings:
            if finding.segment is not None and finding.start is not None and finding.end is not None:
                by_segment.setdefault(finding.segment, []).append(finding)
        settled: list[Finding] = []
        for index, (channel, offset) in enumerate(self._checked):
            final = how == "final" or (channel.closed and self.window is not None)
            if final:
                target = channel.received
            elif self.window is None:  # buffering: nothing leaves before the end
                target = channel.released
            else:
                held_from = offset + holds[index] if holds is not None else channel.released
                target = max(channel.released, channel.received - self.window, held_from)
            if how == "flush" and aged is not None:
                target = max(target, aged.get(channel.key, target))
            found = by_segment.get(index, [])
            # A span already cut by a released event keeps its end: the check may no longer see it whole.
            spans = [s for s in channel.spans if s.start < channel.released] + [
                Span(offset + (f.start or 0), offset + (f.end or 0), f.replacement)
                for f in found
                if enforced and f.action == "redact" and f.replacement is not None
            ]
            if self.restore is not None:
                text = channel.context + channel.held
                spans += [Span(offset + s, offset + e, o) for s, e, o in placeholder_spans(text, self.restore)]
            spans = [s for s in non_overlapping(spans) if s.end > channel.released]
            for span in reversed(spans):  # never release a part of a span
                if span.start < target < span.end:
                    target = max(channel.released, span.start)
            if not final and self.restore is not None:
                cut = open_placeholder(channel.held[: target - channel.released])
                target = target if cut is None else channel.released + cut
            channel.spans = [s for s in spans if s.start < target]
            channel.safe = target
            settled += self._newly_settled(channel, offset, found, target)
        self._checked = []
        return settled

    def replacements(self) -> set[str]:
        """The replacement texts of every span the client will get."""
        return {span.replacement for channel in self.channels.values() for span in channel.spans}

    def _newly_settled(self, channel: Channel, offset: int, found: list[Finding], safe: int) -> list[Finding]:
        fresh = []
        for finding in found:
            key = (channel.key, offset + (finding.start or 0), finding.rule)
            if offset + (finding.end or 0) <= safe and key not in self._reported:
                self._reported.add(key)
                fresh.append(finding)
        return fresh

    # -- output ------------------------------------------------------------------------------

    def release(self, *, until_terminal: bool = False) -> bytes:
        """The events now safe to send, in order, rewritten where their text changed
        (``until_terminal``: not the stream's regular last event, nor what follows it)."""
        out = []
        while self.queue and self.queue[0].ready():
            if until_terminal and self.queue[0].parsed.terminal:
                break
            entry = self.queue.popleft()
            self.queued_bytes -= len(entry.event.raw)
            out.append(self._render(entry))
        return b"".join(out)

    def _render(self, entry: Entry) -> bytes:
        if not entry.placed:
            return entry.event.raw
        texts = [
            "".join(p.channel.emitted or ()) if p.whole else p.channel.take(p.end, self.context_chars)
            for p in entry.placed
        ]
        if all(text == f.text for text, f in zip(texts, entry.parsed.fields, strict=True)):
            return entry.event.raw
        return rewrite(entry.event, entry.parsed, texts)

    def drop(self) -> bytes:
        """Empty the queue; the raw bytes of what it held (only ever sent under fail_open)."""
        raw = b"".join(e.event.raw for e in self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        return raw
