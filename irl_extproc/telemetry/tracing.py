"""Traces: IRL's spans join Envoy's trace through the ext_proc stream's ``traceparent``.

With Envoy's OpenTelemetry tracer configured, Envoy sends a W3C ``traceparent`` in the
gRPC metadata of each ext_proc stream. ``extract`` reads it; ``Tracer.stream`` starts
IRL's span for the stream as its child, and ``StreamTrace.child`` the spans for phases
and invariant evaluations. A stream's spans are encoded to OTLP bytes together when
it ends (``otlp_wire``) and shipped in batches by a task on the server's event loop
(``OtlpTraceExporter``).

Cost: with tracing off, or on a stream Envoy did not sample, every call is a no-op on a
shared object. Attribute values are never raw content: callers pass names, actions,
scores and counts only.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from irl_extproc.telemetry import otlp_wire
from irl_extproc.telemetry.otlp_client import TRACE_EXPORT, BatchExporter, OtlpClient
from irl_extproc.telemetry.otlp_wire import Attribute, AttributeValue

SCOPE_NAME = "irl_extproc"
STREAM_SPAN_NAME = "envoy.service.ext_proc.v3.ExternalProcessor/Process"  # rpc semconv: service/method

Metadata = Iterable[tuple[str, str | bytes]]
# A stream's finished spans: (trace id, spans, trace state), the arguments of ``otlp_wire.encode_spans``.
FinishedTrace = tuple[bytes, list[otlp_wire.SpanData], str]
SpanSink = Callable[[FinishedTrace], None]  # receives each stream's spans when the stream ends
ENCODE_BATCH = 64  # finished traces encoded together, so the encoder runs hot in the CPU's caches

_random = random.Random()  # noqa: S311 - span ids need uniqueness, not secrecy


class Parent(NamedTuple):
    """The remote span IRL's stream span is a child of (Envoy's ext_proc client span)."""

    trace_id: bytes
    span_id: bytes
    sampled: bool
    trace_state: str = ""


# W3C trace context: version-traceid-parentid-flags (lowercase hex); a fixed, linear pattern.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def parse_traceparent(value: str, trace_state: str = "") -> Parent | None:
    """A W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``), or None when invalid."""
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return Parent(bytes.fromhex(trace_id), bytes.fromhex(span_id), bool(int(flags, 16) & 1), trace_state)


def extract(metadata: Metadata | None) -> Parent | None:
    """The ``traceparent``/``tracestate`` of an ext_proc stream's invocation metadata."""
    traceparent = trace_state = ""
    for key, value in metadata or ():
        if key == "traceparent":
            traceparent = value if isinstance(value, str) else value.decode("ascii", "replace")
        elif key == "tracestate":
            trace_state = value if isinstance(value, str) else value.decode("ascii", "replace")
    return parse_traceparent(traceparent, trace_state) if traceparent else None


class Span:
    """A span being recorded. ``set`` adds attributes; ``end`` hands it to its trace for export."""

    __slots__ = ("_trace", "attributes", "error", "fixed", "kind", "name", "parent_id", "span_id", "start_ns")

    def __init__(
        self, trace: StreamTrace, name: str, parent_id: int | None, kind: int, fixed: tuple[Attribute, ...] = ()
    ) -> None:
        self._trace = trace
        self.name = name
        self.span_id = trace.next_span_id()
        self.parent_id = parent_id
        self.kind = kind
        self.fixed = fixed  # attributes known at the start whose values repeat: encoded once with the name
        self.attributes: list[Attribute] = []
        self.error: str | None = None
        self.start_ns = trace.now()

    def set(self, key: str, value: AttributeValue) -> None:
        self.attributes.append((key, value))

    def fail(self, error_type: str) -> None:
        """Mark the span as failed; ``error_type`` is a code or class name, never a message."""
        self.error = error_type
        self.attributes.append(("error.type", error_type))

    def end(self) -> None:
        trace = self._trace
        header = otlp_wire.span_header(self.name, self.kind, self.fixed)
        trace.add((self.span_id, self.parent_id, self.start_ns, trace.now(), header, self.attributes, self.error))

    def __enter__(self) -> Span:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.fail(exc_type.__name__)
        self.end()


class NoopSpan:
    """Stands in for ``Span`` when nothing is recorded: every method does nothing."""

    __slots__ = ()
    span_id = 0

    def set(self, key: str, value: AttributeValue) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass

    def end(self) -> None:
        pass

    def __enter__(self) -> NoopSpan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        pass


NOOP_SPAN = NoopSpan()
AnySpan = Span | NoopSpan


