"""Spend, refusal and store-error counters (OpenTelemetry API; the server picks the exporter)."""

from __future__ import annotations

from opentelemetry import metrics

from irl_extproc.budgets.ledger import Charge


class BudgetMetrics:
    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("irl_extproc.budgets")
        self._spend = meter.create_counter("irl.budget.spend", unit="USD", description="charged spend")
        self._tokens = meter.create_counter("irl.budget.tokens", unit="{token}", description="charged tokens")
        self._refusals = meter.create_counter("irl.budget.refusals", description="requests refused by a rule")
        self._store_errors = meter.create_counter(
            "irl.budget.store_errors", description="store calls that failed or timed out, by the fail mode applied"
        )

    def charged(self, charge: Charge, pool: str, tenant: str | None) -> None:
        attributes: dict[str, str | bool] = {"pool": pool, "tenant": tenant or "", "model": charge.model or "",
                      "estimated": charge.estimated}
        if charge.micro_usd is not None:
            self._spend.add(charge.micro_usd / 1_000_000, attributes)
        self._tokens.add(charge.input_tokens, {**attributes, "kind": "input"})
        self._tokens.add(charge.output_tokens, {**attributes, "kind": "output"})

    def refused(self, rule: str, pool: str, tenant: str | None) -> None:
        self._refusals.add(1, {"rule": rule, "pool": pool, "tenant": tenant or ""})

    def store_error(self, invariant: str, backend: str, on_error: str) -> None:
        self._store_errors.add(1, {"invariant": invariant, "backend": backend, "on_error": on_error})
