"""Token and spend budgets, model rules and max_tokens caps, per tenant, shared across replicas.

Request side (``check_async``): model allow/deny and rewrites, then one atomic
check-and-reserve of the prompt's estimated tokens/cost plus an output allowance; the
allowance is written into the body as ``max_tokens`` when the budget cannot cover more.
Response side (``settle``): the provider's exact ``usage`` (or a marked estimate) replaces
the reservation; an exchange that never completed releases it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from irl_extproc.budgets import ledger
from irl_extproc.budgets.guard import CounterConfig, CounterGuard
from irl_extproc.budgets.ledger import BudgetLimit, Charge, Hold, Planned
from irl_extproc.budgets.metrics import BudgetMetrics
from irl_extproc.budgets.pricing import Price, any_match, estimate_input_tokens, estimate_tokens, matches, price_of
from irl_extproc.budgets.store import (
    Adjustment,
    CounterStore,
    Reservation,
    StoreUnavailable,
    amount,
    largest_fit,
)
from irl_extproc.conversation import Conversation
from irl_extproc.invariants.base import CheckContext, Finding

STATE_KEY = "budget"  # context.state[STATE_KEY]: {invariant instance id: Hold}
_instance_ids = itertools.count()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantRules(_Strict):
    limits: list[BudgetLimit] | None = Field(None, description="replaces the budget's limits for this tenant")
    allowed_models: list[str] | None = Field(None, description="exact names, or prefixes ending in '*'")
    denied_models: list[str] | None = None
    max_tokens: int | None = Field(None, gt=0, description="ceiling on max_tokens for this tenant")


class Rewrite(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    source: str = Field(alias="from", description="model requested (exact, or a prefix ending in '*')")
    to: str = Field(min_length=1, description="model sent upstream instead")
    tenants: list[str] | None = Field(None, description="only for these tenants (default: everyone)")
    when: Literal["always", "exhausted"] = Field(
        "always", description="always, or only when the budget cannot cover the requested model"
    )


def _duplicate_limits(limits: list[BudgetLimit]) -> str | None:
    seen = set()
    for limit in limits:
        for metric in ("tokens", "usd"):
            key = (limit.window, metric, limit.model)
            if getattr(limit, metric) is None:
                continue
            if key in seen:
                return f"two {limit.window} {metric} limits for model {limit.model or 'any'}; keep one"
            seen.add(key)
    return None


class BudgetConfig(CounterConfig):
    name: ClassVar[str] = "budget"
    needs_response: ClassVar[bool] = True  # usage is charged from the response
    limits: list[BudgetLimit] = Field(default_factory=list, description="all must hold; each is one counter")
    prices: dict[str, Price] = Field(
        default_factory=dict, description="per model (exact, or a prefix ending in '*'): USD per 1M tokens"
    )
    default_price: Price | None = Field(None, description="for models missing from prices (default: refuse them)")
    allowed_models: list[str] | None = Field(None, description="exact names, or prefixes ending in '*'")
    denied_models: list[str] | None = None
    max_tokens: int | None = Field(None, gt=0, description="ceiling written into requests that ask for more")
    default_max_tokens: int = Field(
        4096, gt=0, description="output allowance reserved (and, with cap_max_tokens, set) when a request sets none"
    )
    min_output_tokens: int = Field(16, gt=0, description="refuse rather than cap below this many output tokens")
    cap_max_tokens: bool = Field(True, description="lower max_tokens to what the budget still covers")
    stream_usage: bool = Field(
        False,
        description="ask OpenAI streams for a final usage chunk (stream_options.include_usage), so streamed "
        "calls are charged exactly; clients then receive one extra chunk with no choices",
    )
    rewrites: list[Rewrite] = Field(default_factory=list, description="first matching rule applies")
    tenants: dict[str, TenantRules] = Field(default_factory=dict, description="per-tenant overrides")

    @model_validator(mode="after")
    def _consistent(self) -> BudgetConfig:
        lists = [self.limits, *(r.limits for r in self.tenants.values() if r.limits)]
        for limits in lists:
            if problem := _duplicate_limits(limits):
                raise ValueError(problem)
        if any(lim.usd for limits in lists for lim in limits) and not (self.prices or self.default_price):
            raise ValueError("usd limits need prices: add prices: {model: {input: 0.15, output: 0.6}}")
        return self


_MAX_TOKENS_FIELDS = {"anthropic-messages": "max_tokens", "openai-responses": "max_output_tokens"}


def _max_tokens_field(conversation: Conversation) -> str | None:
    if conversation.api_format == "openai-chat":
        body = conversation.body
        return "max_completion_tokens" if isinstance(body, dict) and "max_completion_tokens" in body else "max_tokens"
    return _MAX_TOKENS_FIELDS.get(conversation.api_format)


@dataclass(slots=True)
class _Request:
    """The state-free part of a request's evaluation."""

    tenant: str | None
    rules: TenantRules | None
    model: str | None
    ceiling: int | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return any(f.action == "block" for f in self.findings)


