"""Process-wide telemetry: options from the CLI, and the ``Telemetry`` hub the server holds.

    telemetry = Telemetry(options_from_args(args))
    await telemetry.start()               # opens (and repairs) the audit chain, starts exporters
    ...  telemetry.stream(metadata, service=..., route=..., policy_version=..., mode=...)
    await telemetry.aclose()              # flushes spans, metrics and the audit trail

With default options everything is off and ``stream`` costs a few attribute look-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from importlib import metadata as package_metadata
from pathlib import Path

from irl_extproc.telemetry import otlp_wire
from irl_extproc.telemetry.audit import DEFAULT_MAX_FILE_BYTES, AnyRecord, AuditLog, Receipt
from irl_extproc.telemetry.metrics import Metrics, OtlpMetricsExporter, serve_prometheus
from irl_extproc.telemetry.stream import StreamTelemetry
from irl_extproc.telemetry.tracing import Metadata, OtlpTraceExporter, Tracer

log = logging.getLogger("irl.telemetry")

SERVICE_NAME = "irl-extproc"
MAX_AUDIT_BACKLOG = 10_000  # past this many queued records, callers wait for durability (back-pressure)
# Without --audit-wait nobody waits on a sync: records are written at most every 20 ms (a crash
# or kill -9 of IRL loses only what was not written yet) and synced every --audit-sync-ms (a
# crash of the machine loses what was not synced yet). An fdatasync costs ~0.1-0.3 ms of CPU
# here: fifty a second were ~10 % of a worker's audit-on CPU, five a second are noise.
AUDIT_COMMIT_DELAY = 0.02
AUDIT_SYNC_MS = 200


@dataclass(frozen=True)
class TelemetryOptions:
    otlp_endpoint: str | None = None  # OTLP/gRPC collector for traces and metrics, e.g. 127.0.0.1:4317
    trace_sample_ratio: float = 1.0  # for streams that arrive without a traceparent (Envoy's flag rules otherwise)
    metrics_port: int | None = None  # Prometheus /metrics; 0 picks a free port
    metrics_address: str = "0.0.0.0"
    metrics_interval: float = 10.0  # seconds between OTLP metric pushes
    audit_dir: Path | None = None
    audit_chain: str = "audit"
    audit_max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    audit_wait: bool = False  # answer Envoy only once the decision's record is durable
    audit_sync_ms: int = AUDIT_SYNC_MS  # without audit_wait: sync written records at most this late

    def for_worker(self, index: int) -> TelemetryOptions:
        """Options for worker ``index`` of several: its own metrics port and audit chain."""
        return replace(
            self,
            metrics_port=None if self.metrics_port is None else self.metrics_port + index,
            audit_chain=f"{self.audit_chain}-{index}",
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The telemetry options of ``irl serve``."""
    group = parser.add_argument_group("telemetry")
    group.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        help="OTLP/gRPC collector for traces and metrics, e.g. 127.0.0.1:4317 "
        "(default: $OTEL_EXPORTER_OTLP_ENDPOINT; off when unset)",
    )
    group.add_argument(
        "--trace-sample-ratio",
        type=_ratio,
        default=1.0,
        help="share of streams without a traceparent that start a trace (default 1.0); "
        "streams from a tracing Envoy follow Envoy's sampling decision",
    )
    group.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this port (worker i: port+i); off when unset",
    )
    group.add_argument("--metrics-address", default="0.0.0.0", help="address of the /metrics endpoint")
    group.add_argument(
        "--audit-dir", type=Path, default=None, help="write the hash-chained decision log here; off when unset"
    )
    group.add_argument(
        "--audit-chain", default="audit", help="chain (file name prefix) in --audit-dir; worker i writes '<chain>-<i>'"
    )
    group.add_argument(
        "--audit-max-file-mb",
        type=int,
        default=DEFAULT_MAX_FILE_BYTES >> 20,
        help="rotate audit files past this size (the chain continues)",
    )
    group.add_argument(
        "--audit-wait",
        action="store_true",
        help="answer Envoy only after the decision's audit record is on disk (adds fsync latency)",
    )
    group.add_argument(
        "--audit-sync-ms",
        type=_milliseconds,
        default=AUDIT_SYNC_MS,
        help="without --audit-wait: sync written records to disk at most this many ms later "
        f"(default {AUDIT_SYNC_MS}; 0 syncs every write)",
    )


def options_from_args(args: argparse.Namespace, *, policy_otlp_endpoint: str | None = None) -> TelemetryOptions:
    """The CLI wins over the policy for the OTLP endpoint."""
    return TelemetryOptions(
        otlp_endpoint=args.otlp_endpoint or policy_otlp_endpoint,
        trace_sample_ratio=args.trace_sample_ratio,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        audit_dir=args.audit_dir,
        audit_chain=args.audit_chain,
        audit_max_file_bytes=args.audit_max_file_mb << 20,
        audit_wait=args.audit_wait,
        audit_sync_ms=args.audit_sync_ms,
    )


