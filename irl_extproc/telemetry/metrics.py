"""Metrics: cheap in-process aggregation, exported over OTLP and on a Prometheus endpoint.

Why not the OpenTelemetry metrics SDK on the hot path: measured here, one
``counter.add``/``histogram.record`` costs ~11 µs, and a request records a dozen.
``Counter.add`` below is a dict lookup and an increment (~0.3 µs); ``Histogram.record``
appends to a list, and ``Histogram.fold`` buckets what gathered in bulk. Streams do not even
do that per message: they hand each message's facts (``record.PhaseRecord``) to
``RouteCells.add_phase``, and these are aggregated ``ABSORB_BATCH`` at a time through each
route's cells (``RouteCells``): list increments and appends. ``Metrics.absorb`` aggregates
what is left and folds the histograms: a timer calls it every second, and a scrape and the
OTLP push call it first, so a scrape is at most a second behind. Both exports read the same aggregates: a
``prometheus_client`` collector serves them for scraping, and ``OtlpMetricsExporter``
pushes them (cumulative) to an OTLP collector. The names are documented in
``docs/metrics.md``; keep both in step.

Each instrument is written by the event loop's thread only; exporters read snapshots taken
with one C-level copy, so a histogram's buckets, sum and count always agree.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import start_http_server

from irl_extproc.telemetry.otlp_client import METRICS_EXPORT, OtlpClient
from irl_extproc.telemetry.record import PhaseRecord, Tokens, action_of

log = logging.getLogger("irl.telemetry")

Labels = tuple[str, ...]
MAX_SERIES = 2000  # per instrument; beyond it new label sets share one overflow series
ABSORB_BATCH = 64  # messages aggregated together (see Metrics.absorb); a timer takes the rest every second
OVERFLOW = "_overflow"
# Seconds: IRL's own work is µs-ms; the top buckets catch stalls.
LATENCY_BOUNDS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


@dataclass
class Counter:
    name: str  # OpenTelemetry name, e.g. "irl.decisions"
    unit: str
    description: str
    labels: Labels
    values: dict[Labels, list[int]] = field(default_factory=dict)  # per label set: [count]

    def cell(self, labels: Labels) -> list[int]:
        """The label set's cell (``cell[0] += n`` counts); past ``MAX_SERIES``, the overflow cell."""
        cell = self.values.get(labels)
        if cell is None:
            if len(self.values) >= MAX_SERIES:
                labels = (OVERFLOW,) * len(self.labels)
            cell = self.values.setdefault(labels, [0])
        return cell

    def add(self, labels: Labels, value: int = 1) -> None:
        self.cell(labels)[0] += value

    def snapshot(self) -> list[tuple[Labels, int]]:
        return [(labels, cell[0]) for labels, cell in self.values.copy().items()]


@dataclass
class Histogram:
    name: str
    unit: str
    description: str
    labels: Labels
    bounds: tuple[float, ...] = LATENCY_BOUNDS
    # per label set: [count per bucket (len(bounds) + 1)..., sum, count]
    values: dict[Labels, list[float]] = field(default_factory=dict)
    # per label set: observations not yet in ``values`` (``fold`` moves them there in bulk)
    unfolded: dict[Labels, list[float]] = field(default_factory=dict)

    def samples(self, labels: Labels) -> list[float]:
        """Where the label set's observations go (``append``) until ``fold`` counts them; past
        ``MAX_SERIES`` label sets, the overflow series'."""
        samples = self.unfolded.get(labels)
        if samples is None:
            if len(self.values) >= MAX_SERIES:
                labels = (OVERFLOW,) * len(self.labels)
            self.values.setdefault(labels, [0.0] * (len(self.bounds) + 3))
            samples = self.unfolded.setdefault(labels, [])
        return samples

    def record(self, labels: Labels, value: float) -> None:
        self.samples(labels).append(value)

    def fold(self) -> None:
        """Move the observations into the cells. Bucketing them one by one cost more than all the rest
        of a metric update, so it is done in bulk, on the thread that observes, before each export."""
        values, bounds = self.values, self.bounds
        for labels, samples in self.unfolded.items():
            if samples:
                fold(values[labels], samples, bounds)
                samples.clear()

    def snapshot(self) -> list[tuple[Labels, list[float]]]:
        return [(labels, list(cell)) for labels, cell in self.values.copy().items()]


