"""The evaluation path shared by the ext_proc server and `irl check`.

A policy is compiled once per load (regexes, schemas, classifiers built in the
invariants' constructors); each message then runs the route's invariants and gets
one decision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from irl_extproc.codecs.base import Codec, apply_redactions
from irl_extproc.conversation import Conversation
from irl_extproc.decision import Decision, decide
from irl_extproc.invariants.base import CheckContext, Finding, Invariant, InvariantConfig, apply_edits
from irl_extproc.invariants.registry import build
from irl_extproc.policy.load import LoadedPolicy, PolicyError, Problem
from irl_extproc.policy.resolve import EffectiveSentinel, ResolvedRoute, resolve_routes
from irl_extproc.telemetry.record import Evaluation

_clock = time.perf_counter_ns


@dataclass(frozen=True, slots=True)
class CompiledInvariant:
    config: InvariantConfig
    impl: Invariant


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: ResolvedRoute
    sentinel: EffectiveSentinel
    request: tuple[CompiledInvariant, ...]
    response: tuple[CompiledInvariant, ...]


def _compile(configs: tuple[InvariantConfig, ...], where: str, source: str) -> tuple[CompiledInvariant, ...]:
    compiled = []
    for index, config in enumerate(configs):
        try:
            compiled.append(CompiledInvariant(config, build(config)))
        except ValueError as exc:  # e.g. a hash redaction whose key variable is unset
            raise PolicyError([Problem(source, None, f"{where}[{index}].{config.name}", str(exc))]) from None
    return tuple(compiled)


@dataclass(frozen=True)
class CompiledPolicy:
    loaded: LoadedPolicy
    routes: dict[str, CompiledRoute]  # by route id "service/route"; only routes IRL is in

    @classmethod
    def compile(cls, loaded: LoadedPolicy) -> CompiledPolicy:
        routes = {}
        for route in resolve_routes(loaded.document):
            if route.sentinel is not None:
                s = route.sentinel
                where = f"services.{route.service} route {route.name!r} sentinel"
                request = _compile(s.request, f"{where}.request", loaded.source)
                response = _compile(s.response, f"{where}.response", loaded.source)
                routes[route.id] = CompiledRoute(route, s, request, response)
        return cls(loaded, routes)

    @property
    def version(self) -> str:
        return self.loaded.version


def prepare(invariants: tuple[CompiledInvariant, ...], conversation: Conversation, context: CheckContext) -> bool:
    """Run the optional request-rewriting hooks (e.g. canaries). True if the body changed."""
    changed = False
    for invariant in invariants:
        hook: Any = getattr(invariant.impl, "prepare", None)
        if hook is not None:
            changed = bool(hook(conversation, context)) or changed
    return changed


def _mode(mode: str) -> Literal["enforce", "monitor"]:
    return "monitor" if mode == "monitor" else "enforce"


def evaluate(
    invariants: tuple[CompiledInvariant, ...],
    conversation: Conversation,
    context: CheckContext,
    mode: str,
) -> Decision:
    """Offline evaluation (`irl check`): every invariant's state-free ``check``."""
    findings: list[Finding] = []
    for invariant in invariants:
        findings += invariant.impl.check(conversation, context)
    return decide(findings, _mode(mode))


async def evaluate_live(
    invariants: tuple[CompiledInvariant, ...],
    conversation: Conversation,
    context: CheckContext,
    mode: str,
    evaluations: list[Evaluation] | None = None,
) -> Decision:
    """The server's evaluation: invariants with shared state (budgets) await ``check_async``.

    ``evaluations``, when given, gets one ``Evaluation`` per invariant (name, findings, clock
    readings, the exception type if it raised): telemetry's spans, metrics and audit results.
    """
    findings: list[Finding] = []
    for invariant in invariants:
        impl, start = invariant.impl, _clock()
        try:
            live = getattr(impl, "check_async", None)
            found = await live(conversation, context) if live else impl.check(conversation, context)
        except BaseException as exc:
            if evaluations is not None:
                evaluations.append((invariant.config.name, (), start, _clock(), type(exc).__name__))
            raise
        if evaluations is not None:
            evaluations.append((invariant.config.name, found, start, _clock(), None))
        findings += found
    return decide(findings, _mode(mode))


async def settle(
    invariants: tuple[CompiledInvariant, ...],
    response: Conversation | None,
    context: CheckContext,
    *,
    completed: bool,
) -> None:
    """Tell request-side invariants how the exchange ended (budgets charge usage here)."""
    for invariant in invariants:
        hook = getattr(invariant.impl, "settle", None)
        if hook is not None:
            await hook(response, context, completed=completed)


def redact(conversation: Conversation, decision: Decision) -> int:
    """Apply an enforced decision's redactions (text spans and field edits) to the body."""
    if not decision.enforced:
        return 0
    return apply_redactions(conversation, decision.redactions) + apply_edits(conversation, decision.findings)


def decode(codec: Codec, direction: str, body: Any) -> Conversation:
    return codec.decode_request(body) if direction == "request" else codec.decode_response(body)
