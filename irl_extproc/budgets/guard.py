"""What the budget and loop_guard invariants share: counter scope, the store, and its fail modes."""

from __future__ import annotations

import math
from typing import ClassVar, Generic, TypeVar

from pydantic import Field

from irl_extproc.budgets.ledger import Per, Scope, scope_for
from irl_extproc.budgets.metrics import BUDGET_METRICS, BudgetMetrics
from irl_extproc.budgets.store import CounterStore, StoreConfig, load_backend, shared_store
from irl_extproc.invariants.base import Action, CheckContext, Finding, InvariantConfig


class CounterConfig(InvariantConfig):
    """Fields of every invariant that keeps counters across requests (and replicas)."""

    per: Per = Field(
        "tenant", description="whose counters: tenant, api_key or team (from trusted identity), or global"
    )
    pool: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="routes naming the same pool share counters; default: one pool per service",
    )
    store: StoreConfig = Field(default_factory=StoreConfig)


C = TypeVar("C", bound=CounterConfig)


class CounterGuard(Generic[C]):
    """Base of the budget and loop_guard invariants (their config type is ``C``)."""

    invariant: ClassVar[str]

    def __init__(self, config: C, store: CounterStore | None = None, metrics: BudgetMetrics | None = None) -> None:
        self.config = config
        self._store = store
        if store is None:
            load_backend(config.store)
        self.metrics = metrics or BUDGET_METRICS

    @property
    def store(self) -> CounterStore:
        """Given, or the process's shared store for this config (opened on first use, in the loop)."""
        if self._store is None:
            self._store = shared_store(self.config.store)
        return self._store

    @staticmethod
    def tenant(context: CheckContext) -> str | None:
        return context.tenant or context.identity.get("tenant")

    def scope(self, context: CheckContext) -> Scope:
        config = self.config
        pool = config.pool or context.route_id.split("/")[0]
        identity = {**context.identity, "tenant": self.tenant(context) or ""}
        return scope_for(config.store.key_prefix, pool, config.per, identity)

    @property
    def block_action(self) -> Action:
        # Counters cannot be redacted away: redact means block, as for the limits invariant.
        return "monitor" if self.config.action == "monitor" else "block"

    def store_failure(self, context: CheckContext) -> Finding:
        """The configured fail mode as a finding: flagged under fail_open, a 503 under fail_closed."""
        store = self.config.store
        self.metrics.store_error(self.invariant, store.backend, store.on_error)
        rule = f"{self.invariant}.store_unavailable"
        if store.on_error == "fail_open":
            message = "counter store unavailable: passed unchecked (fail_open)"
            return Finding(self.invariant, rule, "monitor", message, layer="limit")
        context.client_headers["retry-after"] = str(max(1, math.ceil(store.cooldown)))
        message = "counter store unavailable: refused (fail_closed); retry shortly"
        return Finding(self.invariant, rule, self.block_action, message, layer="limit", status=503)
