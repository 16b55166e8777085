"""One stream's telemetry end to end in-process: spans to a real OTLP receiver, metrics on
a real Prometheus endpoint, records in a real audit chain; and the CLI options."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
import pytest

from irl_extproc.conversation import Conversation, Segment, Usage
from irl_extproc.decision import decide
from irl_extproc.invariants.base import Finding
from irl_extproc.telemetry.audit_format import list_chain_files
from irl_extproc.telemetry.audit_verify import verify
from irl_extproc.telemetry.setup import Telemetry, TelemetryOptions, add_arguments, options_from_args, worker_arguments
from irl_extproc.telemetry.stream import StreamTelemetry
from irl_extproc.telemetry.tracing import STREAM_SPAN_NAME
from tests.otlp_receiver import OtlpReceiver, otlp_receiver  # noqa: F401 - the fixture

pytestmark = pytest.mark.unit

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ENVOY_SPAN = "00f067aa0ba902b7"
SECRET = "alice@example.com"


def request() -> Conversation:
    return Conversation("request", "openai-chat", {}, [Segment("user", f"mail {SECRET}", ("messages", 0, "content"))],
                        model="gpt-4o-mini")


def response() -> Conversation:
    segments = [Segment("assistant", "ok", ("choices", 0, "message", "content"))]
    return Conversation("response", "openai-chat", {}, segments, model="gpt-4o-mini-2024-07-18", usage=Usage(11, 7))


EMAIL = Finding("pii", "pii.email", "redact", "e-mail address", layer="validator", segment=0, start=5, end=22,
                replacement="[EMAIL]")


def evaluated(tel: StreamTelemetry, invariant: str, findings: list[Finding]) -> None:
    """What ``engine.evaluate_live`` records of one evaluation (nothing, when nothing records)."""
    if tel.evaluations is not None:
        start = time.perf_counter_ns()
        tel.evaluations.append((invariant, findings, start, start + 1000, None))


async def run_stream(telemetry: Telemetry) -> str:
    tel = telemetry.stream([("traceparent", f"00-{TRACE}-{ENVOY_SPAN}-01"), ("x-irl-route", "chat/v1")],
                           service="chat", route="chat/v1", policy_version="f" * 64, mode="enforce")
    tel.request_id = "req-42"
    with tel.phase("request_headers"):
        pass
    with tel.phase("request_body"):
        evaluated(tel, "deny_patterns", [])
        evaluated(tel, "pii", [EMAIL])
        durable = tel.decide(decide([EMAIL], "enforce"), conversation=request())
        if durable is not None:
            assert (await durable).sequence == 0
    with tel.phase("response_body"):
        evaluated(tel, "pii", [])
        tel.decide(decide([], "enforce"), conversation=response())
    tel.close()
    return tel.trace_id


async def test_spans_metrics_and_audit_of_one_stream(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:  # noqa: F811
    options = TelemetryOptions(otlp_endpoint=otlp_receiver.endpoint, metrics_port=0, metrics_address="127.0.0.1",
                               audit_dir=tmp_path, audit_wait=True)
    telemetry = Telemetry(options)
    await telemetry.start()
    try:
        assert await run_stream(telemetry) == TRACE
        assert telemetry.metrics_port
        async with httpx.AsyncClient() as client:
            scrape = (await client.get(f"http://127.0.0.1:{telemetry.metrics_port}/metrics", timeout=5)).text
    finally:
        await telemetry.aclose()

    received = otlp_receiver.wait_for_spans(lambda spans: len(spans) >= 7)
    assert len(received) == 7  # stream, 3 phases, 3 invariant evaluations
    spans = {s.span.name: s for s in received}  # the two pii spans are told apart below
    root = spans[STREAM_SPAN_NAME]
    assert root.span.parent_span_id.hex() == ENVOY_SPAN
    assert {s.span.trace_id.hex() for s in received} == {TRACE}
    assert root.attributes["irl.route"] == "chat/v1"
    assert root.attributes["irl.verdict"] == "redact"
    assert root.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert root.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert root.attributes["gen_ai.usage.input_tokens"] == 11
    assert root.attributes["gen_ai.usage.output_tokens"] == 7
    assert root.attributes["gen_ai.operation.name"] == "chat"
    assert root.attributes["gen_ai.provider.name"] == "openai"
    body = spans["irl.request_body"]
    assert body.span.parent_span_id == root.span.span_id
    assert body.attributes["irl.verdict"] == "redact"
    pii = next(s for s in received if s.span.name == "irl.invariant.pii" and s.attributes["irl.action"] == "redact")
    assert pii.span.parent_span_id == body.span.span_id
    assert pii.attributes["irl.rule"] == "pii.email"
    assert pii.attributes["irl.findings"] == 1
    assert pii.span.end_time_unix_nano > pii.span.start_time_unix_nano
    assert spans["irl.invariant.deny_patterns"].attributes["irl.action"] == "pass"
    everything = b"".join(s.span.SerializeToString() for s in received)
    assert SECRET.encode() not in everything
    assert b"[EMAIL]" not in everything

    decisions = 'enforced="true",phase="request_body",route="chat/v1",service="chat",verdict="redact"'
    assert f"irl_decisions_total{{{decisions}}} 1.0" in scrape
    assert 'irl_invariant_results_total{action="redact",invariant="pii",route="chat/v1",service="chat"} 1.0' in scrape
    assert 'irl_tokens_total{model="gpt-4o-mini",route="chat/v1",service="chat",type="output"} 7.0' in scrape
    assert 'irl_streams_total{route="chat/v1",service="chat"} 1.0' in scrape

    [report] = verify(tmp_path)
    assert report.ok
    assert report.records == 2
    [(_, path)] = list_chain_files(tmp_path)["audit"]
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert SECRET not in path.read_text()
    assert (first["trace_id"], first["request_id"], first["phase"]) == (TRACE, "req-42", "PHASE_REQUEST_BODY")
    assert first["span_id"] == root.span.span_id.hex()
    assert [r["action"] for r in first["results"]] == ["ACTION_PASS", "ACTION_REDACT"]
    assert first["results"][1]["findings"][0]["segment_path"] == "messages[0].content"
    assert second["usage"]["output_tokens"] == 7
    assert second["verdict"] == "VERDICT_ALLOW"


async def test_everything_off_is_a_working_no_op() -> None:
    telemetry = Telemetry()
    await telemetry.start()
    trace_id = await run_stream(telemetry)
    await telemetry.aclose()
    assert trace_id == TRACE  # the audit-less, trace-less stream still knows Envoy's trace id
    assert telemetry.metrics is None
    assert telemetry.audit is None


def test_cli_options_and_worker_arguments(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--otlp-endpoint", "collector:4317", "--metrics-port", "9464",
                              "--audit-dir", str(tmp_path), "--audit-wait", "--trace-sample-ratio", "0.25"])
    options = options_from_args(args, policy_otlp_endpoint="ignored:4317")
    assert options.otlp_endpoint == "collector:4317"
    assert options.audit_wait
    assert options.trace_sample_ratio == 0.25
    worker = options_from_args(parser.parse_args(worker_arguments(options, 2)))
    assert worker == options.for_worker(2)
    assert (worker.metrics_port, worker.audit_chain) == (9466, "audit-2")
    from_policy = options_from_args(parser.parse_args(["--otlp-endpoint", ""]), policy_otlp_endpoint="policy:4317")
    assert from_policy.otlp_endpoint == "policy:4317"
    with pytest.raises(SystemExit):
        parser.parse_args(["--trace-sample-ratio", "2"])
