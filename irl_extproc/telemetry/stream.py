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

Cost: this runs on every ext_proc message, between the rest of the request's work, where
measured in the server each Python operation costs ~3x what it costs in a loop. So the
messages only record facts: an invariant evaluation is two clock readings and a tuple, a
phase one more tuple (``record.PhaseRecord``), a decision an unbuilt record
(``record.PendingDecision``). Spans, metrics and audit lines are made from them later, a
batch of streams at a time: spans by the exporter, metrics by ``Metrics.absorb``, records by
the audit log's writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from irl_extproc.conversation import Conversation
from irl_extproc.invariants.base import Finding
from irl_extproc.telemetry import record as records
from irl_extproc.telemetry.metrics import RouteCells
from irl_extproc.telemetry.tracing import AnyTrace, Metadata, StreamTrace, UnsampledTrace, extract

if TYPE_CHECKING:
    from irl_extproc.decision import Decision
    from irl_extproc.telemetry.audit import Receipt
    from irl_extproc.telemetry.setup import Telemetry

_OPERATIONS = {"openai-chat": "chat", "anthropic-messages": "chat", "openai-responses": "chat"}
_clock = time.perf_counter_ns


class InvariantScope:
    """Times one invariant evaluation; set ``findings`` to what the check returned.

    One per stream, reused for every evaluation (they never nest); ``evaluations`` collects
    the current phase's.
    """

    __slots__ = ("_start", "evaluations", "findings", "name")

    def __init__(self) -> None:
        self.name = ""
        self.findings: Sequence[Finding] = ()
        self.evaluations: list[records.Evaluation] = []
        self._start = 0

    def __enter__(self) -> InvariantScope:
        self.findings = ()
        self._start = _clock()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        error = exc_type.__name__ if exc_type is not None else None
        self.evaluations.append((self.name, self.findings, self._start, _clock(), error))


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
        "_in_phase",
        "_labels",
        "_metadata",
        "_phase",
        "_phase_enforced",
        "_phase_error",
        "_phase_start",
        "_phase_tokens",
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
        self._in_phase = False
        self._phase_start = 0
        self._phase_verdict: str | None = None  # the phase's decision
        self._phase_enforced = True
        self._phase_error: str | None = None
        self._phase_tokens: records.Tokens | None = None
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
        self._in_phase = True
        self._check.evaluations = []
        self._phase_verdict, self._phase_enforced, self._phase_error, self._phase_tokens = None, True, None, None
        self._phase_start = _clock()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        error = self._phase_error
        if exc_type is not None:
            error = exc_type.__name__
        phase = (
            self._phase,
            self._phase_start,
            _clock(),
            self._phase_verdict,
            self._phase_enforced,
            error,
            self._check.evaluations,
            self._phase_tokens,
        )
        self._in_phase = False
        trace = self.trace
        if type(trace) is StreamTrace:
            trace.phases.append(phase)
        if self._cells is not None:
            self._cells.add_phase(phase)

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
        self._phase_verdict, self._phase_enforced = verdict, enforced
        if error:
            self._phase_error = error
        if enforced and _RANK[verdict] > _RANK[self.verdict]:
            self.verdict = verdict
        usage: Mapping[str, Any] | None = None
        if conversation is not None:
            usage = records.usage_entry(conversation)
            self._usage(usage, conversation)
        if not self._in_phase and self._cells is not None:  # e.g. a streamed response released by a timer
            self._cells.count_decision(self._phase, verdict, enforced, error, self._phase_tokens)
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
        found = decision is not None and decision.findings
        pending = records.PendingDecision(
            head,
            self._phase,
            verdict,
            enforced,
            list(self._check.evaluations),
            conversation=conversation if found else None,  # to place findings; else let the body go
            status=status,
            error=error,
            flags=flags,
            usage=usage,
            charges=charges,
            duration_us=(_clock() - self._phase_start) // 1000 if self._phase_start else 0,
        )
        return self._hub.audit_record(pending)

    def _usage(self, usage: Mapping[str, Any], conversation: Conversation) -> None:
        """Model and tokens: GenAI attributes of the stream span, token counts for the metrics."""
        if "request_model" in usage:
            self.request_model = usage["request_model"]
        trace = self.trace
        if type(trace) is StreamTrace:
            operation = _OPERATIONS.get(conversation.api_format)
            if operation and conversation.direction == "request":
                trace.set("gen_ai.operation.name", operation)
            for key, value in usage.items():
                trace.set(_GEN_AI[key], value)
        if self._cells is not None and ("input_tokens" in usage or "output_tokens" in usage):
            model = self.request_model or usage.get("response_model", "")
            self._phase_tokens = (model, usage.get("input_tokens", -1), usage.get("output_tokens", -1))

    def close(self, error: str | None = None) -> None:
        """End the stream span (call once, in a ``finally``); ``error`` marks a broken stream."""
        if not self._active:
            return
        trace = self.trace
        trace.set("irl.verdict", self.verdict)  # the request id is on Envoy's span (guid:x-request-id)
        if error is not None:
            trace.fail(error)
            metrics = self._hub.metrics
            if metrics is not None:
                metrics.stream_errors.add((*self._labels, error))
        trace.finish()


_RANK = {"allow": 0, "redact": 1, "block": 2, "error": 3}
_GEN_AI = {
    "provider": "gen_ai.provider.name",
    "request_model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
}
