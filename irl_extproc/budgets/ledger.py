"""Budget counters: which ones a request touches, their keys, and what a finished call costs.

Keys carry a Redis hash tag (``{pool|per=principal}``) so all counters one reservation
touches live in one slot, and every variable part is percent-encoded so keys parse back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field, model_validator

from irl_extproc.budgets import windows
from irl_extproc.budgets.pricing import Price, format_usd, matches, micro_usd
from irl_extproc.budgets.store import Adjustment, CounterSpec, largest_fit

Metric = Literal["tokens", "usd"]
Per = Literal["tenant", "api_key", "team", "global"]
ANONYMOUS = "_anonymous"  # requests without the principal share one budget: no way around it
EVERYONE = "*"


class BudgetLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    window: windows.Window = Field(description="calendar window in UTC: minute, hour, day or month")
    tokens: int | None = Field(None, gt=0, description="input + output tokens in the window")
    usd: float | None = Field(None, gt=0, description="spend in US dollars in the window (needs prices)")
    model: str | None = Field(None, description="count only this model (exact, or a prefix ending in '*')")

    @model_validator(mode="after")
    def _has_amount(self) -> BudgetLimit:
        if self.tokens is None and self.usd is None:
            raise ValueError("give 'tokens', 'usd' or both, e.g. {window: day, tokens: 1000000}")
        return self


@dataclass(frozen=True, slots=True)
class Scope:
    prefix: str
    pool: str
    per: Per
    principal: str
    tag: str = ""  # the keys' Redis hash tag, derived once

    def __post_init__(self) -> None:
        tag = f"{{{quote(self.pool, safe='')}|{self.per}={quote(self.principal, safe='')}}}"
        object.__setattr__(self, "tag", tag)


@dataclass(frozen=True, slots=True)
class CounterKey:
    pool: str
    per: str
    principal: str
    window: str
    start: int
    metric: str
    model: str | None


def scope_for(prefix: str, pool: str, per: Per, identity: dict[str, str]) -> Scope:
    """``identity`` holds the trusted principals (``CheckContext.identity`` plus its tenant)."""
    principal = EVERYONE if per == "global" else identity.get(per) or ANONYMOUS
    return Scope(prefix, pool, per, principal)


def budget_key(scope: Scope, window: windows.Window, start: int, metric: Metric, model: str | None) -> str:
    key = f"{scope.prefix}b:{scope.tag}:{window}:{start}:{metric}"
    return f"{key}:{quote(model, safe='')}" if model else key


def loop_key(scope: Scope, digest: str) -> str:
    return f"{scope.prefix}l:{scope.tag}:{digest}"


def parse_budget_key(prefix: str, key: str) -> CounterKey | None:
    if not key.startswith(prefix + "b:{"):
        return None
    tag, _, rest = key[len(prefix) + 3 :].partition("}:")
    pool, _, who = tag.partition("|")
    per, _, principal = who.partition("=")
    parts = rest.split(":")
    if len(parts) not in (3, 4) or not parts[1].isdigit():
        return None
    model = unquote(parts[3]) if len(parts) == 4 else None
    return CounterKey(unquote(pool), per, unquote(principal), parts[0], int(parts[1]), parts[2], model)


@dataclass(frozen=True, slots=True)
class Planned:
    """A counter one request touches, with what headers and refusals need to know about it."""

    spec: CounterSpec
    metric: Metric
    window: windows.Window
    window_end: int


def applicable(limits: list[BudgetLimit], model: str | None) -> list[BudgetLimit]:
    """The limits a request for ``model`` counts against."""
    return [lim for lim in limits if lim.model is None or (model is not None and matches(lim.model, model))]


def plan(
    limits: list[BudgetLimit], scope: Scope, *, price: Price | None, input_tokens: int, now: float
) -> list[Planned]:
    """The counters of these (applicable) limits. ``price`` must be set if any is a usd limit."""
    planned = []
    for limit in limits:
        start, end = windows.bounds(limit.window, now)
        expire_at = end + windows.EXPIRY_SLACK_SECONDS
        if limit.tokens is not None:
            key = budget_key(scope, limit.window, start, "tokens", limit.model)
            planned.append(Planned(CounterSpec(key, limit.tokens, input_tokens, 1.0, expire_at), "tokens",
                                   limit.window, end))
        if limit.usd is not None:
            assert price is not None
            key = budget_key(scope, limit.window, start, "usd", limit.model)
            spec = CounterSpec(key, round(limit.usd * 1_000_000), micro_usd(price, input_tokens, 0), price.output,
                               expire_at)
            planned.append(Planned(spec, "usd", limit.window, end))
    return planned


def headers(planned: list[Planned], used: tuple[int, ...], now: float) -> dict[str, str]:
    """``x-irl-budget-*``: the tightest remaining amount per metric and when its window resets."""
    out: dict[str, str] = {}
    for metric in ("tokens", "usd"):
        rows = [(p.spec.limit - u, p) for p, u in zip(planned, used, strict=True) if p.metric == metric]
        if not rows:
            continue
        remaining, tightest = min(rows, key=lambda r: r[0])
        remaining = max(0, remaining)
        out[f"x-irl-budget-remaining-{metric}"] = format_usd(remaining) if metric == "usd" else str(remaining)
        out[f"x-irl-budget-reset-{metric}"] = str(max(1, tightest.window_end - int(now)))
    return out


def retry_after(planned: list[Planned], used: tuple[int, ...], k_min: int, now: float) -> int:
    """Seconds until every counter that refused this request has reset."""
    ends = [p.window_end for p, u in zip(planned, used, strict=True) if largest_fit(p.spec, u, k_min) < k_min]
    return max(1, max(ends, default=int(now) + 1) - int(now))


@dataclass(frozen=True, slots=True)
class Charge:
    """What one exchange cost; goes to the decision record and the spend metrics."""

    model: str | None
    input_tokens: int
    output_tokens: int
    micro_usd: int | None  # None: no price for the model
    estimated: bool

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"model": self.model, "input_tokens": self.input_tokens,
                                  "output_tokens": self.output_tokens, "estimated": self.estimated}
        if self.micro_usd is not None:
            record["usd"] = format_usd(self.micro_usd)
        return record


@dataclass(slots=True)
class Hold:
    """A request's open reservation, kept in the stream's context until settled."""

    pool: str
    tenant: str | None
    planned: tuple[Planned, ...]
    reserved: tuple[int, ...]
    price: Price | None
    model: str | None
    input_tokens: int
    output_tokens: int
    charge: Charge | None = None
    settled: bool = False

    def charge_for(self, input_tokens: int, output_tokens: int, *, estimated: bool) -> Charge:
        cost = micro_usd(self.price, input_tokens, output_tokens) if self.price else None
        return Charge(self.model, input_tokens, output_tokens, cost, estimated)

    def adjustments(self, charge: Charge | None) -> list[Adjustment]:
        """Deltas that turn the reservation into the charge (or, with None, release it)."""
        changes = []
        for p, reserved in zip(self.planned, self.reserved, strict=True):
            actual = 0
            if charge is not None:
                actual = charge.input_tokens + charge.output_tokens if p.metric == "tokens" else charge.micro_usd or 0
            if actual != reserved:
                changes.append(Adjustment(p.spec.key, actual - reserved, p.spec.expire_at))
        return changes

