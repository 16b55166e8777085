"""Envoy route configuration: virtual hosts, routes, retry policies and per-route filters."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from irl_extproc.budgets.identity import IdentityConfig
from irl_extproc.contract import ROUTE_METADATA_KEY
from irl_extproc.policy.model import Match
from irl_extproc.policy.resilience import (
    DEFAULT_RETRY_ON,
    IDEMPOTENT_METHODS,
    SAFE_RETRY_ON,
    RateLimit,
    Resilience,
    Retries,
)
from irl_extproc.policy.resolve import EffectiveSentinel, ResolvedRoute
from irl_extproc.policy.units import format_duration
from irl_extproc.render.plan import RenderPlan, RoutePlan
from irl_extproc.render.proto_json import typed

ROUTE_CONFIG_NAME = "irl_routes"
# What IRL reads from the response headers message on routes that skip the request headers.
RESPONSE_ATTRIBUTES = ("request.id", "request.path")
EXTPROC_FILTER = "envoy.filters.http.ext_proc"
RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
ALL_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "POST", "PATCH")
PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
}
DEFAULT_RETRY_ATTEMPTS = 1  # Envoy's own default once a retry policy exists
DEFAULT_BACKOFF_BASE = 0.025


def methods_regex(methods: Sequence[str]) -> str:
    return "|".join(re.escape(m) for m in methods)


def _method_matcher(methods: Sequence[str]) -> dict[str, Any]:
    if len(methods) == 1:
        return {"name": ":method", "string_match": {"exact": methods[0]}}
    return {"name": ":method", "string_match": {"safe_regex": {"regex": methods_regex(methods)}}}


def route_match(match: Match) -> dict[str, Any]:
    out: dict[str, Any] = {"prefix": match.prefix} if match.prefix is not None else {"path": match.path}
    if match.methods:
        out["headers"] = [_method_matcher(match.methods)]
    return out


def retried_methods(retries: Retries) -> tuple[str, ...]:
    """Methods a retry applies to. Only SAFE conditions (the upstream never saw the request)
    retry every method; otherwise POST/PATCH need the explicit opt-in in ``methods``."""
    retry_on = retries.retry_on or DEFAULT_RETRY_ON
    if set(retry_on) <= SAFE_RETRY_ON:
        return ALL_METHODS
    chosen = retries.methods if retries.methods is not None else IDEMPOTENT_METHODS
    return tuple(m for m in ALL_METHODS if m in chosen)


def retry_policy(resilience: Resilience) -> dict[str, Any] | None:
    retries = resilience.retries
    per_try = resilience.timeouts.per_try if resilience.timeouts else None
    if retries is None and per_try is None:
        return None
    attempts = DEFAULT_RETRY_ATTEMPTS if retries is None or retries.attempts is None else retries.attempts
    if retries is None:
        attempts = 0  # only a per-try timeout: bound each try, retry nothing
    out: dict[str, Any] = {"num_retries": attempts}
    if per_try is not None:
        out["per_try_timeout"] = format_duration(per_try)
    if retries is None or attempts == 0:
        return out
    out["retry_on"] = ",".join(retries.retry_on or DEFAULT_RETRY_ON)
    if retries.retriable_status_codes:
        out["retriable_status_codes"] = list(retries.retriable_status_codes)
    methods = retried_methods(retries)
    if methods != ALL_METHODS:
        out["retriable_request_headers"] = [_method_matcher(methods)]
    if retries.backoff:
        backoff = {"base_interval": format_duration(retries.backoff.base or DEFAULT_BACKOFF_BASE)}
        if retries.backoff.max is not None:
            backoff["max_interval"] = format_duration(retries.backoff.max)
        out["retry_back_off"] = backoff
    if retries.rate_limited_backoff:
        rl = retries.rate_limited_backoff
        rate_limited: dict[str, Any] = {
            "reset_headers": [{"name": h.name, "format": h.format.upper()} for h in rl.reset_headers]
        }
        if rl.max_interval is not None:
            rate_limited["max_interval"] = format_duration(rl.max_interval)
        out["rate_limited_retry_back_off"] = rate_limited
    if retries.avoid_previous_hosts:
        out["retry_host_predicate"] = [PREVIOUS_HOSTS]
        out["host_selection_retry_max_attempts"] = 5
    return out


def skips_request_headers(sentinel: EffectiveSentinel | None, identity: IdentityConfig) -> bool:
    """A route that inspects only responses, with no identity read from a request header, needs
    nothing from the request headers round trip: Envoy sends the request's id and path (and
    identity attributes) with the response headers, forwards identity metadata with every
    message, and the route removes ``accept-encoding`` itself. One round trip less before the
    first token (docs/streaming.md)."""
    return (
        sentinel is not None
        and sentinel.needs_response
        and not sentinel.needs_request_body
        and not identity.envoy_set_headers()
    )


def request_header_edits(route: ResolvedRoute, identity: IdentityConfig) -> dict[str, Any]:
    """Route-level request header edits: what IRL's request headers reply does on other routes
    (ask the upstream for an uncompressed, inspectable response)."""
    return {"request_headers_to_remove": ["accept-encoding"]} if skips_request_headers(route.sentinel, identity) else {}


def extproc_per_route(
    route: ResolvedRoute, sentinel: EffectiveSentinel | None, identity: IdentityConfig
) -> dict[str, Any]:
    """The listener's ext_proc filter is off by default (requests that match no route never
    reach IRL); routes with a Sentinel switch it on with their identity and body modes."""
    if sentinel is None:
        return typed("envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", disabled=True)
    responses = sentinel.needs_response
    skip = skips_request_headers(sentinel, identity)
    overrides: dict[str, Any] = {
        "processing_mode": {
            "request_header_mode": "SKIP" if skip else "SEND",
            "response_header_mode": "SEND" if responses else "SKIP",
            "request_body_mode": "BUFFERED" if sentinel.needs_request_body else "NONE",
            # Full duplex lets IRL hold back part of a streamed (SSE) response and release it
            # rewritten (docs/streaming.md); Envoy requires trailers SEND for it.
            "response_body_mode": "FULL_DUPLEX_STREAMED" if responses else "NONE",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SEND" if responses else "SKIP",
        },
        "grpc_initial_metadata": [{"key": ROUTE_METADATA_KEY, "value": route.id}],
        "failure_mode_allow": sentinel.on_error == "fail_open",
    }
    if skip:
        overrides["response_attributes"] = sorted({*RESPONSE_ATTRIBUTES, *identity.request_attributes()})
    return typed(
        "envoy.config.route.v3.FilterConfig",
        config=typed("envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", overrides=overrides),
        disabled=False,
    )


def rate_limit_stat_prefix(route: ResolvedRoute) -> str:
    return f"irl_rate_limit_{route.service}_{route.name}"


def rate_limit_per_route(route: ResolvedRoute, limit: RateLimit) -> dict[str, Any]:
    requests = limit.requests or 1
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    # Without filter_enabled and filter_enforced at 100% the bucket counts but never enforces.
    return typed(
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        stat_prefix=rate_limit_stat_prefix(route),
        token_bucket={
            "max_tokens": limit.burst or requests,
            "tokens_per_fill": requests,
            "fill_interval": format_duration(limit.per or 1.0),
        },
        filter_enabled={"runtime_key": "irl.rate_limit.enabled", **always},
        filter_enforced={"runtime_key": "irl.rate_limit.enforced", **always},
        enable_x_ratelimit_headers="DRAFT_VERSION_03",
    )


def route_entry(entry: RoutePlan, identity: IdentityConfig) -> dict[str, Any]:
    route, resilience = entry.route, entry.route.resilience
    action: dict[str, Any] = {"cluster": entry.cluster}
    if resilience.timeouts and resilience.timeouts.request is not None:
        action["timeout"] = format_duration(resilience.timeouts.request)
    if resilience.timeouts and resilience.timeouts.idle is not None:
        action["idle_timeout"] = format_duration(resilience.timeouts.idle)
    if route.upstream.host_rewrite:
        action["host_rewrite_literal"] = route.upstream.host_rewrite
    policy = retry_policy(resilience)
    if policy:
        action["retry_policy"] = policy
    per_filter: dict[str, Any] = {EXTPROC_FILTER: extproc_per_route(route, route.sentinel, identity)}
    if resilience.rate_limit:
        per_filter[RATE_LIMIT_FILTER] = rate_limit_per_route(route, resilience.rate_limit)
    return {
        "name": route.id,
        "match": route_match(route.match),
        "route": action,
        "typed_per_filter_config": per_filter,
        **request_header_edits(route, identity),
    }


def route_configuration(render_plan: RenderPlan) -> dict[str, Any]:
    """Services with ``hosts`` get a virtual host each; the rest share ``*`` in policy order."""
    document = render_plan.policy.document
    virtual_hosts: list[dict[str, Any]] = []
    shared: list[dict[str, Any]] = []
    by_service: dict[str, list[dict[str, Any]]] = {}
    for entry in render_plan.routes:
        by_service.setdefault(entry.route.service, []).append(route_entry(entry, document.identity))
    for name, service in document.services.items():
        routes = by_service.get(name, [])
        if service.hosts:
            virtual_hosts.append({"name": f"svc_{name}", "domains": list(service.hosts), "routes": routes})
        else:
            shared.extend(routes)
    if shared:
        virtual_hosts.append({"name": "irl_default", "domains": ["*"], "routes": shared})
    return {"name": ROUTE_CONFIG_NAME, "virtual_hosts": virtual_hosts}
