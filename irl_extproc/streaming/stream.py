"""One streamed (SSE) response under inspection, from the first body chunk to the last.

In FULL_DUPLEX_STREAMED mode Envoy forwards only what IRL sends back, so each chunk is
parsed, checked and held in the window (``window.py``), and whatever became safe is
sent on through ``hooks.send`` — from ``feed`` or, when the time bound expires, from a
timer. In BUFFERED mode (a hand-written Envoy config) the same logic runs over the
whole body at once and ``feed`` returns the one reply.

Every way a stream can go wrong ends it cleanly and in the provider's own format:
- a block: nothing more of the text is sent, an error event follows, the stream ends;
- a whole-response invariant failing (``append_error``): an error event replaces the
  stream's regular last event;
- a body that is not an event stream, an over-long event, a stream over the size
  limit, a stream cut off before its last event, an internal error: the route's
  ``on_error`` decides: ``fail_closed`` sends the checked text, then an error event;
  ``fail_open`` sends everything on unchanged from there, flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc.conversation import Conversation, Segment, Usage
from irl_extproc.decision import Decision, decide
from irl_extproc.engine import CompiledInvariant, CompiledRoute, evaluate
from irl_extproc.invariants.base import CheckContext, Finding
from irl_extproc.masking import drop_placeholders_since, placeholder_mark
from irl_extproc.server import responses
from irl_extproc.streaming.events import StreamCodec
from irl_extproc.streaming.restore import restorer
from irl_extproc.streaming.sse import SseError, SseEvent, SseParser
from irl_extproc.streaming.window import HoldBack, How

log = logging.getLogger("irl.streaming")

USAGE_STATE_KEY = "usage"  # context.state[USAGE_STATE_KEY]: the stream's final token Usage
_PHASE = "response_body"
_EVENTS_PER_TURN = 32
Hold = Callable[[Segment, CheckContext], int]
_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class StreamFault(SseError):
    """A stream IRL cannot vouch for; ``code`` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Blocked(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.rule)
        self.finding = finding


@dataclass(frozen=True, slots=True)
class StreamHooks:
    """What the stream needs from its ext_proc stream processor."""

    send: Callable[[ep.ProcessingResponse], Awaitable[None]]
    record: Callable[[Decision], None]  # findings in text now settled (and blocks), once each
    fault: Callable[[str, bool], None]  # (code, passed on unchecked under fail_open): log and flag
    decorate: Callable[[ep.ProcessingResponse], ep.ProcessingResponse]  # the last reply: metadata


def whole_response(invariant: CompiledInvariant) -> bool:
    """Invariants that can only judge the complete response declare ``whole_response = True``."""
    return bool(getattr(invariant.impl, "whole_response", False))