def fold(cell: list[float], samples: list[float], bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
    """Add ``samples`` to a histogram cell: bucket i holds (bounds[i-1], bounds[i]], then sum and count.
    Sorts ``samples``."""
    samples.sort()
    counted = 0
    for bucket, bound in enumerate(bounds):
        upto = bisect.bisect_right(samples, bound)
        cell[bucket] += upto - counted
        counted = upto
    cell[len(bounds)] += len(samples) - counted
    cell[-2] += sum(samples)
    cell[-1] += len(samples)


Instrument = Counter | Histogram


class RouteCells:
    """The cells one route's streams update, found once per label set: a stream's metric
    updates are then a dict lookup and list increments (no label tuples, no hashing of them)."""

    def __init__(self, metrics: Metrics, service: str, route: str) -> None:
        self._metrics, self._service, self._route = metrics, service, route
        self.labels = (service, route)
        self.streams = metrics.streams.cell((service, route))
        self._phases: dict[str, list[float]] = {}
        self._invariants: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self.passed: dict[str, tuple[list[int], list[float]]] = {}  # ``invariant(name, "pass")``: most results
        self._decisions: dict[tuple[str, str, bool], list[int]] = {}

    def add_phase(self, phase: PhaseRecord) -> None:
        """Count one ext_proc message of this route (``Metrics.add_phase``)."""
        self._metrics.add_phase(self, phase)

    def phase(self, phase: str) -> list[float]:
        """Where the ``irl.phase.duration`` observations of ``phase`` go (``Histogram.samples``)."""
        samples = self._phases.get(phase)
        if samples is None:
            labels = (self._service, self._route, phase)
            samples = self._phases[phase] = self._metrics.phase_duration.samples(labels)
        return samples

    def invariant(self, name: str, action: str) -> tuple[list[int], list[float]]:
        """The ``irl.invariant.results`` cell of (``name``, ``action``), and where the
        ``irl.invariant.duration`` observations of ``name`` go."""
        cells = self._invariants.get((name, action))
        if cells is None:
            metrics, labels = self._metrics, (self._service, self._route, name)
            cells = (metrics.invariant_results.cell((*labels, action)), metrics.invariant_duration.samples(labels))
            self._invariants[(name, action)] = cells
            if action == "pass":
                self.passed[name] = cells
        return cells

    def count_decision(self, phase: str, verdict: str, enforced: bool, error: str | None, used: Tokens | None) -> None:
        """A decision, the error that made it (verdict ``error``) and the tokens its message reported."""
        self.decision(phase, verdict, enforced)[0] += 1
        metrics, labels = self._metrics, self.labels
        if verdict == "error" and error:
            metrics.stream_errors.add((*labels, error))
        if used is not None:
            model, input_tokens, output_tokens = used
            if input_tokens >= 0:
                metrics.tokens.add((*labels, model, "input"), input_tokens)
            if output_tokens >= 0:
                metrics.tokens.add((*labels, model, "output"), output_tokens)

    def decision(self, phase: str, verdict: str, enforced: bool) -> list[int]:
        """The ``irl.decisions`` cell."""
        cell = self._decisions.get((phase, verdict, enforced))
        if cell is None:
            labels = (self._service, self._route, phase, verdict, "true" if enforced else "false")
            cell = self._decisions[(phase, verdict, enforced)] = self._metrics.decisions.cell(labels)
        return cell


class Metrics:
    """Every instrument IRL records. One instance per process."""

    def __init__(self) -> None:
        self.start_ns = time.time_ns()
        route = ("service", "route")
        self.streams = Counter("irl.streams", "{stream}", "ext_proc streams opened by Envoy", route)
        self.stream_errors = Counter(
            "irl.stream.errors", "{error}", "messages IRL could not evaluate, by error code", (*route, "error")
        )
        self.decisions = Counter(
            "irl.decisions",
            "{decision}",
            "decisions on messages, by phase, verdict and whether enforced",
            (*route, "phase", "verdict", "enforced"),
        )
        self.invariant_results = Counter(
            "irl.invariant.results",
            "{result}",
            "invariant evaluations by the action they called for (pass if none)",
            (*route, "invariant", "action"),
        )
        self.invariant_duration = Histogram(
            "irl.invariant.duration", "s", "time to evaluate one invariant on one message", (*route, "invariant")
        )
        self.phase_duration = Histogram(
            "irl.phase.duration", "s", "time IRL spent on one ext_proc message (one phase)", (*route, "phase")
        )
        self.tokens = Counter(
            "irl.tokens",
            "{token}",
            "LLM tokens seen in requests and responses, where the API reports them",
            (*route, "model", "type"),
        )
        self.audit_records = Counter("irl.audit.records", "{record}", "decision records made durable", ())
        self.audit_errors = Counter("irl.audit.errors", "{error}", "audit writes that failed", ())
        self._routes: dict[tuple[str, str], RouteCells] = {}
        self._pending: list[tuple[RouteCells, PhaseRecord]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that adds phases (see absorb_soon)
        self.spans_dropped = Counter(
            "irl.telemetry.spans.dropped",
            "{trace}",
            "stream traces not exported: queue_full or export_failed",
            ("reason",),
        )

    def add_phase(self, cells: RouteCells, phase: PhaseRecord) -> None:
        """Count one ext_proc message (aggregated with others, at most ``ABSORB_BATCH`` later)."""
        pending = self._pending
        pending.append((cells, phase))
        if len(pending) >= ABSORB_BATCH:
            self._aggregate()

    def absorb(self) -> None:
        """Count everything recorded so far, histograms included (before an export: every second,
        on a scrape, before an OTLP push)."""
        self._aggregate()
        for instrument in self.instruments:
            if isinstance(instrument, Histogram):
                instrument.fold()

    def _aggregate(self) -> None:
        """Aggregate the messages counted since the last call: one tight loop, warm caches."""
        pending, self._pending = self._pending, []
        for cells, (phase, start, end, verdict, enforced, error, evaluations, used) in pending:
            for evaluation in evaluations:
                name, findings, check_start, check_end, failure = evaluation
                passed = None if findings or failure is not None else cells.passed.get(name)
                count, durations = passed or cells.invariant(name, action_of(evaluation))
                count[0] += 1
                durations.append((check_end - check_start) / 1e9)
            cells.phase(phase).append((end - start) / 1e9)
            if verdict is not None:
                cells.count_decision(phase, verdict, enforced, error, used)

    async def absorb_every(self, seconds: float = 1.0) -> None:
        """Run on the event loop that adds phases: absorb what is pending every ``seconds``."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(seconds)
                self.absorb()
        finally:
            self.absorb()

    def absorb_soon(self, timeout: float = 1.0) -> None:
        """From another thread (a scrape): have the loop absorb what is pending, and wait for it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:  # called on the loop itself after all
                self.absorb()
                return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def absorb() -> None:
            self.absorb()
            done.set_result(None)

        with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
            loop.call_soon_threadsafe(absorb)
            done.result(timeout)

    def route(self, service: str, route: str) -> RouteCells:
        """The cells of one route (names come from the policy: a handful)."""
        cells = self._routes.get((service, route))
        if cells is None:
            if len(self._routes) >= MAX_SERIES:
                self._routes.clear()  # many policy reloads renamed routes: start over, the cells stay
            cells = self._routes[(service, route)] = RouteCells(self, service, route)
        return cells

    @property
    def instruments(self) -> list[Instrument]:
        from irl_extproc.budgets.metrics import BUDGET_METRICS  # budgets count spend in their own module

        own: list[Instrument] = [v for v in vars(self).values() if isinstance(v, Counter | Histogram)]
        return own + list(BUDGET_METRICS.instruments)


def prometheus_name(instrument: Instrument) -> str:
    """The OpenTelemetry→Prometheus name: dots to underscores, unit suffix (``_total`` is added later)."""
    base = instrument.name.replace(".", "_")
    return base + "_seconds" if instrument.unit == "s" else base


class PrometheusCollector:
    """A ``prometheus_client`` collector over ``Metrics`` (counters get ``_total``)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        self._metrics.absorb_soon()
        for instrument in self._metrics.instruments:
            name = prometheus_name(instrument)
            labels = list(instrument.labels)
            if isinstance(instrument, Counter):
                counter = CounterMetricFamily(name, instrument.description, labels=labels)
                for values, count in instrument.snapshot():
                    counter.add_metric(list(values), count)
                yield counter
            else:
                histogram = HistogramMetricFamily(name, instrument.description, labels=labels)
                for values, cell in instrument.snapshot():
                    histogram.add_metric(list(values), _cumulative_buckets(instrument.bounds, cell), cell[-2])
                yield histogram


def _cumulative_buckets(bounds: Sequence[float], cell: list[float]) -> list[tuple[str, float]]:
    buckets, running = [], 0.0
    for bound, count in zip([*map(repr, bounds), "+Inf"], cell[:-2], strict=True):
        running += count
        buckets.append((bound, running))
    return buckets


def serve_prometheus(metrics: Metrics, port: int, address: str = "0.0.0.0") -> Any:
    """Serve ``/metrics`` on ``port`` from a daemon thread; returns the HTTP server (``shutdown()``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PrometheusCollector(metrics))
    server, _thread = start_http_server(port, address, registry=registry)
    return server


def export_metrics_request(metrics: Metrics, resource: resource_pb2.Resource, version: str = "") -> bytes:
    """An ``ExportMetricsServiceRequest`` with the cumulative value of every series."""
    now = time.time_ns()
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.CopyFrom(resource)
    scope = resource_metrics.scope_metrics.add()
    scope.scope.name, scope.scope.version = "irl_extproc", version
    for instrument in metrics.instruments:
        metric = scope.metrics.add(name=instrument.name, unit=instrument.unit, description=instrument.description)
        if isinstance(instrument, Counter):
            metric.sum.aggregation_temporality = CUMULATIVE
            metric.sum.is_monotonic = True
            for labels, count in instrument.snapshot():
                number = metric.sum.data_points.add(
                    start_time_unix_nano=metrics.start_ns, time_unix_nano=now, as_int=count
                )
                number.attributes.extend(_attributes(instrument.labels, labels))
        else:
            metric.histogram.aggregation_temporality = CUMULATIVE
            for labels, cell in instrument.snapshot():
                point = metric.histogram.data_points.add(
                    start_time_unix_nano=metrics.start_ns,
                    time_unix_nano=now,
                    count=int(cell[-1]),
                    sum=cell[-2],
                    explicit_bounds=instrument.bounds,
                    bucket_counts=[int(c) for c in cell[:-2]],
                )
                point.attributes.extend(_attributes(instrument.labels, labels))
    return request.SerializeToString()


def _attributes(names: Labels, values: Labels) -> list[common_pb2.KeyValue]:
    return [
        common_pb2.KeyValue(key=name, value=common_pb2.AnyValue(string_value=value))
        for name, value in zip(names, values, strict=True)
    ]


class OtlpMetricsExporter:
    """Pushes the cumulative metrics to an OTLP/gRPC collector every ``interval`` seconds.

    Create and ``start`` it on the server's event loop (a request takes ~1 ms to build).
    """

    def __init__(
        self,
        metrics: Metrics,
        endpoint: str,
        resource: resource_pb2.Resource,
        *,
        interval: float = 10.0,
        version: str = "",
    ) -> None:
        self._metrics, self._resource, self._version = metrics, resource, version
        self._client = OtlpClient(endpoint)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="irl-metrics-exporter")

    async def export_now(self) -> bool:
        self._metrics.absorb()
        request = export_metrics_request(self._metrics, self._resource, self._version)
        return await self._client.export(METRICS_EXPORT, request)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.export_now()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.export_now()  # the final values, so a short run still reports
        await self._client.close()
