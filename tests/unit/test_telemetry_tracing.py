"""Trace context extraction, span trees, sampling, and export to a real OTLP receiver."""

from __future__ import annotations

import time

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from irl_extproc.invariants.base import Finding
from irl_extproc.telemetry import otlp_wire
from irl_extproc.telemetry.record import Evaluation, PhaseRecord
from irl_extproc.telemetry.tracing import (
    STREAM_SPAN_NAME,
    OtlpTraceExporter,
    StreamTrace,
    Tracer,
    UnsampledTrace,
    extract,
    parse_traceparent,
)
from tests.otlp_receiver import OtlpReceiver, otlp_receiver  # noqa: F401 - the fixture

pytestmark = pytest.mark.unit

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def spans_of(traces: list[StreamTrace]) -> list[trace_pb2.Span]:
    return [span for trace in traces for span in trace_pb2.ScopeSpans.FromString(trace.encode()).spans]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", (TRACE, PARENT, True)),
        (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT, False)),
        (f"01-{TRACE}-{PARENT}-03-future", (TRACE, PARENT, True)),  # later versions may append fields
        (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TRACE}-{PARENT}-01", None),
        (f"00-{'0' * 32}-{PARENT}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE.upper()}-{PARENT}-01", None),  # hex must be lowercase
        (f"00-{TRACE[:-1]}-{PARENT}-01", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_parse_traceparent(header: str, expected: tuple[str, str, bool] | None) -> None:
    parent = parse_traceparent(header)
    if expected is None:
        assert parent is None
    else:
        assert parent is not None
        assert (parent.trace_id, parent.span_id, parent.sampled) == expected


def test_extract_reads_grpc_metadata_as_str_or_bytes() -> None:
    metadata = [
        ("x-irl-route", "chat/v1"),
        ("traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]
    parent = extract(metadata)
    assert parent is not None
    assert parent.trace_id == TRACE
    assert parent.trace_state == "congo=t61rcWkgMzE"
    assert extract(None) is None
    assert extract([("x-irl-route", "chat/v1")]) is None


def phase(name: str, *evaluations: Evaluation, verdict: str | None = "allow", error: str | None = None) -> PhaseRecord:
    """A phase as a stream records it, starting now: 10 µs, its evaluations inside it."""
    start = time.perf_counter_ns()
    inside = [(check, found, start + begin, start + end, failure) for check, found, begin, end, failure in evaluations]
    return (name, start, start + 10_000, verdict, True, error, inside, None)


def evaluation(name: str, *findings: Finding, failure: str | None = None) -> Evaluation:
    """2 µs, its times relative to its phase's start (``phase`` places it)."""
    return (name, findings, 1_000, 3_000, failure)


PII = Finding("pii", "pii.email", "redact", "e-mail address", layer="validator", score=0.9)


@pytest.mark.parametrize("trace_state", ["", "congo=t61rcWkgMzE"])
def test_stream_span_joins_the_remote_parent_and_phases_and_invariants_nest(trace_state: str) -> None:
    exported: list[StreamTrace] = []
    tracer = Tracer(exported.append)
    trace = tracer.stream(parse_traceparent(f"00-{TRACE}-{PARENT}-01", trace_state), [("irl.route", "chat/v1")])
    assert isinstance(trace, StreamTrace)
    trace.phases.append(phase("request_headers", verdict=None))
    trace.phases.append(phase("request_body", evaluation("prompt_injection"), evaluation("pii", PII), verdict="redact"))
    trace.finish()
    assert len(exported) == 1  # one export item per stream
    spans = {s.name: s for s in spans_of(exported)}
    assert len(spans) == 5
    root, headers, body = spans[STREAM_SPAN_NAME], spans["irl.request_headers"], spans["irl.request_body"]
    passed, found = spans["irl.invariant.prompt_injection"], spans["irl.invariant.pii"]
    assert {s.trace_id.hex() for s in spans.values()} == {TRACE}
    assert {s.trace_state for s in spans.values()} == {trace_state}
    assert root.parent_span_id.hex() == PARENT
    assert root.kind == trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
    assert headers.parent_span_id == body.parent_span_id == root.span_id
    assert passed.parent_span_id == found.parent_span_id == body.span_id
    assert len({s.span_id for s in spans.values()}) == 5
    assert root.start_time_unix_nano <= body.start_time_unix_nano <= found.start_time_unix_nano
    assert found.end_time_unix_nano <= body.end_time_unix_nano
    assert found.end_time_unix_nano - found.start_time_unix_nano == 2_000  # each span's own duration
    assert attributes(body) == {"irl.verdict": "redact", "irl.enforced": True}
    assert attributes(headers) == {}
    assert attributes(passed) == {"irl.invariant": "prompt_injection", "irl.action": "pass"}
    assert attributes(found) == {
        "irl.invariant": "pii",
        "irl.action": "redact",
        "irl.findings": 1,
        "irl.score": 0.9,
        "irl.rule": "pii.email",
        "irl.layer": "validator",
    }
    assert attributes(root)["irl.route"] == "chat/v1"
    assert trace.trace_id_hex == TRACE


def attributes(span: trace_pb2.Span) -> dict[str, object]:
    values = {}
    for pair in span.attributes:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


def test_a_failure_marks_the_span_failed_with_its_type_only() -> None:
    exported: list[StreamTrace] = []
    trace = Tracer(exported.append).stream(None)
    assert isinstance(trace, StreamTrace)
    trace.phases.append(phase("request_body", evaluation("x", failure="KeyError"), verdict="error", error="irl_oops"))
    trace.finish()
    spans = {s.name: s for s in spans_of(exported)}
    for name, error in [("irl.invariant.x", "KeyError"), ("irl.request_body", "irl_oops")]:
        assert spans[name].status.code == trace_pb2.Status.StatusCode.STATUS_CODE_ERROR
        assert spans[name].status.message == error
        assert attributes(spans[name])["error.type"] == error
    assert attributes(spans["irl.invariant.x"])["irl.action"] == "error"


def test_unsampled_and_disabled_streams_record_nothing_but_keep_the_trace_id() -> None:
    exported: list[StreamTrace] = []
    unsampled = Tracer(exported.append).stream(parse_traceparent(f"00-{TRACE}-{PARENT}-00"))
    assert isinstance(unsampled, UnsampledTrace)
    assert unsampled.trace_id_hex == TRACE
    unsampled.finish()
    disabled = Tracer(None).stream(parse_traceparent(f"00-{TRACE}-{PARENT}-01"))
    assert isinstance(disabled, UnsampledTrace)
    assert disabled.trace_id_hex == TRACE
    never = Tracer(exported.append, root_sample_ratio=0.0).stream(None)
    assert isinstance(never, UnsampledTrace)
    assert exported == []


def test_a_root_trace_gets_a_fresh_trace_id() -> None:
    exported: list[StreamTrace] = []
    tracer = Tracer(exported.append)
    first, second = tracer.stream(None), tracer.stream(None)
    assert first.trace_id_hex != second.trace_id_hex
    first.finish()
    [root] = spans_of(exported)
    assert root.parent_span_id == b""


async def test_exporter_ships_spans_to_a_real_otlp_receiver(otlp_receiver: OtlpReceiver) -> None:  # noqa: F811
    resource = otlp_wire.resource([("service.name", "irl-extproc")])
    exporter = OtlpTraceExporter(otlp_receiver.endpoint, resource, interval=0.05)
    exporter.start()
    tracer = Tracer(exporter.submit)
    for _ in range(3):
        trace = tracer.stream(parse_traceparent(f"00-{TRACE}-{PARENT}-01"))
        assert isinstance(trace, StreamTrace)
        trace.phases.append(phase("request_headers", verdict=None))
        trace.finish()
    await exporter.aclose()  # ships what is queued
    received = otlp_receiver.wait_for_spans(lambda spans: len(spans) >= 6)
    assert {s.service_name for s in received} == {"irl-extproc"}
    assert sorted(s.span.name for s in received) == sorted([STREAM_SPAN_NAME, "irl.request_headers"] * 3)


async def test_exporter_counts_what_a_dead_collector_drops() -> None:
    drops: list[tuple[str, int]] = []
    resource = otlp_wire.resource([("service.name", "irl-extproc")])
    with OtlpReceiver() as receiver:
        endpoint = receiver.endpoint  # stopped again: nothing listens there now
    exporter = OtlpTraceExporter(endpoint, resource, interval=0.05, on_drop=lambda r, n: drops.append((r, n)))
    exporter.start()
    trace = Tracer(exporter.submit).stream(None)
    trace.finish()
    await exporter.aclose()
    assert drops == [("export_failed", 1)]