def worker_arguments(options: TelemetryOptions, index: int) -> list[str]:
    """``irl serve`` arguments that give worker ``index`` its own telemetry options."""
    worker = options.for_worker(index)
    argv = [
        "--trace-sample-ratio",
        str(worker.trace_sample_ratio),
        "--metrics-address",
        worker.metrics_address,
        "--audit-chain",
        worker.audit_chain,
        "--audit-max-file-mb",
        str(worker.audit_max_file_bytes >> 20),
        "--audit-sync-ms",
        str(worker.audit_sync_ms),
    ]
    if worker.otlp_endpoint:
        argv += ["--otlp-endpoint", worker.otlp_endpoint]
    if worker.metrics_port is not None:
        argv += ["--metrics-port", str(worker.metrics_port)]
    if worker.audit_dir is not None:
        argv += ["--audit-dir", str(worker.audit_dir)]
    if worker.audit_wait:
        argv.append("--audit-wait")
    return argv


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a ratio between 0 and 1")
    return value


def _milliseconds(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("milliseconds, 0 or more")
    return value


def _version() -> str:
    try:
        return package_metadata.version("irl-extproc")
    except package_metadata.PackageNotFoundError:
        return ""


class Telemetry:
    """Tracer, metrics and audit log of one server process."""

    def __init__(self, options: TelemetryOptions | None = None) -> None:
        self.options = options or TelemetryOptions()
        opts = self.options
        self.metrics: Metrics | None = Metrics() if opts.metrics_port is not None or opts.otlp_endpoint else None
        self.tracer = Tracer(None)
        self.audit: AuditLog | None = None
        self.metrics_port: int | None = None  # the bound port, once started
        self._closers: list[Callable[[], Awaitable[object]]] = []

    async def start(self) -> None:
        """Open the audit chain (repairing a torn tail) and start the exporters on this event loop.

        Raises on bad options (an unusable audit directory, a chain another process holds).
        """
        opts = self.options
        version = _version()
        resource = otlp_wire.resource(
            [
                ("service.name", SERVICE_NAME),
                ("service.version", version),
                ("service.instance.id", f"{socket.gethostname()}:{os.getpid()}"),
            ]
        )
        if self.metrics is not None:
            absorber = asyncio.get_running_loop().create_task(self.metrics.absorb_every(), name="irl-metrics-absorb")
            self._closers.append(lambda: _cancelled(absorber))
        if opts.audit_dir is not None:
            audit = AuditLog(
                opts.audit_dir,
                chain=opts.audit_chain,
                max_file_bytes=opts.audit_max_file_bytes,
                commit_delay=0.0 if opts.audit_wait else AUDIT_COMMIT_DELAY,
                sync_interval=0.0 if opts.audit_wait else opts.audit_sync_ms / 1000,
                records_counter=self.metrics.audit_records if self.metrics else None,
                errors_counter=self.metrics.audit_errors if self.metrics else None,
            )
            await asyncio.to_thread(audit.open)
            self.audit = audit
            self._closers.append(audit.aclose)
        if opts.otlp_endpoint:
            on_drop = None
            if self.metrics is not None:
                dropped = self.metrics.spans_dropped
                on_drop = lambda reason, count: dropped.add((reason,), count)  # noqa: E731
            spans = OtlpTraceExporter(opts.otlp_endpoint, resource, version=version, on_drop=on_drop)
            spans.start()
            self.tracer = Tracer(spans.submit, root_sample_ratio=opts.trace_sample_ratio)
            self._closers.append(spans.aclose)
            log.info("traces and metrics go to OTLP endpoint %s", opts.otlp_endpoint)
        if self.metrics is not None and opts.otlp_endpoint:
            pusher = OtlpMetricsExporter(
                self.metrics, opts.otlp_endpoint, resource, interval=opts.metrics_interval, version=version
            )
            pusher.start()
            self._closers.append(pusher.aclose)
        if self.metrics is not None and opts.metrics_port is not None:
            server = serve_prometheus(self.metrics, opts.metrics_port, opts.metrics_address)
            self.metrics_port = int(server.server_port)
            self._closers.append(lambda: asyncio.to_thread(server.shutdown))
            log.info("Prometheus metrics on http://%s:%d/metrics", opts.metrics_address, self.metrics_port)

    @property
    def active(self) -> bool:
        """Whether anything is recorded at all (streams skip every telemetry call otherwise)."""
        return self.tracer.enabled or self.metrics is not None or self.audit is not None

    def stream(
        self, metadata: Metadata | None, *, service: str, route: str, policy_version: str, mode: str
    ) -> StreamTelemetry:
        """Telemetry for one ext_proc stream (``metadata``: its gRPC invocation metadata)."""
        return StreamTelemetry(self, metadata, service=service, route=route, policy_version=policy_version, mode=mode)

    def audit_record(self, record: AnyRecord) -> asyncio.Future[Receipt] | None:
        """Queue a decision record; a future to await when the caller must wait for durability:
        under ``--audit-wait``, or while the sync falls behind (the stream waits rather than memory
        growing)."""
        audit = self.audit
        if audit is None:
            return None
        if self.options.audit_wait or audit.backlog > MAX_AUDIT_BACKLOG:
            return audit.append(record)
        audit.submit(record)
        return None

    async def aclose(self) -> None:
        """Flush and stop everything, newest first: spans and metrics, then the audit trail."""
        while self._closers:
            await self._closers.pop()()


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


NO_TELEMETRY = Telemetry()  # everything off: for callers without a server (``irl check``, tests)


def detached_stream(route: str = "") -> StreamTelemetry:
    """A stream that records nothing, for evaluation outside the server (``irl check``, tests)."""
    return NO_TELEMETRY.stream(None, service="", route=route, policy_version="", mode="enforce")
