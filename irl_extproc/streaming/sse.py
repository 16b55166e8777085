"""Incremental Server-Sent Events parsing, as the providers frame their streams.

Bytes arrive in arbitrary pieces (an event split across writes, several events in one
write). ``SseParser.feed`` returns only complete events, each with the exact bytes it
came in, so an event IRL does not change is forwarded byte for byte.

Stricter than a browser on purpose: a line that is not a comment or one of the four SSE
fields means the body is not an event stream (a JSON error under ``text/event-stream``,
say), and an unterminated event longer than the limit is refused rather than held.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Fixed, linear pattern: an SSE line ends with CRLF, LF or CR.
_LINE_END = re.compile(rb"\r\n|\r|\n")
_FIELDS = frozenset((b"data", b"event", b"id", b"retry"))


class SseError(ValueError):
    """The body cannot be read as an event stream. The message never quotes content."""

    code = "irl_stream_unreadable"


class NotEventStream(SseError):
    code = "irl_stream_not_sse"


class EventTooLong(SseError):
    code = "irl_stream_event_too_long"


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event. ``data`` is None for a block of comments/ids only."""

    event: str | None
    data: str | None
    raw: bytes


class SseParser:
    """Feed bytes, get complete events; ``finish`` says what was left unterminated."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = b""
        self._event_start = 0  # where the event being read starts in the buffer
        self._scan = 0  # where the next line starts
        self._event: bytes | None = None
        self._data: list[bytes] = []
        self._has_data = False
        self._crlf = False  # a CR was seen: lines may end with CRLF or CR too

    @property
    def pending(self) -> bytes:
        """Bytes of the event still being read (forwarded as they are when inspection stops)."""
        return self._buffer[self._event_start :]

    def feed(self, chunk: bytes, *, final: bool = False) -> list[SseEvent]:
        """Complete events in ``chunk`` and what came before; ``final``: no more bytes follow."""
        buffer = self._buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SseEvent] = []
        self._crlf = self._crlf or b"\r" in chunk
        while True:
            if self._crlf:  # any line ending; a CR at the very end may be half of a CRLF
                match = _LINE_END.search(buffer, self._scan)
                if match is None or (match.end() == len(buffer) and match.group() == b"\r" and not final):
                    break
                line_end, next_line = match.start(), match.end()
            else:  # the providers' LF-only framing: plain find
                line_end = buffer.find(b"\n", self._scan)
                if line_end < 0:
                    break
                next_line = line_end + 1
            line = buffer[self._scan : line_end]
            self._scan = next_line
            if line:
                self._field(line)
                continue
            events.append(self._dispatch(buffer[self._event_start : self._scan]))
            self._event_start = self._scan
        if len(buffer) - self._event_start > self.max_event_bytes:
            raise EventTooLong(f"an event is longer than {self.max_event_bytes} bytes")
        self._check_partial(buffer[self._scan :], final)
        if self._event_start:
            self._buffer = buffer[self._event_start :]
            self._scan -= self._event_start
            self._event_start = 0
        return events

    @property
    def cut_off(self) -> bool:
        """After the final feed: True when an event was left unterminated."""
        return bool(self.pending.strip(b"\r\n"))

    @staticmethod
    def _check_partial(line: bytes, final: bool) -> None:
        """An unterminated line must still be able to become a field (a JSON body fails at once)."""
        line = line.removesuffix(b"\r")  # a CR kept back as maybe half of a CRLF
        if not line or line.startswith(b":"):
            return
        name, colon, _ = line.partition(b":")
        if colon or final:
            if name not in _FIELDS:
                raise NotEventStream("the body is not a server-sent event stream")
        elif not any(field.startswith(name) for field in _FIELDS):
            raise NotEventStream("the body is not a server-sent event stream")

    def _field(self, line: bytes) -> None:
        if line.startswith(b":"):
            return  # a comment (keep-alive)
        name, colon, value = line.partition(b":")
        if name not in _FIELDS:
            raise NotEventStream("the body is not a server-sent event stream")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._event = value

    def _dispatch(self, raw: bytes) -> SseEvent:
        if len(raw) > self.max_event_bytes:
            raise EventTooLong(f"an event is longer than {self.max_event_bytes} bytes")
        try:
            event = self._event.decode() if self._event is not None else None
            data = b"\n".join(self._data).decode() if self._has_data else None
        except UnicodeDecodeError:
            raise NotEventStream("an event is not valid UTF-8") from None
        self._event, self._data, self._has_data = None, [], False
        return SseEvent(event, data, raw)


def encode_event(data: bytes, event: str | None = None) -> bytes:
    """One event as the providers frame it; ``data`` is one line (compact JSON)."""
    head = b"event: %b\n" % event.encode() if event is not None else b""
    return b"%bdata: %b\n\n" % (head, data)