class StreamTrace:
    """The spans of one ext_proc stream; ``finish`` ends the stream span and exports all in one item.

    Finished spans are kept as tuples (``add``) and encoded together when the stream ends, so
    a hot path can record a span without building an object for it.
    """

    __slots__ = ("_sink", "clock_offset", "next_id", "root", "spans", "trace_id", "trace_state")
    recording = True

    def __init__(self, sink: SpanSink, parent: Parent | None, attributes: Iterable[Attribute] = ()) -> None:
        """``attributes``: the stream span's, known at its start and repeating (service, route, ...)."""
        self._sink = sink
        # One clock for the whole stream: span times are perf_counter readings moved to the epoch
        # (``time.perf_counter_ns() + clock_offset``).
        self.clock_offset = time.time_ns() - time.perf_counter_ns()
        # Span ids: a random base per stream plus a counter in the 16 low bits (never zero).
        self.next_id = _random.getrandbits(64) & ~0xFFFF | 1
        self.trace_id = parent.trace_id if parent else (_random.getrandbits(128) or 1).to_bytes(16, "big")
        self.trace_state = parent.trace_state if parent else ""
        self.spans: list[otlp_wire.SpanData] = []
        parent_id = int.from_bytes(parent.span_id, "little") if parent else None
        self.root = Span(self, STREAM_SPAN_NAME, parent_id, otlp_wire.KIND_SERVER, tuple(attributes))

    def now(self) -> int:
        """The time in ns since the epoch, on this stream's clock."""
        return time.perf_counter_ns() + self.clock_offset

    def next_span_id(self) -> int:
        """Unique within the trace (see ``next_id``)."""
        span_id = self.next_id
        self.next_id = span_id + 1
        return span_id

    def add(self, span: otlp_wire.SpanData) -> None:
        """Record a finished span (``otlp_wire.SpanData``: times in ns since the epoch)."""
        self.spans.append(span)

    @property
    def trace_id_hex(self) -> str:
        return self.trace_id.hex()

    @property
    def span_id_hex(self) -> str:
        return otlp_wire.span_id_bytes(self.root.span_id).hex()

    def child(self, name: str, parent: AnySpan | None = None) -> AnySpan:
        parent_id = parent.span_id if isinstance(parent, Span) else self.root.span_id
        return Span(self, name, parent_id, otlp_wire.KIND_INTERNAL)

    def finish(self) -> None:
        self.root.end()
        self._sink((self.trace_id, self.spans, self.trace_state))
        self.spans = []


class UnsampledTrace:
    """A stream nobody records (tracing off, or Envoy did not sample it): ids only."""

    __slots__ = ("trace_id_hex",)
    recording = False
    span_id_hex = ""
    root = NOOP_SPAN

    def __init__(self, parent: Parent | None) -> None:
        self.trace_id_hex = parent.trace_id.hex() if parent else ""

    def child(self, name: str, parent: AnySpan | None = None) -> AnySpan:
        return NOOP_SPAN

    def finish(self) -> None:
        pass


AnyTrace = StreamTrace | UnsampledTrace


class Tracer:
    """Starts one ``StreamTrace`` per ext_proc stream, or an unsampled stand-in.

    Envoy's sampling decision (the ``traceparent`` flag) is followed; a stream without a
    parent starts a new trace with probability ``root_sample_ratio``.
    """

    def __init__(self, sink: SpanSink | None, *, root_sample_ratio: float = 1.0) -> None:
        self._sink = sink
        self._ratio = root_sample_ratio

    @property
    def enabled(self) -> bool:
        return self._sink is not None

    def stream(self, parent: Parent | None, attributes: Iterable[Attribute] = ()) -> AnyTrace:
        sink = self._sink
        if sink is None:
            return UnsampledTrace(parent)
        sampled = parent.sampled if parent else _random.random() < self._ratio
        if not sampled:
            return UnsampledTrace(parent)
        return StreamTrace(sink, parent, attributes)


class OtlpTraceExporter:
    """Ships encoded spans to an OTLP/gRPC collector (Jaeger, the OpenTelemetry Collector).

    Create and ``start`` it on the server's event loop; ``submit`` is the tracer's sink. Spans
    are encoded ``ENCODE_BATCH`` streams at a time: measured in the server, encoding each
    stream's spans as it ended cost ~3x as much CPU (cold caches between requests).
    """

    def __init__(
        self,
        endpoint: str,
        resource: resource_pb2.Resource,
        *,
        version: str = "",
        interval: float = 1.0,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self._client = OtlpClient(endpoint)
        self._resource = resource.SerializeToString()
        self._scope = common_pb2.InstrumentationScope(name=SCOPE_NAME, version=version)
        self._batcher = BatchExporter(self._send, interval=interval, on_drop=on_drop, prepare=self._encode_finished)
        self._finished: list[FinishedTrace] = []

    def submit(self, trace: FinishedTrace) -> None:
        finished = self._finished
        finished.append(trace)
        if len(finished) >= ENCODE_BATCH:
            self._encode_finished()

    def _encode_finished(self) -> None:
        finished, self._finished = self._finished, []
        submit, encode = self._batcher.submit, otlp_wire.encode_spans
        for trace_id, spans, trace_state in finished:
            submit(encode(trace_id, spans, trace_state))

    def start(self) -> None:
        self._batcher.start()

    async def _send(self, batch: list[bytes]) -> bool:
        request = otlp_wire.export_trace_request(self._resource, self._scope, b"".join(batch))
        return await self._client.export(TRACE_EXPORT, request)

    async def aclose(self) -> None:
        await self._batcher.aclose()
        await self._client.close()
