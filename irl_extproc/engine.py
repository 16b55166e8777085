"""The evaluation path shared by the ext_proc server and `irl check`.

A policy is compiled once per load (regexes, schemas, classifiers built in the
invariants' constructors); each message then runs the route's invariants and gets
one decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from irl_extproc.codecs.base import Codec, apply_redactions
from irl_extproc.conversation import Conversation
from irl_extproc.decision import Decision, decide
from irl_extproc.invariants.base import CheckContext, Finding, Invariant, InvariantConfig
from irl_extproc.invariants.registry import build
from irl_extproc.policy.load import LoadedPolicy
from irl_extproc.policy.resolve import EffectiveSentinel, ResolvedRoute, resolve_routes


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


def _compile(configs: tuple[InvariantConfig, ...]) -> tuple[CompiledInvariant, ...]:
    return tuple(CompiledInvariant(c, build(c)) for c in configs)


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
                routes[route.id] = CompiledRoute(route, s, _compile(s.request), _compile(s.response))
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


def evaluate(
    invariants: tuple[CompiledInvariant, ...],
    conversation: Conversation,
    context: CheckContext,
    mode: str,
) -> Decision:
    findings: list[Finding] = []
    for invariant in invariants:
        findings += invariant.impl.check(conversation, context)
    return decide(findings, "monitor" if mode == "monitor" else "enforce")


def redact(conversation: Conversation, decision: Decision) -> int:
    """Apply an enforced decision's redactions to the conversation's body."""
    return apply_redactions(conversation, decision.redactions) if decision.enforced else 0


def decode(codec: Codec, direction: str, body: Any) -> Conversation:
    return codec.decode_request(body) if direction == "request" else codec.decode_response(body)
