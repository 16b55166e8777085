"""Send serialized OTLP export requests to a collector over gRPC, from a background thread.

Traces and metrics both go through ``OtlpClient``; ``BatchExporter`` is the thread that
batches encoded spans and ships them, so the event loop never waits on the network.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

import grpc

log = logging.getLogger("irl.telemetry")

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """``host:port``, ``http://host:port`` or ``https://host:port`` → (target, use TLS)."""
    endpoint = endpoint.strip()
    if endpoint.startswith("https://"):
        return endpoint.removeprefix("https://").rstrip("/"), True
    target = endpoint.removeprefix("http://").rstrip("/")
    if not target or "/" in target:
        raise ValueError(f"OTLP endpoint {endpoint!r}: expected host:port, e.g. 127.0.0.1:4317")
    return target, False


class OtlpClient:
    """One gRPC channel to a collector; ``export`` blocks and is meant for exporter threads."""

    def __init__(self, endpoint: str, *, timeout: float = 10.0) -> None:
        target, tls = parse_endpoint(endpoint)
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials()) if tls else grpc.insecure_channel(target)
        )
        self._calls: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._failing_since: float | None = None

    def export(self, method: str, request: bytes) -> bool:
        call = self._calls.get(method)
        if call is None:  # no serializers: the request is already wire bytes
            call = self._calls[method] = self._channel.unary_unary(method)
        try:
            call(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            if self._failing_since is None:  # log the first failure of a run, not every one
                self._failing_since = time.monotonic()
                log.warning("OTLP export to %s failed: %s", self.endpoint, exc.code())
            return False
        if self._failing_since is not None:
            log.info("OTLP export to %s recovered", self.endpoint)
            self._failing_since = None
        return True

    def close(self) -> None:
        self._channel.close()


class BatchExporter:
    """Collects encoded items and ships them in batches every ``interval`` or when full.

    ``submit`` is cheap and never blocks. Past ``max_queue`` waiting items new ones are
    dropped and counted, so a dead collector cannot grow memory without bound. Each
    counter is written by one thread only (the GIL makes single-writer ints safe).
    """

    def __init__(
        self,
        send: Callable[[list[bytes]], bool],
        *,
        interval: float = 1.0,
        max_batch: int = 512,
        max_queue: int = 8192,
        name: str = "irl-otlp-exporter",
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self._send = send
        self._on_drop = on_drop  # (reason, items): "queue_full" from submitters, "export_failed" from the thread
        self._interval = interval
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self.dropped_full = 0  # written by submitters
        self.failed = 0  # written by the exporter thread
        self.exported = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: bytes) -> None:
        queued = len(self._queue)
        if queued >= self._max_queue:
            self.dropped_full += 1
            if self._on_drop is not None:
                self._on_drop("queue_full", 1)
            return
        self._queue.append(item)
        if queued + 1 == self._max_batch:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            stopping = self._stopping
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
                if self._send(batch):
                    self.exported += len(batch)
                else:
                    self.failed += len(batch)
                    if self._on_drop is not None:
                        self._on_drop("export_failed", len(batch))
            if stopping:
                return

    def close(self, timeout: float = 5.0) -> None:
        """Ship what is queued, then stop the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