class ResponseStream:
    def __init__(
        self,
        route: CompiledRoute,
        codec: StreamCodec,
        context: CheckContext,
        hooks: StreamHooks,
        *,
        full_duplex: bool = True,
        encoding: str = "",
    ) -> None:
        sentinel = route.sentinel
        self.sentinel, self.codec, self.context, self.hooks = sentinel, codec, context, hooks
        self.full_duplex = full_duplex
        self.incremental = tuple(i for i in route.response if not whole_response(i))
        # Hold points (window.py); an invariant without ``hold`` keeps the whole window.
        holds = [getattr(i.impl, "hold", None) for i in self.incremental]
        self._holds: list[Hold] | None = None if None in holds else [h for h in holds if h is not None]
        self.whole = tuple(i for i in route.response if whole_response(i))
        buffering = bool(self.whole) and sentinel.stream_whole_response == "buffer"
        restores = any(getattr(i.config, "restore", False) for i in route.request)
        self.window = HoldBack(
            window_chars=None if buffering else sentinel.stream_window_chars,
            limit_bytes=sentinel.max_body_bytes,
            keep_emitted=codec.summaries,
            keep_whole=bool(self.whole) and not buffering,
            restore=restorer(context) if restores else None,
        )
        self.time_bound = 0.0 if buffering else sentinel.stream_window_time
        self.parser = SseParser(sentinel.max_body_bytes)
        encoding = encoding.strip().lower()
        self._inflater = zlib.decompressobj(_INFLATE_WBITS[encoding]) if encoding in _INFLATE_WBITS else None
        self.usage: Usage | None = None
        self.done = False  # the last reply was sent (or returned)
        self.passing = False  # fail_open: everything from here on goes out unchanged
        self._terminal_seen = False
        self._text_sent = False  # the client has had some text: from now on, one check per chunk
        self._whole_checked = False
        self._unqueued: deque[SseEvent] = deque()  # events read but not yet queued (forwarded under fail_open)
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._flushed_head: object | None = None
        self._collected: list[bytes] = []

    # -- entry points ------------------------------------------------------------------------

    async def feed(self, chunk: bytes, *, end_of_stream: bool, trailers: bool = False) -> ep.ProcessingResponse | None:
        """One body chunk from Envoy. Replies go out through ``hooks.send`` (full duplex) or,
        in BUFFERED mode, come back as the one reply at the end. ``trailers``: the body ended
        with trailers, whose own reply ends the stream (so no body reply says end_of_stream)."""
        async with self._lock:
            if self.done:
                return None  # after a block or a fault: what the upstream still sends is dropped
            reply = None
            for data, end in self._steps(chunk, end_of_stream):
                reply = await self._emit(data, end=end, end_of_stream=end and not trailers)
                if end:
                    break
                await asyncio.sleep(0)  # a big chunk must not starve the other streams' headers
            return reply

    def close(self) -> None:
        """The stream is over (normally, client gone, upstream gone): stop the timer, keep usage."""
        self._cancel_timer()
        if self._flush_task is not None and self._flush_task is not asyncio.current_task():
            self._flush_task.cancel()
        self.context.state[USAGE_STATE_KEY] = self.usage

    @property
    def conversation(self) -> Conversation:
        """The response as the client got it (texts only when kept), with the token usage."""
        segments = [
            Segment(c.source, "".join(c.emitted), ("stream", i), c.name)
            for i, c in enumerate(self.window.channels.values())
            if c.emitted is not None
        ]
        return Conversation("response", self.codec.name, body={}, segments=segments, stream=True, usage=self.usage)

    # -- one step: bytes in, bytes out ---------------------------------------------------------

    def _steps(self, chunk: bytes, end: bool) -> Iterator[tuple[bytes, bool]]:
        """What to send for this chunk, piece by piece (a big chunk releases text as soon as it
        is safe, not after the whole chunk), each with whether it ends the stream."""
        try:
            data = self._inflate(chunk, end)
            if self.passing:
                yield data, end
            else:
                yield from self._inspect(data, end)
        except _Blocked as blocked:
            yield self._block(blocked.finding), True
        except SseError as fault:
            yield self._fault(fault.code, str(fault), end)
        except Exception as exc:  # noqa: BLE001 - a bug becomes the policy's fail behaviour
            log.error(
                "stream internal error %s\n%s", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__))
            )
            yield self._fault("irl_internal_error", "IRL failed to inspect this stream", end)

    def _inflate(self, chunk: bytes, end: bool) -> bytes:
        if self._inflater is None:
            return chunk
        try:
            data = self._inflater.decompress(chunk, self.sentinel.max_body_bytes + 1)
        except zlib.error:
            raise StreamFault("irl_bad_encoding", "the stream is not validly compressed") from None
        if len(data) > self.sentinel.max_body_bytes or self._inflater.unconsumed_tail:
            raise StreamFault("irl_body_too_large", "a decompressed chunk exceeds the body limit")
        if end and not self._inflater.eof:
            raise StreamFault("irl_bad_encoding", "the compressed stream is truncated")
        return data

    def _inspect(self, data: bytes, end: bool) -> Iterator[tuple[bytes, bool]]:
        """Queue the chunk's events, then check once and release what became safe (a big chunk:
        every ``_EVENTS_PER_TURN`` events, letting the loop serve other streams in between).
        Until the client has any text, each text event is checked at once: time to first token."""
        now = asyncio.get_running_loop().time()
        self._unqueued = deque(self.parser.feed(data, final=end))
        since_turn = 0
        while self._unqueued:
            since_turn += 1
            if since_turn == _EVENTS_PER_TURN:
                since_turn = 0
                yield self._release(), False
            event = self._unqueued[0]
            parsed = self.codec.parse(event)
            self.window.add(event, parsed, now)
            self._unqueued.popleft()
            if parsed.usage is not None:
                self.usage = parsed.usage
            self._terminal_seen = self._terminal_seen or parsed.terminal
            if parsed.fields and not self._text_sent and self._unqueued and (released := self._release()):
                since_turn = 0
                yield released, False
        yield self._finish(end) if end or self._terminal_seen else (self._release(), False)

    def _release(self) -> bytes:
        if not self._terminal_seen and self.window.due():
            self._check("window")
        released = self.window.release()
        if released and not self._text_sent:
            self._text_sent = any(channel.released for channel in self.window.channels.values())
        return released

    def _finish(self, end: bool) -> tuple[bytes, bool]:
        """The regular last event arrived, or the body ended: check everything, release it."""
        self._check("final")
        failed = self._whole_failure()
        if failed is not None:
            return self.window.release(until_terminal=True) + self._error_event(failed), True
        out = self.window.release()
        if end and (self.parser.cut_off or not self._terminal_seen):
            more, _ = self._fault("irl_stream_truncated", "the upstream ended the stream before its last event", end)
            return out + more, True
        return out, end

    def _check(self, how: How) -> None:
        conversation = self.window.conversation(self.codec.name)
        if not conversation.segments:
            return
        invariants = self.incremental
        if how == "final" and self.window.window is None:
            invariants += self.whole  # buffering: the whole response is in the window now
        mark = placeholder_mark(self.context)
        decision = evaluate(invariants, conversation, self.context, self.sentinel.mode)
        blocking = decision.blocking
        if decision.acts and blocking is not None:
            self.hooks.record(decide([blocking], self.sentinel.mode))
            raise _Blocked(blocking)
        aged = None
        if how == "flush":
            aged = self.window.aged_ends(asyncio.get_running_loop().time() - self.time_bound)
        holds = self._hold_points(conversation) if how != "final" else None
        settled = self.window.settle(decision.findings, enforced=decision.enforced, how=how, holds=holds, aged=aged)
        drop_placeholders_since(self.context, mark, self.window.replacements())
        if settled:
            self.hooks.record(decide(settled, self.sentinel.mode))

    def _hold_points(self, conversation: Conversation) -> list[int] | None:
        """Per segment, the earliest offset some invariant still needs held (None: the window)."""
        if self._holds is None:
            return None
        return [
            min((hold(segment, self.context) for hold in self._holds), default=len(segment.text))
            for segment in conversation.segments
        ]

    def _whole_failure(self) -> Finding | None:
        """``append_error``: what the whole-response invariants say of the complete text, once."""
        if not self.window.keep_whole or self._whole_checked:
            return None
        self._whole_checked = True
        conversation = self.window.whole_conversation(self.codec.name)
        decision = evaluate(self.whole, conversation, self.context, self.sentinel.mode)
        if decision.findings:
            self.hooks.record(decision)
        if not decision.acts:
            return None
        return decision.blocking or decision.findings[0]  # text already sent cannot be redacted

    # -- endings -----------------------------------------------------------------------------

    def _block(self, finding: Finding) -> bytes:
        self.window.drop()
        return self._error_event(finding)

    def _error_event(self, finding: Finding) -> bytes:
        status = finding.status or self.sentinel.block_status
        message = f"blocked by IRL policy: {finding.invariant} ({finding.rule})"
        return self.codec.error_event(status, message, f"irl_{finding.invariant}")

    def _fault(self, code: str, message: str, end: bool) -> tuple[bytes, bool]:
        fail_open = self.sentinel.on_error == "fail_open"
        self.hooks.fault(code, fail_open)
        self._cancel_timer()
        held = self.window.drop() + b"".join(e.raw for e in self._unqueued) + self.parser.pending
        self._unqueued.clear()
        if fail_open:
            self.passing = True
            return held, end
        status = 500 if code == "irl_internal_error" else 502
        return self.codec.error_event(status, message, code), True

    # -- output ------------------------------------------------------------------------------

    async def _emit(self, data: bytes, *, end: bool, end_of_stream: bool) -> ep.ProcessingResponse | None:
        """Send (full duplex) or collect (buffered) ``data``; ``end``: nothing follows it."""
        if end:
            self.done = True
            self.close()
        else:
            self._arm_timer()
        if not self.full_duplex:
            self._collected.append(data)
            if not end:
                return None
            body = b"".join(self._collected)
            reply = responses.mutate(_PHASE, set_headers={"content-length": str(len(body))}, body=body)
            return self.hooks.decorate(reply)
        if data or end_of_stream:
            reply = responses.streamed_body(_PHASE, data, end_of_stream=end_of_stream)
            await self.hooks.send(self.hooks.decorate(reply) if end else reply)
        return None

    # -- the time bound ----------------------------------------------------------------------

    def _arm_timer(self) -> None:
        """Lazily: one timer at a time; when it fires it looks at what is held then."""
        if self.done or self.passing or not self.time_bound or not self.full_duplex:
            self._cancel_timer()
        elif self._timer is None and self.window.queue and self.window.queue[0] is not self._flushed_head:
            self._timer = asyncio.get_running_loop().call_at(
                self.window.queue[0].arrived + self.time_bound, self._on_timer
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        queue = self.window.queue
        if self.done or self.passing or not queue or queue[0] is self._flushed_head:
            return  # nothing held, or held only because a flush could not release it (an open placeholder)
        loop = asyncio.get_running_loop()
        deadline = queue[0].arrived + self.time_bound
        if deadline > loop.time():  # what it was set for has left; the text now at the head is younger
            self._timer = loop.call_at(deadline, self._on_timer)
        else:
            self._flush_task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        async with self._lock:
            if self.done or self.passing or not self.window.queue:
                return
            try:
                self._check("flush")
                data, end = self.window.release(), False
            except _Blocked as blocked:
                data, end = self._block(blocked.finding), True
            except Exception as exc:  # noqa: BLE001 - same fail behaviour as a chunk
                log.error("stream flush error %s", type(exc).__name__)
                data, end = self._fault("irl_internal_error", "IRL failed to inspect this stream", False)
            self._flushed_head = self.window.queue[0] if self.window.queue else None
            with contextlib.suppress(Exception):  # the ext_proc stream may be gone (client left)
                await self._emit(data, end=end, end_of_stream=end)
