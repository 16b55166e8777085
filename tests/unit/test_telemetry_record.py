"""Decision records built as dicts parse into irl.v1.DecisionRecord and never carry content."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format

from irl_extproc._gen.irl.v1 import decision_pb2
from irl_extproc.conversation import Conversation, Segment, Usage
from irl_extproc.invariants.base import Finding
from irl_extproc.telemetry import record as records

pytestmark = pytest.mark.unit

SECRET = "alice@example.com"


def conversation() -> Conversation:
    return Conversation(
        direction="response",
        api_format="openai-chat",
        body={},
        model="gpt-4o-mini-2024",
        segments=[Segment("assistant", f"mail {SECRET}", ("choices", 0, "message", "content"))],
        usage=Usage(input_tokens=12, output_tokens=30),
    )


def findings() -> list[Finding]:
    return [
        Finding(
            "pii",
            "pii.email",
            "redact",
            "e-mail address",
            layer="validator",
            score=0.99,
            threshold=0.5,
            segment=0,
            start=5,
            end=5 + len(SECRET),
            replacement="[EMAIL]",
        ),
        Finding("pii", "pii.phone", "monitor", "phone number", score=float("nan")),
    ]


def head(service: str = "s", route: str = "s/r", mode: str = "enforce", **ids: str) -> records.Record:
    return records.record_head(
        service=service, route=route, policy_version=ids.pop("policy_version", "v"), mode=mode, **ids
    )


def decided(
    head: records.Record,
    phase: str,
    verdict: str,
    *,
    time_ns: int,
    evaluations: tuple[records.Evaluation, ...] = (),
    **fields: Any,
) -> records.Record:
    """The record a ``PendingDecision`` builds, decided at ``time_ns``."""
    pending = records.PendingDecision(head, phase, verdict, True, list(evaluations), **fields)
    pending.time_ns = time_ns
    return pending()


def full_record() -> records.Record:
    stream = head(
        "chat",
        "chat/v1",
        policy_version="ab" * 32,
        request_id="req-1",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        tenant="team-a",
    )
    return decided(
        stream,
        "response_body",
        "redact",
        evaluations=(
            ("pii", findings(), 1_000, 43_000, None),  # ns: 42 µs
            ("deny_patterns", [], 43_000, 50_000, None),
            ("broken", [], 50_000, 53_000, "KeyError"),
        ),
        conversation=conversation(),
        status=0,
        flags=["unchecked:irl_body_too_large"],
        usage=records.usage_entry(conversation()),
        charges=[
            {
                "budget": "daily",
                "key": "team-a",
                "tokens": 42,
                "cost": 0.0021,
                "currency": "USD",
                "remaining": 9.5,
                "estimated": False,
            }
        ],
        duration_us=120,
        time_ns=1_763_784_578_123_456_789,
    )


def test_every_field_the_builder_writes_is_in_the_proto() -> None:
    record = full_record()
    message = json_format.ParseDict(record, decision_pb2.DecisionRecord())  # unknown fields raise
    assert message.time.ToNanoseconds() == 1_763_784_578_123_456_000
    assert message.phase == decision_pb2.PHASE_RESPONSE_BODY
    assert message.verdict == decision_pb2.VERDICT_REDACT
    assert message.mode == decision_pb2.MODE_ENFORCE
    pii = message.results[0]
    assert pii.action == decision_pb2.ACTION_REDACT
    assert pii.duration_us == 42
    assert [f.rule for f in pii.findings] == ["pii.email", "pii.phone"]
    assert pii.findings[0].segment_path == "choices[0].message.content"
    assert (pii.findings[0].start, pii.findings[0].end) == (5, 22)
    assert pii.findings[1].score == 0.0  # NaN from a broken detector becomes 0, not an unwritable record
    assert message.results[1].action == decision_pb2.ACTION_PASS
    assert message.results[2].error == "KeyError"
    assert message.usage.response_model == "gpt-4o-mini-2024"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 30)
    assert message.usage.provider == "openai"
    assert message.charges[0].cost == pytest.approx(0.0021)


def test_no_content_reaches_the_record() -> None:
    text = json.dumps(full_record())
    assert SECRET not in text
    assert "[EMAIL]" not in text  # the replacement text is not recorded either


def test_minimal_records_leave_empty_fields_out() -> None:
    record = decided(head(mode="monitor"), "request_headers", "error", error="irl_unknown_api", status=404, time_ns=0)
    assert record == {
        "time": "1970-01-01T00:00:00.000000Z",
        "service": "s",
        "route": "s/r",
        "policy_version": "v",
        "mode": "MODE_MONITOR",
        "phase": "PHASE_REQUEST_HEADERS",
        "verdict": "VERDICT_ERROR",
        "enforced": True,
        "status": 404,
        "error": "irl_unknown_api",
    }
    json_format.ParseDict(record, decision_pb2.DecisionRecord())


def test_every_phase_and_verdict_name_exists_in_the_proto() -> None:
    for phase in (
        "request_headers",
        "request_body",
        "response_headers",
        "response_body",
        "request_trailers",
        "response_trailers",
    ):
        decision_pb2.Phase.Value(records.phase_name(phase))  # ValueError if the proto lacks it
    for verdict in ("allow", "redact", "block", "error"):
        record = decided(head(route="r"), "request_body", verdict, time_ns=0)
        json_format.ParseDict(record, decision_pb2.DecisionRecord())


def test_strongest_action_and_paths() -> None:
    assert records.strongest_action([]) == "pass"
    assert records.strongest_action(findings()) == "redact"
    assert records.json_path_text(("messages", 2, "content", 0, "text")) == "messages[2].content[0].text"


def test_rfc3339_matches_protobuf_timestamps() -> None:
    for ns in (0, 999_999_999, 1_763_784_578_000_001_000, 1_763_784_579_500_000_000):
        text = records.rfc3339(ns)
        parsed = json_format.ParseDict({"time": text}, decision_pb2.DecisionRecord())
        assert parsed.time.ToNanoseconds() == ns // 1000 * 1000
