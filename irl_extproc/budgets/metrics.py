"""Spend, refusal and store-error counters, in IRL's in-process metrics (telemetry/metrics.py).

One instance per process (``BUDGET_METRICS``): the telemetry hub exports its ``instruments``
next to its own, so they reach Prometheus and OTLP like every other IRL series. Spend is
counted in integer micro-dollars, as the budget counters keep it.
"""

from __future__ import annotations

from irl_extproc.budgets.ledger import Charge
from irl_extproc.telemetry.metrics import Counter


class BudgetMetrics:
    def __init__(self) -> None:
        self.spend = Counter(
            "irl.budget.spend.microdollars", "{microdollar}", "spend charged to budgets, in millionths of a USD",
            ("pool", "tenant", "model", "estimated"),
        )
        self.tokens = Counter(
            "irl.budget.tokens", "{token}", "tokens charged to budgets",
            ("pool", "tenant", "model", "type", "estimated"),
        )
        self.refusals = Counter(
            "irl.budget.refusals", "{request}", "requests a budget, model rule or loop guard refused",
            ("pool", "tenant", "rule"),
        )
        self.store_errors = Counter(
            "irl.budget.store.errors", "{error}",
            "budget/loop store calls that failed or timed out, by the fail mode applied (unsettled: a lost charge)",
            ("invariant", "backend", "on_error"),
        )

    @property
    def instruments(self) -> list[Counter]:
        return [self.spend, self.tokens, self.refusals, self.store_errors]

    def charged(self, charge: Charge, pool: str, tenant: str | None) -> None:
        labels = (pool, tenant or "", charge.model or "")
        estimated = "true" if charge.estimated else "false"
        if charge.micro_usd is not None:
            self.spend.add((*labels, estimated), charge.micro_usd)
        self.tokens.add((*labels, "input", estimated), charge.input_tokens)
        self.tokens.add((*labels, "output", estimated), charge.output_tokens)

    def refused(self, rule: str, pool: str, tenant: str | None) -> None:
        self.refusals.add((pool, tenant or "", rule))

    def store_error(self, invariant: str, backend: str, on_error: str) -> None:
        self.store_errors.add((invariant, backend, on_error))


BUDGET_METRICS = BudgetMetrics()
