"""Build the decision record (``protos/irl/v1/decision.proto``) as its proto3 JSON dict.

The audit trail stores the record's proto3 JSON mapping (original field names, enum
names, defaults omitted). Building that dict directly costs ~2 µs; filling the upb
message and converting it with ``json_format`` costs ~100 µs (measured here), which
the hot path cannot afford. ``tests/unit/test_telemetry_record.py`` parses every shape
built here back into ``irl.v1.DecisionRecord``, so the builder and the schema cannot
drift, and ``irl audit verify --schema`` checks stored records the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from irl_extproc.conversation import Conversation, JsonPath
from irl_extproc.invariants.base import Finding

Record = dict[str, Any]

_ACTIONS = {"pass": "ACTION_PASS", "monitor": "ACTION_MONITOR", "redact": "ACTION_REDACT", "block": "ACTION_BLOCK"}
_STRENGTH = {"pass": 0, "monitor": 1, "redact": 2, "block": 3}
_VERDICTS = {"allow": "VERDICT_ALLOW", "redact": "VERDICT_REDACT", "block": "VERDICT_BLOCK", "error": "VERDICT_ERROR"}
_PROVIDERS = {"openai-chat": "openai", "openai-responses": "openai", "anthropic-messages": "anthropic"}
MAX_LABEL_CHARS = 128  # model names come from request bodies: bound what telemetry keeps


def phase_name(phase: str) -> str:
    """``request_body`` → ``PHASE_REQUEST_BODY`` (the ext_proc oneof names IRL uses)."""
    name = _PHASE_NAMES.get(phase)
    if name is None:
        name = _PHASE_NAMES[phase] = "PHASE_" + phase.upper()  # a handful of phases
    return name


_PHASE_NAMES: dict[str, str] = {}


def mode_name(mode: str) -> str:
    return "MODE_MONITOR" if mode == "monitor" else "MODE_ENFORCE"


def strongest_action(findings: Iterable[Finding]) -> str:
    """block > redact > monitor > pass: what an invariant's findings call for."""
    action = "pass"
    for finding in findings:
        if _STRENGTH[finding.action] > _STRENGTH[action]:
            action = finding.action
    return action


