"""Traces: IRL's spans join Envoy's trace through the ext_proc stream's ``traceparent``.

With Envoy's OpenTelemetry tracer configured, Envoy sends a W3C ``traceparent`` in the
gRPC metadata of each ext_proc stream. ``extract`` reads it; ``Tracer.stream`` starts
IRL's span for the stream as its child (``StreamTrace``). The stream records its phases
and invariant evaluations as plain tuples; when it ends, the exporter turns them into
spans and OTLP bytes (``otlp_wire``), ``ENCODE_BATCH`` streams at a time, and ships them
in batches from a task on the server's event loop (``OtlpTraceExporter``).

Cost: with tracing off, or on a stream Envoy did not sample, every call is a no-op on a
shared object. Attribute values are never raw content: callers pass names, actions,
scores and counts only.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from irl_extproc.invariants.base import Finding
from irl_extproc.telemetry import otlp_wire
from irl_extproc.telemetry.otlp_client import TRACE_EXPORT, BatchExporter, OtlpClient
from irl_extproc.telemetry.otlp_wire import Attribute, AttributeValue
from irl_extproc.telemetry.record import PhaseRecord, strongest_action

SCOPE_NAME = "irl_extproc"
STREAM_SPAN_NAME = "envoy.service.ext_proc.v3.ExternalProcessor/Process"  # rpc semconv: service/method

Metadata = Iterable[tuple[str, str | bytes]]
SpanSink = Callable[["StreamTrace"], None]  # receives each stream's trace when the stream ends
ENCODE_BATCH = 64  # finished traces encoded together, so the encoder runs hot in the CPU's caches

# GenAI semantic-convention names of what a stream learns of its model and usage.
GEN_AI = {
    "operation": "gen_ai.operation.name",
    "provider": "gen_ai.provider.name",
    "request_model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
}

_random = random.Random()  # noqa: S311 - span ids need uniqueness, not secrecy


class Parent(NamedTuple):
    """The remote span IRL's stream span is a child of (Envoy's ext_proc client span)."""

    trace_id: str  # 32 lowercase hex digits, as in ``traceparent`` (bytes only when encoded, in a batch)
    span_id: str  # 16 lowercase hex digits
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
    return Parent(trace_id, span_id, bool(int(flags, 16) & 1), trace_state)


def extract(metadata: Metadata | None) -> Parent | None:
    """The ``traceparent``/``tracestate`` of an ext_proc stream's invocation metadata."""
    traceparent = trace_state = ""
    for key, value in metadata or ():
        if key == "traceparent":
            traceparent = value if isinstance(value, str) else value.decode("ascii", "replace")
        elif key == "tracestate":
            trace_state = value if isinstance(value, str) else value.decode("ascii", "replace")
    return parse_traceparent(traceparent, trace_state) if traceparent else None


class StreamTrace:
    """The trace of one sampled ext_proc stream. It is the stream span itself (``set``, ``fail``);
    ``finish`` ends it and hands it to the sink.

    The stream's phases are kept as it recorded them (``record.PhaseRecord``, appended to
    ``phases``) and become spans, one per phase with a child per invariant evaluation, only in
    ``encode``, which the exporter calls a batch of streams at a time.
    """

    __slots__ = (
        "_sink",
        "attributes",
        "clock_offset",
        "end_ns",
        "error",
        "fixed",
        "gen_ai",
        "parent_hex",
        "phases",
        "span_id",
        "start_ns",
        "trace_id_hex",
        "trace_state",
    )

    def __init__(self, sink: SpanSink, parent: Parent | None, attributes: Iterable[Attribute] = ()) -> None:
        """``attributes``: the stream span's, known at its start and repeating (service, route, ...)."""
        self._sink = sink
        # One clock for the whole stream: span times are perf_counter readings moved to the epoch
        # (``time.perf_counter_ns() + clock_offset``).
        self.clock_offset = time.time_ns() - time.perf_counter_ns()
        # Span ids: a random base per stream plus a counter in the 16 low bits (never zero). The
        # stream span takes the first, the phases and evaluations the next in order (``encode``).
        self.span_id = _random.getrandbits(64) & ~0xFFFF | 1
        if parent is None:
            self.trace_id_hex, self.parent_hex, self.trace_state = f"{_random.getrandbits(128) or 1:032x}", "", ""
        else:
            self.trace_id_hex, self.parent_hex, _, self.trace_state = parent
        self.start_ns = time.perf_counter_ns() + self.clock_offset
        self.end_ns = 0
        self.fixed = tuple(attributes)
        self.attributes: list[Attribute] = []
        self.error: str | None = None
        self.gen_ai: dict[str, AttributeValue] = {}  # model, provider, tokens, operation (``GEN_AI`` keys)
        self.phases: list[PhaseRecord] = []

    def set(self, key: str, value: AttributeValue) -> None:
        """An attribute of the stream span."""
        self.attributes.append((key, value))

    def fail(self, error_type: str) -> None:
        """Mark the stream span as failed; ``error_type`` is a code or class name, never a message."""
        self.error = error_type
        self.attributes.append(("error.type", error_type))

    @property
    def span_id_hex(self) -> str:
        return otlp_wire.span_id_bytes(self.span_id).hex()

    def finish(self) -> None:
        self.end_ns = time.perf_counter_ns() + self.clock_offset
        self._sink(self)

    def encode(self) -> bytes:
        """Every span of the stream as OTLP bytes: per phase, its invariants' spans and its own (a
        span's duration is its own), then the stream span."""
        writer = otlp_wire.SpanWriter(bytes.fromhex(self.trace_id_hex), self.trace_state)
        plain, span = writer.plain, writer.span
        offset, stream_id = self.clock_offset, self.span_id
        next_id = stream_id + 1
        for name, start, end, verdict, enforced, error, evaluations, _ in self.phases:
            phase_id = next_id
            next_id += 1
            for invariant, findings, check_start, check_end, failure in evaluations:
                if findings or failure is not None:
                    action = "error" if failure is not None else strongest_action(findings)
                    header = _INVARIANT_HEADERS.get((invariant, action)) or _invariant_header(invariant, action)
                    found = _finding_attributes(findings, failure)
                    span(
                        next_id,
                        phase_id,
                        check_start + offset,
                        check_end + offset,
                        header,
                        attributes=found,
                        error=failure,
                    )
                else:
                    header = _PASSED.get(invariant) or _invariant_header(invariant, "pass")
                    plain(header, next_id, phase_id, check_start + offset, check_end + offset)
                next_id += 1
            header = _PHASE_HEADERS.get((name, verdict, enforced)) or _phase_header(name, verdict, enforced)
            if error is None:
                plain(header, phase_id, stream_id, start + offset, end + offset)
            else:
                failed = (("error.type", error),)
                span(phase_id, stream_id, start + offset, end + offset, header, attributes=failed, error=error)
        attributes = self.attributes
        if self.gen_ai:
            attributes += [(GEN_AI[key], value) for key, value in self.gen_ai.items()]
        parent_id = int.from_bytes(bytes.fromhex(self.parent_hex), "little") if self.parent_hex else None
        header = otlp_wire.span_header(STREAM_SPAN_NAME, otlp_wire.KIND_SERVER, self.fixed)
        span(stream_id, parent_id, self.start_ns, self.end_ns, header, attributes=attributes, error=self.error)
        return writer.encoded()


