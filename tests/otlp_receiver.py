"""A real OTLP/gRPC receiver for tests: the collector's TraceService and MetricsService.

It implements the services generated in ``opentelemetry-proto`` on a real gRPC server
bound to an ephemeral loopback port, so Envoy's OpenTelemetry tracer and IRL's
exporters talk to it exactly as to a collector. Tests wait on it with a deadline
(``wait_for_spans``) instead of sleeping.

    with OtlpReceiver() as receiver:
        ... point exporters at receiver.endpoint ...
        spans = receiver.wait_for_spans(lambda spans: len(spans) >= 3)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    service_name: str  # the resource's service.name: which process exported it
    span: trace_pb2.Span

    @property
    def attributes(self) -> dict[str, object]:
        return {kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
                for kv in self.span.attributes}


def _service_name(resource_attributes: object) -> str:
    for kv in resource_attributes:  # type: ignore[attr-defined]
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return ""


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.spans: list[ReceivedSpan] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{self.port}"

    # -- the services -------------------------------------------------------------------------

    def Export(self, request: object, context: grpc.ServicerContext) -> object:
        with self._changed:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                for resource_spans in request.resource_spans:
                    name = _service_name(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        self.spans.extend(ReceivedSpan(name, span) for span in scope_spans.spans)
                self._changed.notify_all()
                return trace_service_pb2.ExportTraceServiceResponse()
            assert isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest)
            self.metric_requests.append(request)
            self._changed.notify_all()
            return metrics_service_pb2.ExportMetricsServiceResponse()

    # -- waiting ------------------------------------------------------------------------------

    def wait_for_spans(self, ready: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0) -> list[ReceivedSpan]:
        """All spans received so far, once ``ready(spans)`` holds; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready(self.spans):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted({(s.service_name, s.span.name) for s in self.spans})
                    raise AssertionError(f"spans not received within {timeout}s; got {names}")
                self._changed.wait(remaining)
            return list(self.spans)

    def wait_for_metrics(self, timeout: float = 10.0) -> list[metrics_pb2.Metric]:
        """The metrics of the latest export, once one has arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.metric_requests:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no metrics received within {timeout}s")
                self._changed.wait(remaining)
            latest = self.metric_requests[-1]
        return [m for rm in latest.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A running receiver; import this fixture into a test module to use it."""
    with OtlpReceiver() as receiver:
        yield receiver
