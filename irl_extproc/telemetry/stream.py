"""Per-stream telemetry: one object the processor talks to for spans, metrics and audit.

    tel = telemetry.stream(context.invocation_metadata(), service=..., route=..., ...)
    with tel.phase("request_body"):
        with tel.invariant("pii") as check:
            check.findings = invariant.check(conversation, context)
        durable = tel.decide(decision, conversation=conversation)
        if durable is not None:
            await durable                  # only when the audit must be durable first
    tel.close()

Every piece is optional: with tracing, metrics and audit all off, each call is a few
attribute look-ups on shared no-op objects.

Cost: this runs several times per request, so the hot path builds no object per span or
per check. An invariant evaluation is two clock readings and one tuple; a phase's spans and
metrics are written once, when the phase ends, and the stream's spans are encoded together
when it closes (``StreamTrace``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from irl_extproc.conversation import Conversation
from irl_extproc.invariants.base import Finding
from irl_extproc.telemetry import record as records
from irl_extproc.telemetry.metrics import RouteCells, observe
from irl_extproc.telemetry.otlp_wire import KIND_INTERNAL, Attribute, span_header
from irl_extproc.telemetry.tracing import AnyTrace, Metadata, StreamTrace, UnsampledTrace, extract

if TYPE_CHECKING:
    from irl_extproc.decision import Decision
    from irl_extproc.telemetry.audit import Receipt
    from irl_extproc.telemetry.setup import Telemetry

_OPERATIONS = {"openai-chat": "chat", "anthropic-messages": "chat", "openai-responses": "chat"}
_clock = time.perf_counter_ns

# One invariant evaluation: name, findings, action, start and end (perf_counter ns), error type.
Result = tuple[str, Sequence[Finding], str, int, int, str | None]


class InvariantScope:
    """Times one invariant evaluation; set ``findings`` to what the check returned.

    One per stream, reused for every evaluation (they never nest); ``results`` collects the
    current phase's evaluations.
    """

    __slots__ = ("_start", "findings", "name", "results")

    def __init__(self) -> None:
        self.name = ""
        self.findings: Sequence[Finding] = ()
        self.results: list[Result] = []
        self._start = 0

    def __enter__(self) -> InvariantScope:
        self.findings = ()
        self._start = _clock()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        end = _clock()
        findings = self.findings
        action = records.strongest_action(findings) if findings else "pass"
        error = exc_type.__name__ if exc_type is not None else None
        self.results.append((self.name, findings, action, self._start, end, error))


class _Unobserved:
    """What ``invariant``/``phase`` return when this process records nothing at all."""

    __slots__ = ("findings",)

    def __init__(self) -> None:
        self.findings: Sequence[Finding] = ()

    def __enter__(self) -> _Unobserved:
        return self

    def __exit__(self, *_: object) -> None:
        pass


_UNOBSERVED = _Unobserved()
_UNTRACED = UnsampledTrace(None)


class StreamTelemetry:
    """Telemetry of one ext_proc stream. Not shared between streams or threads.

    ``with tel.phase(name):`` makes the stream itself the context manager of that phase.
    """

    __slots__ = (
        "_active",
        "_cells",
        "_check",
        "_hub",
        "_labels",
        "_metadata",
        "_phase",
        "_phase_enforced",
        "_phase_error",
        "_phase_id",
        "_phase_start",
        "_phase_verdict",
        "_record_head",
        "mode",
        "policy_version",
        "request_id",
        "request_model",
        "route",
        "service",
        "tenant",
        "trace",
        "verdict",
    )

    def __init__(
        self, hub: Telemetry, metadata: Metadata | None, *, service: str, route: str, policy_version: str, mode: str
    ) -> None:
        self._hub = hub
        self.service, self.route, self.policy_version, self.mode = service, route, policy_version, mode
        self.request_id = ""
        self.tenant: str | None = None
        self.request_model = ""
        self.verdict = "allow"  # the strongest verdict so far, for the stream span
        self._labels = (service, route)
        self._metadata = metadata
        self._phase = ""
        self._phase_start = 0
        self._phase_id = 0
        self._phase_verdict: str | None = None  # the phase's decision, for its span
        self._phase_enforced = True
        self._phase_error: str | None = None
        self._check = InvariantScope()
        self._record_head: records.Record | None = None  # built at the first decision record
        self._cells: RouteCells | None = None  # this route's metric cells, when metrics are on
        self.trace: AnyTrace = _UNTRACED  # metrics alone need no trace ids
        self._active = hub.active
        if not self._active:
            return
        if hub.tracer.enabled or hub.audit is not None:
            self.trace = hub.tracer.stream(
                extract(metadata),
                (
                    ("rpc.system", "grpc"),
                    ("irl.service", service),
                    ("irl.route", route),
                    ("irl.policy_version", policy_version[:12]),
                ),
            )
        if hub.metrics is not None:
            self._cells = hub.metrics.route(service, route)
            self._cells.streams[0] += 1

    @property
    def trace_id(self) -> str:
        if self.trace is not _UNTRACED:
            return self.trace.trace_id_hex
        parent = extract(self._metadata)  # nothing needed it so far: read Envoy's trace id when asked
        return parent.trace_id.hex() if parent else ""

    # -- scopes -------------------------------------------------------------------------------

    def phase(self, phase: str) -> StreamTelemetry | _Unobserved:
        """``with tel.phase("request_body"):`` around the handling of one ext_proc message."""
        if not self._active:
            return _UNOBSERVED
        self._phase = phase
        return self

    def invariant(self, name: str) -> InvariantScope | _Unobserved:
        """``with tel.invariant(name) as check: check.findings = ...`` around one evaluation."""
        if not self._active:
            return _UNOBSERVED
        check = self._check
        check.name = name
        return check

    def __enter__(self) -> StreamTelemetry:
        self._check.results = []
        self._phase_verdict, self._phase_enforced, self._phase_error = None, True, None
        trace = self.trace
        if type(trace) is StreamTrace:
            self._phase_id = trace.next_span_id()
        self._phase_start = _clock()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        end = _clock()
        if exc_type is not None:
            self._phase_error = exc_type.__name__
        results = self._check.results
        trace = self.trace
        if type(trace) is StreamTrace:
            self._trace_phase(trace, results, end)
        cells = self._cells
        if cells is not None:
            for name, _findings, action, start, stop, error in results:
                count, duration = cells.invariant(name, action if error is None else "error")
                count[0] += 1
                observe(duration, (stop - start) / 1e9)
            observe(cells.phase(self._phase), (end - self._phase_start) / 1e9)

    def _trace_phase(self, trace: StreamTrace, results: list[Result], end: int) -> None:
        """The phase's span and one child span per invariant evaluation (durations are the spans' own)."""
        offset, spans, phase_id = trace.clock_offset, trace.spans, self._phase_id
        span_id = trace.next_id
        trace.next_id = span_id + len(results)
        for name, findings, action, start, stop, error in results:
            header = _INVARIANT_HEADERS.get((name, action)) or _invariant_header(name, action)
            attributes: Sequence[Attribute] = ()
            if findings or error is not None:
                attributes = _finding_attributes(findings, error)
            spans.append((span_id, phase_id, start + offset, stop + offset, header, attributes, error))
            span_id += 1
        verdict, error = self._phase_verdict, self._phase_error
        key = (self._phase, verdict, self._phase_enforced)
        header = _PHASE_HEADERS.get(key) or _phase_header(*key)
        attributes = () if error is None else (("error.type", error),)
        spans.append(
            (phase_id, trace.root.span_id, self._phase_start + offset, end + offset, header, attributes, error)
        )

    # -- the decision -------------------------------------------------------------------------

    def decide(
        self,
        decision: Decision | None,
        *,
        conversation: Conversation | None = None,
        status: int = 0,
        error: str | None = None,
        flags: Sequence[str] = (),
        charges: Sequence[Mapping[str, Any]] = (),
    ) -> asyncio.Future[Receipt] | None:
        """Record the decision on the current phase's message: span, metrics and audit.

        ``decision`` None means nothing was evaluated: an ``error`` (verdict error) or a
        message passed unchecked (``flags``). The invariant results are those timed
        with ``invariant()`` in this phase. Returns a future to await before answering
        Envoy when the operator asked for durable audit records first (``--audit-wait``).
        """
        if not self._active:
            return None
        verdict = "error" if error else decision.verdict if decision is not None else "allow"
        enforced = decision.enforced if decision is not None else True
        usage: Mapping[str, Any] = {}
        if conversation is not None:
            usage = records.usage_entry(conversation)
            operation = _OPERATIONS.get(conversation.api_format)
            if operation and conversation.direction == "request":
                self.trace.root.set("gen_ai.operation.name", operation)
        self._note(verdict, enforced, error, usage)
        if self._hub.audit is None:
            return None
        head = self._record_head
        if head is None:
            head = self._record_head = records.record_head(
                service=self.service,
                route=self.route,
                policy_version=self.policy_version,
                mode=self.mode,
                request_id=self.request_id,
                trace_id=self.trace.trace_id_hex,
                span_id=self.trace.span_id_hex,
                tenant=self.tenant,
            )
        results = [
            records.invariant_result(name, findings, (stop - start) // 1000, conversation, error=failure, action=action)
            for name, findings, action, start, stop, failure in self._check.results
        ]
        duration_us = (_clock() - self._phase_start) // 1000 if self._phase_start else 0
        record = records.decision_fields(
            head.copy(),
            self._phase,
            verdict,
            enforced,
            results=results,
            status=status,
            error=error,
            flags=flags,
            usage=usage,
            charges=charges,
            duration_us=duration_us,
        )
        return self._hub.audit_record(record)

    def _note(self, verdict: str, enforced: bool, error: str | None, usage: Mapping[str, Any]) -> None:
        """The decision's traces and metrics."""
        self._phase_verdict, self._phase_enforced = verdict, enforced
        if error:
            self._phase_error = error
        if enforced and _RANK[verdict] > _RANK[self.verdict]:
            self.verdict = verdict
        if usage:
            self._usage(usage)
        if self._cells is not None:
            self._cells.decision(self._phase, verdict, enforced)[0] += 1
            if error:
                self._count_error(error)

    def _usage(self, usage: Mapping[str, Any]) -> None:
        root = self.trace.root
        if "request_model" in usage:
            self.request_model = usage["request_model"]
            root.set("gen_ai.request.model", self.request_model)
        for key in ("provider", "response_model", "input_tokens", "output_tokens"):
            if key in usage:
                root.set(_GEN_AI[key], usage[key])
        metrics = self._hub.metrics
        if metrics is not None:
            model = self.request_model or usage.get("response_model", "")
            for key, kind in (("input_tokens", "input"), ("output_tokens", "output")):
                if key in usage:
                    metrics.tokens.add((*self._labels, model, kind), usage[key])

    def _count_error(self, error: str) -> None:
        metrics = self._hub.metrics
        if metrics is not None:
            metrics.stream_errors.add((*self._labels, error))

    def close(self, error: str | None = None) -> None:
        """End the stream span (call once, in a ``finally``); ``error`` marks a broken stream."""
        if not self._active:
            return
        root = self.trace.root
        root.set("irl.verdict", self.verdict)  # the request id is on Envoy's span (guid:x-request-id)
        if error is not None:
            root.fail(error)
            self._count_error(error)
        self.trace.finish()


