"""Merge defaults → service → route into one effective setting per route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import BaseModel

from irl_extproc.invariants.base import InvariantConfig
from irl_extproc.policy.load import PolicyError, Problem
from irl_extproc.policy.model import (
    ApiFormat,
    Match,
    PolicyDocument,
    Route,
    Sentinel,
    Service,
    Upstream,
    entry_config,
)
from irl_extproc.policy.resilience import Resilience

M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MESSAGE_TIMEOUT = 0.2  # Envoy's own default
DEFAULT_STREAM_WINDOW_CHARS = 128
DEFAULT_STREAM_WINDOW_TIME = 1.0


def merge(base: M | None, override: M | None) -> M | None:
    """Fields set in ``override`` win; nested models merge; lists replace."""
    if base is None:
        return override
    if override is None:
        return base
    updates = {}
    for name in override.model_fields_set:
        old, new = getattr(base, name), getattr(override, name)
        both_models = isinstance(old, BaseModel) and isinstance(new, BaseModel)
        updates[name] = merge(old, new) if both_models else new
    return base.model_copy(update=updates)


@dataclass(frozen=True)
class EffectiveSentinel:
    mode: Literal["enforce", "monitor"]
    on_error: Literal["fail_open", "fail_closed"]
    format: ApiFormat
    max_body_bytes: int
    content_encoding: Literal["decode", "reject"]
    block_status: int
    message_timeout: float
    log_content: bool
    request: tuple[InvariantConfig, ...]
    response: tuple[InvariantConfig, ...]
    stream_window_chars: int = DEFAULT_STREAM_WINDOW_CHARS
    stream_window_time: float = DEFAULT_STREAM_WINDOW_TIME  # 0: no time bound
    stream_whole_response: Literal["buffer", "append_error"] = "buffer"

    @property
    def inspects_bodies(self) -> bool:
        return bool(self.request or self.response)

    @property
    def needs_request_body(self) -> bool:
        """Request invariants, or response ones that prepare the request (a canary to plant)."""
        return bool(self.request) or any(c.prepares_request for c in self.response)

    @property
    def needs_response(self) -> bool:
        """Response invariants, or request ones that must see the response (budgets charge usage)."""
        return bool(self.response) or any(c.needs_response for c in self.request)


@dataclass(frozen=True)
class ResolvedRoute:
    service: str
    name: str
    match: Match
    upstream: Upstream
    sentinel: EffectiveSentinel | None  # None: IRL is not in this route's path at all
    resilience: Resilience

    @property
    def id(self) -> str:
        return f"{self.service}/{self.name}"


def route_name(route: Route) -> str:
    if route.name:
        return route.name
    raw = (route.match.prefix or route.match.path or "/").strip("/")
    return raw.replace("/", "-").lower() or "root"


def _effective_sentinel(layer: Sentinel | None) -> EffectiveSentinel | None:
    if layer is None:
        return None
    return EffectiveSentinel(
        mode=layer.mode or "enforce",
        on_error=layer.on_error or "fail_closed",
        format=layer.format or "auto",
        max_body_bytes=layer.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        content_encoding=layer.content_encoding or "decode",
        block_status=layer.block_status or 403,
        message_timeout=layer.message_timeout or DEFAULT_MESSAGE_TIMEOUT,
        log_content=bool(layer.log_content),
        request=tuple(entry_config(e) for e in layer.request or ()),
        response=tuple(entry_config(e) for e in layer.response or ()),
        stream_window_chars=layer.stream_window_chars or DEFAULT_STREAM_WINDOW_CHARS,
        stream_window_time=DEFAULT_STREAM_WINDOW_TIME
        if layer.stream_window_time is None
        else layer.stream_window_time,
        stream_whole_response=layer.stream_whole_response or "buffer",
    )


def resolve_routes(document: PolicyDocument) -> list[ResolvedRoute]:
    routes = []
    for service_name, service in document.services.items():
        for route in service.routes:
            routes.append(_resolve(document, service_name, service, route))
    return routes


def _resolve(document: PolicyDocument, service_name: str, service: Service, route: Route) -> ResolvedRoute:
    defaults = document.defaults.sentinel
    sentinel = merge(merge(defaults, service.sentinel), route.sentinel)
    if (
        service.sentinel is None
        and route.sentinel is None
        and not (defaults and (defaults.request or defaults.response))
    ):
        # Default settings alone do not put IRL in a route's path: a sentinel block must
        # appear on the service or route, or the defaults must carry invariants.
        sentinel = None
    resilience = merge(merge(document.defaults.resilience, service.resilience), route.resilience)
    return ResolvedRoute(
        service=service_name,
        name=route_name(route),
        match=route.match,
        upstream=service.upstream,
        sentinel=_effective_sentinel(sentinel),
        resilience=resilience or Resilience(),
    )


def check_semantics(document: PolicyDocument, source: str) -> None:
    """Cross-field rules that a single model cannot see."""
    problems = []
    for service_name, service in document.services.items():
        seen: dict[str, int] = {}
        for index, route in enumerate(service.routes):
            name = route_name(route)
            if name in seen:
                problems.append(
                    Problem(
                        source,
                        None,
                        f"services.{service_name}.routes[{index}].name",
                        f"route name {name!r} is already used by routes[{seen[name]}]; give each route a unique 'name'",
                    )
                )
            seen[name] = index
    if problems:
        raise PolicyError(problems)
