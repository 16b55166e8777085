"""Metrics: aggregation, the Prometheus endpoint scraped over HTTP, and OTLP export."""

from __future__ import annotations

import asyncio
import bisect
import random
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from irl_extproc.telemetry import otlp_wire
from irl_extproc.telemetry.metrics import (
    ABSORB_BATCH,
    LATENCY_BOUNDS,
    MAX_SERIES,
    OVERFLOW,
    Counter,
    Histogram,
    Metrics,
    OtlpMetricsExporter,
    fold,
    serve_prometheus,
)
from tests.conftest import REPO
from tests.otlp_receiver import OtlpReceiver, otlp_receiver  # noqa: F401 - the fixture

pytestmark = pytest.mark.unit


def test_counter_caps_its_series() -> None:
    counter = Counter("c", "1", "", ("model",))
    for i in range(MAX_SERIES + 5):
        counter.add((f"model-{i}",))
    assert len(counter.values) == MAX_SERIES + 1
    assert dict(counter.snapshot())[(OVERFLOW,)] == 5


def test_histogram_caps_its_series() -> None:
    histogram = Histogram("h", "s", "", ("model",))
    for i in range(MAX_SERIES + 5):
        histogram.record((f"model-{i}",), 0.001)
    histogram.fold()
    assert len(histogram.values) == MAX_SERIES + 1
    assert dict(histogram.snapshot())[(OVERFLOW,)][-1] == 5


@pytest.mark.parametrize("seed", range(20))
def test_folding_in_bulk_counts_as_bucketing_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    bounds = LATENCY_BOUNDS
    values = [
        rng.choice([*bounds, rng.uniform(0, 2), rng.expovariate(1000), 0.0]) for _ in range(rng.randrange(1, 300))
    ]
    one_by_one = [0.0] * (len(bounds) + 3)
    for value in values:
        one_by_one[bisect.bisect_left(bounds, value)] += 1  # bucket i: (bounds[i-1], bounds[i]]
        one_by_one[-2] += value
        one_by_one[-1] += 1
    cell = [0.0] * (len(bounds) + 3)
    fold(cell, values[: len(values) // 2], bounds)
    fold(cell, values[len(values) // 2 :], bounds)
    assert cell[:-2] == one_by_one[:-2]
    assert cell[-2] == pytest.approx(one_by_one[-2])  # the float sum, in another order
    assert cell[-1] == len(values)


def test_histogram_buckets_are_upper_inclusive() -> None:
    histogram = Histogram("h", "s", "", (), bounds=(0.001, 0.01))
    for value in (0.0005, 0.001, 0.002, 0.5):
        histogram.record((), value)
    assert histogram.snapshot() == [((), [0.0] * 5)]  # observations are counted when folded
    histogram.fold()
    [(_, cell)] = histogram.snapshot()
    assert cell[:3] == [2, 1, 1]  # (..0.001], (0.001..0.01], (0.01..)
    assert cell[-2] == pytest.approx(0.5035)
    assert cell[-1] == 4


async def test_messages_are_counted_in_batches_and_a_scrape_sees_them_all() -> None:
    metrics = Metrics()
    absorber = asyncio.create_task(metrics.absorb_every(60))
    await asyncio.sleep(0)
    cells = metrics.route("chat", "chat/v1")
    start = time.perf_counter_ns()
    evaluation = ("pii", [], start, start + 300_000, None)
    phase = ("request_body", start, start + 900_000, "allow", True, None, [evaluation], ("gpt-4o-mini", 120, -1))
    for _ in range(ABSORB_BATCH - 1):
        cells.add_phase(phase)
    assert metrics.decisions.snapshot() == []  # gathered, not yet counted
    cells.add_phase(phase)  # a full batch is counted at once
    assert metrics.decisions.snapshot() == [(("chat", "chat/v1", "request_body", "allow", "true"), ABSORB_BATCH)]
    cells.add_phase(phase)
    server = serve_prometheus(metrics, 0, "127.0.0.1")
    try:  # the scrape has the event loop count what is pending first
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)).text
    finally:
        server.shutdown()
        absorber.cancel()
    total, route = ABSORB_BATCH + 1, 'route="chat/v1",service="chat"'
    assert f'irl_invariant_results_total{{action="pass",invariant="pii",{route}}} {total}.0' in text
    assert f'irl_tokens_total{{model="gpt-4o-mini",{route},type="input"}} {120 * total}.0' in text
    assert f'irl_tokens_total{{model="gpt-4o-mini",{route},type="output"}}' not in text  # not reported


def recorded() -> Metrics:
    metrics = Metrics()
    metrics.decisions.add(("chat", "chat/v1", "request_body", "block", "true"), 3)
    metrics.invariant_results.add(("chat", "chat/v1", "pii", "redact"))
    metrics.invariant_duration.record(("chat", "chat/v1", "pii"), 0.0003)
    metrics.tokens.add(("chat", "chat/v1", "gpt-4o-mini", "input"), 120)
    metrics.absorb()  # as the event loop's timer does: the histogram observation is counted
    return metrics


def test_prometheus_endpoint_serves_the_documented_names() -> None:
    server = serve_prometheus(recorded(), 0, "127.0.0.1")
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    decisions = families["irl_decisions"]
    assert decisions.type == "counter"
    [sample] = [s for s in decisions.samples if s.name == "irl_decisions_total"]
    assert sample.labels == {
        "service": "chat",
        "route": "chat/v1",
        "phase": "request_body",
        "verdict": "block",
        "enforced": "true",
    }
    assert sample.value == 3
    duration = families["irl_invariant_duration_seconds"]
    assert duration.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in duration.samples if s.name.endswith("_bucket")}
    assert buckets["0.00025"] == 0
    assert buckets["0.0005"] == 1
    assert buckets["+Inf"] == 1
    assert [s.value for s in families["irl_tokens"].samples if s.name == "irl_tokens_total"] == [120]
    assert families["irl_streams"].samples == []  # declared, no series yet
    documented = (REPO / "docs" / "metrics.md").read_text()
    for name in families:
        assert f"`{name}" in documented, f"{name} is not documented in docs/metrics.md"


async def test_otlp_export_reaches_a_real_receiver(otlp_receiver: OtlpReceiver) -> None:  # noqa: F811
    resource = otlp_wire.resource([("service.name", "irl-extproc")])
    exporter = OtlpMetricsExporter(recorded(), otlp_receiver.endpoint, resource, interval=60)
    exporter.start()
    await exporter.aclose()  # closing pushes the final values
    metrics = {m.name: m for m in otlp_receiver.wait_for_metrics()}
    [point] = metrics["irl.decisions"].sum.data_points
    assert point.as_int == 3
    assert metrics["irl.decisions"].sum.is_monotonic
    assert {kv.key: kv.value.string_value for kv in point.attributes}["verdict"] == "block"
    [histogram] = metrics["irl.invariant.duration"].histogram.data_points
    assert histogram.count == 1
    assert sum(histogram.bucket_counts) == 1
    assert len(histogram.bucket_counts) == len(histogram.explicit_bounds) + 1
    assert metrics["irl.invariant.duration"].unit == "s"
