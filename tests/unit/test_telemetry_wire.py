"""OTLP spans encoded by hand decode with the official opentelemetry-proto classes."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from irl_extproc.telemetry import otlp_wire

pytestmark = pytest.mark.unit

TRACE_ID = bytes(range(16))


def decode(encoded: bytes) -> list[trace_pb2.Span]:
    return list(trace_pb2.ScopeSpans.FromString(encoded).spans)


def values(span: trace_pb2.Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:
        out[kv.key] = getattr(kv.value, kv.value.WhichOneof("value"))
    return out


def test_a_child_span_round_trips_every_field() -> None:
    encoded = otlp_wire.encode_span(
        trace_id=TRACE_ID, span_id=b"\x01" * 8, parent_span_id=b"\x02" * 8, name="irl.request_body",
        kind=otlp_wire.KIND_INTERNAL, start_ns=1_700_000_000_000_000_001, end_ns=1_700_000_000_000_900_000,
        attributes=[("irl.service", "chat"), ("irl.findings", 3), ("irl.score", 0.75), ("irl.enforced", True),
                    ("neg", -5), ("unicode", "é✓")],
        trace_state="vendor=1",
    )
    [span] = decode(encoded)
    assert span.trace_id == TRACE_ID
    assert span.span_id == b"\x01" * 8
    assert span.parent_span_id == b"\x02" * 8
    assert span.name == "irl.request_body"
    assert span.kind == trace_pb2.Span.SpanKind.SPAN_KIND_INTERNAL
    assert span.start_time_unix_nano == 1_700_000_000_000_000_001
    assert span.end_time_unix_nano == 1_700_000_000_000_900_000
    assert span.trace_state == "vendor=1"
    assert values(span) == {"irl.service": "chat", "irl.findings": 3, "irl.score": 0.75, "irl.enforced": True,
                            "neg": -5, "unicode": "é✓"}
    assert not span.HasField("status")


def test_a_root_span_has_no_parent_and_an_error_status() -> None:
    encoded = otlp_wire.encode_span(
        trace_id=TRACE_ID, span_id=b"\x03" * 8, parent_span_id=None, name="root", kind=otlp_wire.KIND_SERVER,
        start_ns=1, end_ns=2, error="irl_body_too_large",
    )
    [span] = decode(encoded)
    assert span.parent_span_id == b""
    assert span.kind == trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
    assert span.status.code == trace_pb2.Status.StatusCode.STATUS_CODE_ERROR
    assert span.status.message == "irl_body_too_large"


def test_cached_string_attributes_never_answer_for_other_types() -> None:
    first = otlp_wire.encode_attribute("k", "1")
    assert otlp_wire.encode_attribute("k", "1") == first
    for other in (1, 1.0, True):
        assert otlp_wire.encode_attribute("k", other) != first


def test_export_request_carries_resource_scope_and_spans() -> None:
    spans = b"".join(
        otlp_wire.encode_span(trace_id=TRACE_ID, span_id=bytes([i]) * 8, parent_span_id=None, name=f"s{i}",
                              kind=otlp_wire.KIND_INTERNAL, start_ns=i, end_ns=i + 1)
        for i in range(1, 4)
    )
    resource = otlp_wire.resource([("service.name", "irl-extproc")])
    scope = common_pb2.InstrumentationScope(name="irl_extproc", version="1.0")
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(
        otlp_wire.export_trace_request(resource.SerializeToString(), scope, spans)
    )
    [resource_spans] = request.resource_spans
    assert resource_spans.resource.attributes[0].value.string_value == "irl-extproc"
    [scope_spans] = resource_spans.scope_spans
    assert scope_spans.scope.name == "irl_extproc"
    assert [s.name for s in scope_spans.spans] == ["s1", "s2", "s3"]
