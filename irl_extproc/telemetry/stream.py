"""Per-stream telemetry: one object the processor talks to for spans, metrics and audit.

    tel = telemetry.stream(context.invocation_metadata(), service=..., route=..., ...)
    with tel.phase("request_body"):
        decision = await engine.evaluate_live(..., tel.evaluations)   # appends one tuple per invariant
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
from irl_extproc.telemetry import record as records
from irl_extproc.telemetry.metrics import RouteCells
from irl_extproc.telemetry.tracing import AnyTrace, Metadata, StreamTrace, UnsampledTrace, extract

if TYPE_CHECKING:
    from irl_extproc.decision import Decision
    from irl_extproc.telemetry.audit import Receipt
    from irl_extproc.telemetry.setup import Telemetry

_CHAT_FORMATS = frozenset(("openai-chat", "anthropic-messages", "openai-responses"))  # gen_ai.operation.name chat
_clock = time.perf_counter_ns


class _Unobserved:
    """What ``phase`` returns when this process records nothing at all."""

    __slots__ = ()

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
        "_evaluations",
        "_hub",
        "_in_phase",
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
        self._metadata = metadata
        self._phase = ""
        self._in_phase = False
        self._phase_start = 0
        self._phase_verdict: str | None = None  # the phase's decision
        self._phase_enforced = True
        self._phase_error: str | None = None
        self._phase_tokens: records.Tokens | None = None
        self._evaluations: list[records.Evaluation] = []  # the current phase's
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
        return parent.trace_id if parent else ""

    # -- scopes -------------------------------------------------------------------------------

    def phase(self, phase: str) -> StreamTelemetry | _Unobserved:
        """``with tel.phase("request_body"):`` around the handling of one ext_proc message."""
        if not self._active:
            return _UNOBSERVED
        self._phase = phase
        return self

    @property
    def evaluations(self) -> list[records.Evaluation] | None:
        """Where the current phase's invariant evaluations go (``engine.evaluate_live`` appends
        them), or None when nothing is recorded."""
        return self._evaluations if self._active else None

    def __enter__(self) -> StreamTelemetry:
        self._in_phase = True
        self._evaluations = []
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
            self._evaluations,
            self._phase_tokens,
        )
        self._in_phase = False
        trace = self.trace
        if type(trace) is StreamTrace:
            trace.phases.append(phase)
        cells = self._cells
        if cells is not None:
            cells.add_phase(phase)

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
        message passed unchecked (``flags``). The invariant results are the phase's
        ``evaluations``. Returns a future to await before answering
        Envoy when the operator asked for durable audit records first (``--audit-wait``).
        """
        if not self._active:
            return None
        if error:
            verdict, enforced = "error", True
            self._phase_error = error
        elif decision is None:
            verdict, enforced = "allow", True
        else:
            verdict, enforced = decision.verdict, decision.enforced
        self._phase_verdict, self._phase_enforced = verdict, enforced
        if enforced and _RANK[verdict] > _RANK[self.verdict]:
            self.verdict = verdict
        usage: Mapping[str, Any] | None = None
        if conversation is not None:
            usage = records.usage_entry(conversation)
            if usage:
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
            list(self._evaluations),
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
            trace.gen_ai.update(usage)  # attributes of the stream span, added when it is encoded
            if conversation.direction == "request" and conversation.api_format in _CHAT_FORMATS:
                trace.gen_ai["operation"] = "chat"
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
                metrics.stream_errors.add((self.service, self.route, error))
        trace.finish()


_RANK = {"allow": 0, "redact": 1, "block": 2, "error": 3}