def json_path_text(path: JsonPath) -> str:
    """``("messages", 2, "content")`` → ``messages[2].content``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def finding_entry(finding: Finding, conversation: Conversation | None = None) -> Record:
    entry: Record = {
        "rule": finding.rule,
        "action": _ACTIONS[finding.action],
        "layer": finding.layer,
        "score": _finite(finding.score),
        "message": finding.message,
    }
    if finding.threshold is not None:
        entry["threshold"] = _finite(finding.threshold)
    if finding.segment is not None:
        entry["segment"] = finding.segment
        if conversation is not None and 0 <= finding.segment < len(conversation.segments):
            entry["segment_path"] = json_path_text(conversation.segments[finding.segment].path)
    if finding.start is not None:
        entry["start"] = finding.start
    if finding.end is not None:
        entry["end"] = finding.end
    return entry


def invariant_result(
    name: str,
    findings: Sequence[Finding],
    duration_us: int,
    conversation: Conversation | None = None,
    *,
    error: str | None = None,
) -> Record:
    """``error``: the exception type when the invariant itself failed."""
    action = _ACTIONS[strongest_action(findings)] if findings else "ACTION_PASS"  # most pass
    result: Record = {"invariant": name, "action": action, "duration_us": duration_us}
    if findings:
        result["findings"] = [finding_entry(f, conversation) for f in findings]
    if error is not None:
        result["error"] = error
    return result


def usage_entry(conversation: Conversation) -> Record:
    """The ``Usage`` message from what the codec read (model and token counts)."""
    usage: Record = {}
    provider = _PROVIDERS.get(conversation.api_format)
    if provider:
        usage["provider"] = provider
    if conversation.model:
        key = "request_model" if conversation.direction == "request" else "response_model"
        usage[key] = conversation.model[:MAX_LABEL_CHARS]
    counts = conversation.usage
    if counts is not None:
        if isinstance(counts.input_tokens, int) and counts.input_tokens >= 0:
            usage["input_tokens"] = counts.input_tokens
        if isinstance(counts.output_tokens, int) and counts.output_tokens >= 0:
            usage["output_tokens"] = counts.output_tokens
    return usage


def record_head(
    *,
    service: str,
    route: str,
    policy_version: str,
    mode: str,
    request_id: str = "",
    trace_id: str = "",
    span_id: str = "",
    tenant: str | None = None,
) -> Record:
    """The fields all decision records of one stream share, in record order (``time`` first, set
    by ``PendingDecision``). A stream builds it once and fills a copy per decision."""
    head: Record = {"time": ""}
    if request_id:
        head["request_id"] = request_id
    if trace_id:
        head["trace_id"] = trace_id
    if span_id:
        head["span_id"] = span_id
    head.update(service=service, route=route, policy_version=policy_version, mode=mode_name(mode))
    if tenant:
        head["tenant"] = tenant
    return head


# What a stream records as it goes, for traces, metrics and the audit trail to be built from
# later, in batches (measured in the server: the same work done per message cost ~3x the CPU,
# its caches cold after the rest of the request's work).
#
# One invariant evaluation: name, findings, start and end (``time.perf_counter_ns``), and the
# exception type if the invariant failed.
Evaluation = tuple[str, Sequence[Finding], int, int, str | None]
# Tokens a message reported: model, input tokens, output tokens (-1 when not reported).
Tokens = tuple[str, int, int]
# One ext_proc message: phase, start and end (``perf_counter_ns``), the decision's verdict (None
# if no decision was taken) and whether it was enforced, the error code, the evaluations, tokens.
PhaseRecord = tuple[str, int, int, str | None, bool, str | None, list[Evaluation], Tokens | None]


def action_of(evaluation: Evaluation) -> str:
    """What the evaluation calls for: ``strongest_action`` of its findings, or ``error``."""
    return "error" if evaluation[4] is not None else strongest_action(evaluation[1]) if evaluation[1] else "pass"


class PendingDecision:
    """A decision record's facts; calling it builds the record (the audit log does, in a batch).

    The decision time is taken now (``time_ns``). ``verdict`` is allow / redact / block / error;
    each evaluation becomes an invariant result (``conversation`` is needed only to place
    findings); ``charges`` entries follow the ``Charge`` message (budget, key, tokens, cost,
    currency, remaining, estimated).
    """

    __slots__ = (
        "charges",
        "conversation",
        "duration_us",
        "enforced",
        "error",
        "evaluations",
        "flags",
        "head",
        "phase",
        "status",
        "time_ns",
        "usage",
        "verdict",
    )

    def __init__(
        self,
        head: Record,
        phase: str,
        verdict: str,
        enforced: bool,
        evaluations: list[Evaluation],
        *,
        conversation: Conversation | None = None,
        status: int = 0,
        error: str | None = None,
        flags: Sequence[str] = (),
        usage: Mapping[str, Any] | None = None,
        charges: Sequence[Mapping[str, Any]] = (),
        duration_us: int = 0,
    ) -> None:
        self.time_ns = time.time_ns()
        self.head, self.phase, self.verdict, self.enforced = head, phase, verdict, enforced
        self.evaluations, self.conversation = evaluations, conversation
        self.status, self.error, self.flags, self.usage, self.duration_us = status, error, flags, usage, duration_us
        self.charges = [dict(c) for c in charges] if charges else ()  # budgets may reuse theirs

    def __call__(self) -> Record:
        """The record: a copy of ``head`` completed with this decision (empty fields left out)."""
        record = self.head.copy()
        record["time"] = rfc3339(self.time_ns)
        record["phase"] = phase_name(self.phase)
        record["verdict"] = _VERDICTS[self.verdict]
        record["enforced"] = self.enforced
        if self.evaluations:
            conversation = self.conversation
            record["results"] = [
                invariant_result(name, findings, (stop - start) // 1000, conversation, error=failure)
                for name, findings, start, stop, failure in self.evaluations
            ]
        if self.status:
            record["status"] = self.status
        if self.error:
            record["error"] = self.error
        if self.flags:
            record["flags"] = list(self.flags)
        if self.usage:
            record["usage"] = dict(self.usage)
        if self.charges:
            record["charges"] = self.charges
        if self.duration_us:
            record["duration_us"] = self.duration_us
        return record


_second_cache: tuple[int, str] = (-1, "")


def rfc3339(time_ns: int) -> str:
    """``2026-11-22T04:09:38.123456Z`` (proto3 JSON Timestamp, microseconds)."""
    global _second_cache  # noqa: PLW0603 - one-entry cache: most records share their second
    seconds, remainder = divmod(time_ns, 1_000_000_000)
    cached_second, prefix = _second_cache
    if seconds != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache = (seconds, prefix)
    return f"{prefix}.{remainder // 1000:06d}Z"


def _finite(value: float) -> float:
    """Scores must be finite JSON numbers; a broken detector's NaN must not break the log."""
    return value if math.isfinite(value) else 0.0
