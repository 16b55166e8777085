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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from irl_extproc.conversation import Conversation
from irl_extproc.invariants.base import Finding
from irl_extproc.telemetry import record as records
from irl_extproc.telemetry.tracing import NOOP_SPAN, AnySpan, AnyTrace, Metadata, extract

if TYPE_CHECKING:
    from irl_extproc.decision import Decision
    from irl_extproc.telemetry.audit import Receipt
    from irl_extproc.telemetry.setup import Telemetry

_OPERATIONS = {"openai-chat": "chat", "anthropic-messages": "chat", "openai-responses": "chat"}


class InvariantScope:
    """Times one invariant evaluation; set ``findings`` to what the check returned."""

    __slots__ = ("_span", "_start", "_stream", "findings", "name")

    def __init__(self, stream: StreamTelemetry, name: str) -> None:
        self._stream = stream
        self.name = name
        self.findings: Sequence[Finding] = ()

    def __enter__(self) -> InvariantScope:
        self._span = self._stream.trace.child(f"irl.invariant.{self.name}", self._stream._phase_span)
        self._start = time.perf_counter_ns()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        elapsed_ns = time.perf_counter_ns() - self._start
        error = exc_type.__name__ if exc_type is not None else None
        self._stream._invariant_done(self.name, self.findings, elapsed_ns, error, self._span)


class _Unobserved:
    """What ``invariant``/``phase`` return when this process records nothing at all."""

    __slots__ = ("findings",)

    def __init__(self) -> None:
        self.findings: Sequence[Finding] = ()

    def __enter__(self) -> _Unobserved:
        return self

    def __exit__(self, *_: object) -> None:
        pass


class PhaseScope:
    """One ext_proc message: a child span of the stream span and a latency sample."""

    __slots__ = ("_phase", "_stream")

    def __init__(self, stream: StreamTelemetry, phase: str) -> None:
        self._stream, self._phase = stream, phase

    def __enter__(self) -> PhaseScope:
        self._stream._begin_phase(self._phase)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._stream._end_phase(exc_type.__name__ if exc_type is not None else None)


class StreamTelemetry:
    """Telemetry of one ext_proc stream. Not shared between streams or threads."""

    __slots__ = (
        "_active", "_hub", "_labels", "_phase", "_phase_span", "_phase_start", "_results", "mode", "policy_version",
        "request_id", "request_model", "route", "service", "tenant", "trace", "verdict",
    )

    def __init__(self, hub: Telemetry, metadata: Metadata | None, *, service: str, route: str,
                 policy_version: str, mode: str) -> None:
        self._hub = hub
        self.service, self.route, self.policy_version, self.mode = service, route, policy_version, mode
        self.request_id = ""
        self.tenant: str | None = None
        self.request_model = ""
        self.verdict = "allow"  # the strongest verdict so far, for the stream span
        self._labels = (service, route)
        self._phase = ""
        self._phase_span: AnySpan = NOOP_SPAN
        self._phase_start = 0
        self._results: list[tuple[str, Sequence[Finding], int, str | None]] = []
        self.trace: AnyTrace = hub.tracer.stream(
            extract(metadata),
            (("rpc.system", "grpc"), ("irl.service", service), ("irl.route", route),
             ("irl.policy_version", policy_version[:12])),
        )
        self._active = self.trace.recording or hub.metrics is not None or hub.audit is not None
        if hub.metrics is not None:
            hub.metrics.streams.add(self._labels)

    @property
    def trace_id(self) -> str:
        return self.trace.trace_id_hex

    # -- scopes -------------------------------------------------------------------------------

    def phase(self, phase: str) -> PhaseScope | _Unobserved:
        """``with tel.phase("request_body"):`` around the handling of one ext_proc message."""
        return PhaseScope(self, phase) if self._active else _Unobserved()

    def invariant(self, name: str) -> InvariantScope | _Unobserved:
        """``with tel.invariant(name) as check: check.findings = ...`` around one evaluation."""
        return InvariantScope(self, name) if self._active else _Unobserved()

    def _begin_phase(self, phase: str) -> None:
        self._phase = phase
        self._results = []
        self._phase_span = self.trace.child(f"irl.{phase}")
        self._phase_start = time.perf_counter_ns()

    def _end_phase(self, error: str | None) -> None:
        span = self._phase_span
        if error is not None:
            span.fail(error)
        span.end()
        self._phase_span = NOOP_SPAN
        metrics = self._hub.metrics
        if metrics is not None:
            seconds = (time.perf_counter_ns() - self._phase_start) / 1e9
            metrics.phase_duration.record((*self._labels, self._phase), seconds)

    def _invariant_done(self, name: str, findings: Sequence[Finding], elapsed_ns: int, error: str | None,
                        span: AnySpan) -> None:
        action = records.strongest_action(findings)
        self._results.append((name, findings, elapsed_ns // 1000, error))
        if span is not NOOP_SPAN:
            span.set("irl.invariant", name)
            span.set("irl.action", action)
            if findings:  # the span's own duration is the evaluation time
                span.set("irl.findings", len(findings))
                top = max(findings, key=lambda f: f.score)
                span.set("irl.score", float(top.score))
                span.set("irl.rule", top.rule)
                span.set("irl.layer", top.layer)
            if error is not None:
                span.fail(error)
            span.end()
        metrics = self._hub.metrics
        if metrics is not None:
            service, route = self._labels
            metrics.invariant_results.add((service, route, name, action if error is None else "error"))
            metrics.invariant_duration.record((service, route, name), elapsed_ns / 1e9)

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
        results = [
            records.invariant_result(name, findings, duration_us, conversation, error=failure)
            for name, findings, duration_us, failure in self._results
        ]
        record = records.decision_record(
            service=self.service, route=self.route, policy_version=self.policy_version, mode=self.mode,
            phase=self._phase, verdict=verdict, enforced=enforced, results=results, request_id=self.request_id,
            trace_id=self.trace.trace_id_hex, span_id=self.trace.span_id_hex, tenant=self.tenant, status=status,
            error=error, flags=flags, usage=usage, charges=charges,
            duration_us=(time.perf_counter_ns() - self._phase_start) // 1000 if self._phase_start else 0,
        )
        return self._hub.audit_record(record)

    def _note(self, verdict: str, enforced: bool, error: str | None, usage: Mapping[str, Any]) -> None:
        """The decision's traces and metrics."""
        span = self._phase_span
        span.set("irl.verdict", verdict)
        span.set("irl.enforced", enforced)
        if error:
            span.fail(error)
        if enforced and _RANK[verdict] > _RANK[self.verdict]:
            self.verdict = verdict
        if usage:
            self._usage(usage)
        metrics = self._hub.metrics
        if metrics is not None:
            service, route = self._labels
            metrics.decisions.add((service, route, self._phase, verdict, "true" if enforced else "false"))
            if error:
                metrics.stream_errors.add((service, route, error))

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

    def close(self, error: str | None = None) -> None:
        """End the stream span (call once, in a ``finally``); ``error`` marks a broken stream."""
        root = self.trace.root
        root.set("irl.verdict", self.verdict)  # the request id is on Envoy's span (guid:x-request-id)
        if error is not None:
            root.fail(error)
            metrics = self._hub.metrics
            if metrics is not None:
                metrics.stream_errors.add((*self._labels, error))
        self.trace.finish()


_RANK = {"allow": 0, "redact": 1, "block": 2, "error": 3}
_GEN_AI = {
    "provider": "gen_ai.provider.name",
    "response_model": "gen_ai.response.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
}