def _score(finding: Finding) -> float:
    return finding.score


def _finding_attributes(findings: Sequence[Finding], error: str | None) -> list[Attribute]:
    """An invariant span's attributes beyond its name and action: the top finding, the error type."""
    attributes: list[Attribute] = []
    if findings:
        top = max(findings, key=_score)
        attributes += [
            ("irl.findings", len(findings)),
            ("irl.score", float(top.score)),
            ("irl.rule", top.rule),
            ("irl.layer", top.layer),
        ]
    if error is not None:
        attributes.append(("error.type", error))
    return attributes


# Span headers (name, kind and the attributes that repeat) by invariant and action, and by phase
# and decision: a handful each, named by the policy.
_INVARIANT_HEADERS: dict[tuple[str, str], bytes] = {}
_PASSED: dict[str, bytes] = {}  # the "pass" headers by invariant alone: the common case, no key tuple
_PHASE_HEADERS: dict[tuple[str, str | None, bool], bytes] = {}


def _invariant_header(name: str, action: str) -> bytes:
    attributes = (("irl.invariant", name), ("irl.action", action))
    header = _INVARIANT_HEADERS[(name, action)] = otlp_wire.span_header(
        "irl.invariant." + name, otlp_wire.KIND_INTERNAL, attributes
    )
    if action == "pass":
        _PASSED[name] = header
    return header


def _phase_header(phase: str, verdict: str | None, enforced: bool) -> bytes:
    decided: tuple[Attribute, ...] = ()
    if verdict is not None:
        decided = (("irl.verdict", verdict), ("irl.enforced", enforced))
    header = _PHASE_HEADERS[(phase, verdict, enforced)] = otlp_wire.span_header(
        "irl." + phase, otlp_wire.KIND_INTERNAL, decided
    )
    return header


class UnsampledTrace:
    """A stream nobody records (tracing off, or Envoy did not sample it): ids only."""

    __slots__ = ("trace_id_hex",)
    span_id_hex = ""

    def __init__(self, parent: Parent | None) -> None:
        self.trace_id_hex = parent.trace_id if parent else ""

    def set(self, key: str, value: AttributeValue) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass

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
        self._finished: list[StreamTrace] = []

    def submit(self, trace: StreamTrace) -> None:
        finished = self._finished
        finished.append(trace)
        if len(finished) >= ENCODE_BATCH:
            self._encode_finished()

    def _encode_finished(self) -> None:
        finished, self._finished = self._finished, []
        submit = self._batcher.submit
        for trace in finished:
            submit(trace.encode())

    def start(self) -> None:
        self._batcher.start()

    async def _send(self, batch: list[bytes]) -> bool:
        request = otlp_wire.export_trace_request(self._resource, self._scope, b"".join(batch))
        return await self._client.export(TRACE_EXPORT, request)

    async def aclose(self) -> None:
        await self._batcher.aclose()
        await self._client.close()