def _score(finding: Finding) -> float:
    return finding.score


def _finding_attributes(findings: Sequence[Finding], error: str | None) -> list[Attribute]:
    """An invariant span's attributes beyond its name and action: the top finding, the error type."""
    attributes: list[Attribute] = []
    if findings:
        top = max(findings, key=_score)
        attributes += [
            ("irl.findings", len(findings)),
            ("irl.score", float(top.score)),
            ("irl.rule", top.rule),
            ("irl.layer", top.layer),
        ]
    if error is not None:
        attributes.append(("error.type", error))
    return attributes


# Span headers (name, kind and the attributes that repeat) by invariant and action, and by phase
# and decision: a handful each, named by the policy.
_INVARIANT_HEADERS: dict[tuple[str, str], bytes] = {}
_PHASE_HEADERS: dict[tuple[str, str | None, bool], bytes] = {}


def _invariant_header(name: str, action: str) -> bytes:
    header = span_header("irl.invariant." + name, KIND_INTERNAL, (("irl.invariant", name), ("irl.action", action)))
    _INVARIANT_HEADERS[(name, action)] = header
    return header


def _phase_header(phase: str, verdict: str | None, enforced: bool) -> bytes:
    decided: tuple[Attribute, ...] = ()
    if verdict is not None:
        decided = (("irl.verdict", verdict), ("irl.enforced", enforced))
    header = _PHASE_HEADERS[(phase, verdict, enforced)] = span_header("irl." + phase, KIND_INTERNAL, decided)
    return header


_RANK = {"allow": 0, "redact": 1, "block": 2, "error": 3}
_GEN_AI = {
    "provider": "gen_ai.provider.name",
    "response_model": "gen_ai.response.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
}