class Budget(CounterGuard[BudgetConfig]):
    invariant: ClassVar[str] = "budget"

    def __init__(
        self, config: BudgetConfig, store: CounterStore | None = None, metrics: BudgetMetrics | None = None
    ) -> None:
        super().__init__(config, store, metrics)
        self._id = next(_instance_ids)
        self._writes: set[asyncio.Task[None]] = set()  # charges being written to the store

    # -- findings ---------------------------------------------------------------------------

    def _finding(self, rule: str, message: str, *, status: int | None = None) -> Finding:
        return Finding("budget", f"budget.{rule}", self.block_action, message, layer="limit", status=status)

    def _edit(self, rule: str, message: str, path: tuple[str, ...], value: int | str | bool) -> Finding | None:
        if self.config.action == "monitor":
            return None  # monitor never changes a request
        return Finding("budget", f"budget.{rule}", "redact", message, layer="limit", edit=(path, value))

    # -- the state-free part ----------------------------------------------------------------

    def _rewrite(self, model: str | None, tenant: str | None, when: str) -> Rewrite | None:
        for rule in self.config.rewrites:
            applies = rule.tenants is None or tenant in rule.tenants
            if rule.when == when and model and matches(rule.source, model) and applies:
                return rule
        return None

    def _model_findings(self, model: str | None, rules: TenantRules | None, tenant: str | None) -> list[Finding]:
        findings = []
        for allowed, denied, whose in (
            (self.config.allowed_models, self.config.denied_models, "this service"),
            (rules.allowed_models if rules else None, rules.denied_models if rules else None, f"tenant {tenant}"),
        ):
            if allowed is not None and (model is None or not any_match(allowed, model)):
                findings.append(self._finding("model_not_allowed", f"model {model!r} is not allowed for {whose}"))
            if denied and model is not None and any_match(denied, model):
                findings.append(self._finding("model_denied", f"model {model!r} is denied for {whose}"))
        return findings

    def _evaluate(self, conversation: Conversation, context: CheckContext) -> _Request:
        tenant = self.tenant(context)
        rules = self.config.tenants.get(tenant) if tenant else None
        ceilings = [c for c in (self.config.max_tokens, rules.max_tokens if rules else None) if c is not None]
        request = _Request(tenant, rules, conversation.model, min(ceilings, default=None))
        rewrite = self._rewrite(conversation.model, tenant, "always")
        if rewrite is not None:
            request.model = self._rewritten(request, conversation.model, rewrite)
        request.findings += self._model_findings(request.model, rules, tenant)
        return request

    def _rewritten(self, request: _Request, model: str | None, rewrite: Rewrite) -> str:
        message = f"model {model!r} rewritten to {rewrite.to!r} (rewrites: from {rewrite.source!r})"
        if edit := self._edit("rewrite_model", message, ("model",), rewrite.to):
            request.findings.append(edit)
        return rewrite.to

    def _limits(self, request: _Request) -> list[BudgetLimit]:
        rules = request.rules
        return rules.limits if rules and rules.limits is not None else self.config.limits

    def _price(self, model: str | None) -> Price | None:
        return price_of(self.config.prices, model, self.config.default_price)

    def _cap(self, conversation: Conversation, value: int | None, reason: str) -> Finding | None:
        path = _max_tokens_field(conversation)
        if value is None or path is None or value == conversation.max_tokens:
            return None
        return self._edit("max_tokens", f"max_tokens {conversation.max_tokens} -> {value} ({reason})", (path,), value)

    def _stream_usage(self, conversation: Conversation) -> Finding | None:
        body = conversation.body
        if not (self.config.stream_usage and conversation.stream and conversation.api_format == "openai-chat"):
            return None
        options = body.get("stream_options") if isinstance(body, dict) else None
        if isinstance(options, dict) and options.get("include_usage") is True:
            return None
        return self._edit("stream_usage", "asked the stream for its usage", ("stream_options", "include_usage"), True)

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        """Offline part (``irl check``): model rules, 'always' rewrites and the max_tokens ceiling."""
        if conversation.direction != "request":
            return []
        request = self._evaluate(conversation, context)
        if request.ceiling is not None and (conversation.max_tokens or request.ceiling + 1) > request.ceiling:
            request.findings += filter(None, [self._cap(conversation, request.ceiling, "ceiling")])
        return request.findings

    # -- the shared-state part --------------------------------------------------------------

    async def check_async(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        if conversation.direction != "request":
            return []
        request = self._evaluate(conversation, context)
        if request.blocked:
            self._count_refusal(request, context)
            return request.findings
        upper = min((v for v in (conversation.max_tokens, request.ceiling) if v is not None), default=None)
        k_max = upper if upper is not None else self.config.default_max_tokens
        k_min = min(self.config.min_output_tokens, k_max) if self.config.cap_max_tokens else k_max
        try:
            hold, refusal = await self._reserve(conversation, context, request, k_min, k_max)
            if hold is None and (rewrite := self._rewrite(request.model, request.tenant, "exhausted")):
                request.model = self._rewritten(request, request.model, rewrite)
                request.findings += self._model_findings(request.model, request.rules, request.tenant)
                if not request.blocked:
                    hold, refusal = await self._reserve(conversation, context, request, k_min, k_max)
        except StoreUnavailable:
            return [*request.findings, self.store_failure(context)]
        if refusal is not None:
            request.findings.append(refusal)
        else:
            context.client_headers.pop("retry-after", None)  # an earlier attempt's, now moot
        if request.blocked or hold is None:
            self._count_refusal(request, context)
            return request.findings
        context.state.setdefault(STATE_KEY, {})[self._id] = hold
        capped = hold.output_tokens if hold.planned and self.config.cap_max_tokens else upper
        reason = "remaining budget" if capped != upper else "ceiling"
        request.findings += filter(None, [self._cap(conversation, capped, reason), self._stream_usage(conversation)])
        return request.findings

    async def _reserve(
        self, conversation: Conversation, context: CheckContext, request: _Request, k_min: int, k_max: int
    ) -> tuple[Hold | None, Finding | None]:
        """One atomic check-and-reserve: the hold, and the finding when the budget refuses."""
        price = self._price(request.model)
        scope = self.scope(context)
        input_tokens = estimate_input_tokens(conversation)
        limits = ledger.applicable(self._limits(request), request.model)
        if price is None and any(limit.usd for limit in limits):
            message = f"no price for model {request.model!r}: add it to prices or set default_price"
            return None, self._finding("unpriced_model", message)
        planned = ledger.plan(limits, scope, price=price, input_tokens=input_tokens, now=time.time())
        hold = Hold(scope.pool, request.tenant, tuple(planned), (), price, request.model, input_tokens, k_max)
        if not planned:  # nothing to count against: only record the cost
            return hold, None
        reservation = await self.store.reserve([p.spec for p in planned], k_min, k_max)
        now = time.time()
        context.client_headers.update(ledger.headers(planned, reservation.used, now))
        if reservation.granted is not None:
            hold.reserved, hold.output_tokens = reservation.amounts, reservation.granted
            return hold, None
        refusal = self._refusal(planned, reservation, k_min, context, now)
        if self.block_action != "monitor":
            return None, refusal
        # Monitor lets it pass: reserve without the check so the books stay true.
        hold.reserved = tuple(amount(p.spec, k_max) for p in planned)
        pairs = zip(planned, hold.reserved, strict=True)
        await self.store.adjust([Adjustment(p.spec.key, added, p.spec.expire_at) for p, added in pairs])
        return hold, refusal

    def _refusal(
        self, planned: list[Planned], reservation: Reservation, k_min: int, context: CheckContext, now: float
    ) -> Finding:
        wait = ledger.retry_after(planned, reservation.used, k_min, now)
        context.client_headers["retry-after"] = str(wait)
        failing = [p for p, u in zip(planned, reservation.used, strict=True)
                   if largest_fit(p.spec, u, k_min) < k_min]
        binding = max(failing, key=lambda p: p.window_end) if failing else planned[0]
        per = self.config.per
        message = (f"{binding.metric} budget for this {per if per != 'global' else 'service'} is exhausted for the "
                   f"current {binding.window}; retry after {wait}s")
        return self._finding("exhausted", message, status=429)

    def _count_refusal(self, request: _Request, context: CheckContext) -> None:
        for finding in request.findings:
            if finding.action == "block":
                self.metrics.refused(finding.rule, self.scope(context).pool, request.tenant)

    # -- response side ----------------------------------------------------------------------

    async def settle(self, response: Conversation | None, context: CheckContext, *, completed: bool) -> None:
        """Charge the usage (or release the hold). The charge is known at once (decision record,
        metrics); the store write runs in the background so it adds no latency to the response.
        A write that never lands leaves the reservation counted, which errs on the safe side
        whenever the cap held the output below it."""
        hold: Hold | None = context.state.get(STATE_KEY, {}).get(self._id)
        if hold is None or hold.settled:
            return
        hold.settled = True
        if response is not None:
            hold.charge = self._charge(hold, response)
        elif completed:  # answered, but the body was not readable: the reservation is the best estimate
            hold.charge = hold.charge_for(hold.input_tokens, hold.output_tokens, estimated=True)
        if hold.charge is not None:
            self.metrics.charged(hold.charge, hold.pool, hold.tenant)
        if changes := hold.adjustments(hold.charge):
            task = asyncio.create_task(self._write(changes))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, changes: list[Adjustment]) -> None:
        try:
            await self.store.adjust(changes)
        except StoreUnavailable:
            self.metrics.store_error("budget", self.config.store.backend, "unsettled")

    async def flush(self) -> None:
        """Wait for the charges still being written (tests, graceful shutdown)."""
        while self._writes:
            await asyncio.gather(*self._writes)

    @staticmethod
    def _charge(hold: Hold, response: Conversation) -> Charge:
        usage = response.usage
        input_tokens = usage.input_tokens if usage else None
        output_tokens = usage.output_tokens if usage else None
        estimated = usage is None or usage.estimated or input_tokens is None or output_tokens is None
        if output_tokens is None:  # no usage: the text the client got, else what was reserved
            output_tokens = estimate_tokens(response.char_count) if response.segments else hold.output_tokens
        return hold.charge_for(
            input_tokens if input_tokens is not None else hold.input_tokens, output_tokens, estimated=estimated
        )


def charges(context: CheckContext) -> list[dict[str, Any]]:
    """What the stream's budgets charged, for the decision record (empty before settling)."""
    holds: dict[int, Hold] = context.state.get(STATE_KEY, {})
    return [h.charge.record() for h in holds.values() if h.charge is not None]
