"""The explicit name → invariant registry. Add a line here to add an invariant."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from irl_extproc.invariants import (
    budget,
    canary,
    deny_patterns,
    json_schema,
    limits,
    links,
    loop_guard,
    patterns,
    pii,
    prompt_injection,
    secrets,
    sql,
)
from irl_extproc.invariants.base import Invariant, InvariantConfig


@dataclass(frozen=True)
class InvariantType:
    config: type[InvariantConfig]
    build: Callable[[Any], Invariant]


REGISTRY: dict[str, InvariantType] = {
    t.config.name: t
    for t in (
        InvariantType(deny_patterns.DenyPatternsConfig, deny_patterns.DenyPatterns),
        InvariantType(limits.LimitsConfig, limits.Limits),
        InvariantType(pii.PiiConfig, pii.Pii),
        InvariantType(prompt_injection.PromptInjectionConfig, prompt_injection.PromptInjection),
        InvariantType(secrets.SecretsConfig, secrets.Secrets),
        InvariantType(json_schema.JsonSchemaConfig, json_schema.JsonSchema),
        InvariantType(patterns.PatternsConfig, patterns.Patterns),
        InvariantType(links.LinksConfig, links.Links),
        InvariantType(sql.SqlConfig, sql.Sql),
        InvariantType(canary.CanaryConfig, canary.Canary),
        InvariantType(budget.BudgetConfig, budget.Budget),
        InvariantType(loop_guard.LoopGuardConfig, loop_guard.LoopGuard),
    )
}


def build(config: InvariantConfig) -> Invariant:
    return REGISTRY[config.name].build(config)
