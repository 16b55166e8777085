"""Lints: settings that are valid but will not do what the operator expects.

Each lint has a severity (``error`` refuses to render, ``warning`` fails ``irl validate
--strict``, ``hint`` never fails) and a message that says how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from irl_extproc.policy.load import LoadedPolicy
from irl_extproc.policy.resilience import DEFAULT_RETRY_ON, SAFE_RETRY_ON, Resilience
from irl_extproc.policy.resolve import ResolvedRoute
from irl_extproc.render.envoy_routes import DEFAULT_BACKOFF_BASE, DEFAULT_RETRY_ATTEMPTS, retried_methods
from irl_extproc.render.plan import RenderPlan, UpstreamCluster, plan

Severity = Literal["error", "warning", "hint"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "hint")
ENVOY_DEFAULT_ROUTE_TIMEOUT = 15.0
ENVOY_DEFAULT_BREAKER_LIMIT = 1024
MIN_RATE_LIMIT_FILL_INTERVAL = 0.05  # Envoy refuses token buckets that refill faster


@dataclass(frozen=True)
class Lint:
    severity: Severity
    code: str
    where: str  # "service/route" or "service"
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message} [{self.code}]"


def _seconds(value: float) -> str:
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _attempts(resilience: Resilience) -> int:
    retries = resilience.retries
    if retries is None:
        return 0
    return DEFAULT_RETRY_ATTEMPTS if retries.attempts is None else retries.attempts


def _route_timeout(resilience: Resilience) -> float:
    timeouts = resilience.timeouts
    return timeouts.request if timeouts and timeouts.request is not None else ENVOY_DEFAULT_ROUTE_TIMEOUT


def _worst_backoff(resilience: Resilience, attempts: int) -> float:
    """Upper bound of Envoy's jittered exponential backoff over all retries."""
    backoff = resilience.retries.backoff if resilience.retries else None
    base = backoff.base if backoff and backoff.base is not None else DEFAULT_BACKOFF_BASE
    cap = backoff.max if backoff and backoff.max is not None else 10 * base
    return float(sum(min(base * 2.0**i, cap) for i in range(attempts)))


def _timeout_lints(route: ResolvedRoute) -> Iterator[Lint]:
    res = route.resilience
    per_try = res.timeouts.per_try if res.timeouts else None
    timeout = _route_timeout(res)
    if per_try is None or timeout == 0:
        return
    attempts = _attempts(res)
    if per_try >= timeout:
        yield Lint(
            "warning",
            "per-try-exceeds-timeout",
            route.id,
            f"timeouts.per_try {_seconds(per_try)} ≥ the route timeout {_seconds(timeout)}, so the first try "
            "uses the whole request time and nothing is ever retried; make per_try smaller than "
            "timeouts.request / (attempts + 1)",
        )
        return
    worst = per_try * (attempts + 1) + _worst_backoff(res, attempts)
    if attempts and worst > timeout:
        yield Lint(
            "warning",
            "retries-exceed-timeout",
            route.id,
            f"per_try {_seconds(per_try)} x {attempts + 1} tries + backoff up to "
            f"{_seconds(_worst_backoff(res, attempts))} = {_seconds(worst)} exceeds the route timeout "
            f"{_seconds(timeout)}, so the last retries are cut off; raise timeouts.request to at least "
            f"{_seconds(worst)}, or lower per_try or retries.attempts",
        )


def _retry_lints(route: ResolvedRoute, cluster: UpstreamCluster) -> Iterator[Lint]:
    retries = route.resilience.retries
    if retries is None or _attempts(route.resilience) == 0:
        return
    retry_on = list(retries.retry_on or DEFAULT_RETRY_ON)
    if cluster.settings.retry_budget is None:
        yield Lint(
            "warning",
            "retries-without-budget",
            route.id,
            "retries without a retry budget can multiply load during an outage (a retry storm); add "
            "resilience.retry_budget: {percent: 20, min_concurrency: 3} to the service or defaults",
        )
    if retries.retriable_status_codes and "retriable-status-codes" not in retry_on:
        yield Lint(
            "warning",
            "status-codes-without-retry-on",
            route.id,
            f"retries.retriable_status_codes {retries.retriable_status_codes} are ignored unless retry_on "
            "lists 'retriable-status-codes'; add it to retries.retry_on",
        )
    accepted = set(route.match.methods or ("POST", "PATCH"))
    unsafe = [c for c in retry_on if c not in SAFE_RETRY_ON]
    not_retried = sorted(accepted & {"POST", "PATCH"} - set(retried_methods(retries)))
    if unsafe and not_retried:
        yield Lint(
            "warning",
            "unsafe-method-retries",
            route.id,
            f"this route accepts {'/'.join(not_retried)}, which may not be idempotent, so they are not retried "
            f"on {', '.join(unsafe)}; if the upstream deduplicates them, opt in with retries.methods "
            f"including {'/'.join(not_retried)}, otherwise limit retry_on to "
            f"{', '.join(sorted(SAFE_RETRY_ON))} (safe for every method)",
        )
    rate_limited = retries.rate_limited_backoff
    if rate_limited and not (
        "envoy-ratelimited" in retry_on
        or ("retriable-status-codes" in retry_on and 429 in (retries.retriable_status_codes or ()))
    ):
        yield Lint(
            "warning",
            "rate-limited-backoff-unused",
            route.id,
            "retries.rate_limited_backoff only applies when 429s are retried; add 'retriable-status-codes' to "
            "retry_on and 429 to retriable_status_codes",
        )


def _rate_limit_lints(route: ResolvedRoute) -> Iterator[Lint]:
    limit = route.resilience.rate_limit
    if limit is None:
        return
    if limit.requests is None or limit.per is None:
        yield Lint(
            "error",
            "rate-limit-incomplete",
            route.id,
            "rate_limit needs both 'requests' and 'per' to enforce anything; write e.g. "
            "rate_limit: {requests: 100, per: 1s}",
        )
    elif limit.per < MIN_RATE_LIMIT_FILL_INTERVAL:
        yield Lint(
            "error",
            "rate-limit-interval-too-short",
            route.id,
            f"rate_limit.per {_seconds(limit.per)} is below Envoy's minimum refill interval of 50ms; scale "
            "both numbers, e.g. 1 per 10ms → requests: 100, per: 1s",
        )
    if limit.burst is not None and limit.requests is not None and limit.burst < limit.requests:
        yield Lint(
            "warning",
            "rate-limit-burst-below-rate",
            route.id,
            f"rate_limit.burst {limit.burst} < requests {limit.requests}: the bucket can never hold a full "
            "refill, so the effective rate is the burst; raise burst or leave it unset",
        )


def _cluster_lints(cluster: UpstreamCluster) -> Iterator[Lint]:
    where = cluster.service if cluster.route is None else f"{cluster.service}/{cluster.route}"
    settings = cluster.settings
    od, hc, breakers = settings.outlier_detection, settings.health_check, settings.circuit_breakers
    if od and od.max_ejection_percent == 100:
        yield Lint(
            "warning",
            "max-ejection-100",
            where,
            "outlier_detection.max_ejection_percent 100 lets every host be ejected at once, after which Envoy "
            "falls back to panic routing to all of them; use 50 or less on multi-host upstreams",
        )
    if hc:
        if hc.kind is None:
            yield Lint(
                "error",
                "health-check-kind-missing",
                where,
                "health_check needs 'kind': http, grpc or tcp (e.g. health_check: {kind: http, path: /healthz})",
            )
        timeout, interval = hc.timeout or 1.0, hc.interval or 5.0
        if timeout >= interval:
            yield Lint(
                "warning",
                "health-check-timeout-ge-interval",
                where,
                f"health_check.timeout {_seconds(timeout)} ≥ interval {_seconds(interval)}: checks overlap and a "
                "slow host is judged on stale answers; make the timeout shorter than the interval",
            )
    if breakers and breakers.max_pending_requests == 0:
        yield Lint(
            "warning",
            "max-pending-zero",
            where,
            "circuit_breakers.max_pending_requests 0 fails every request that cannot get a connection at "
            "once with 503; allow a small queue (e.g. 10% of max_requests)",
        )
    unset = [
        f
        for f in ("max_connections", "max_pending_requests", "max_requests")
        if breakers is None or getattr(breakers, f) is None
    ]
    if unset and cluster.route is None:
        yield Lint(
            "hint",
            "breakers-at-envoy-defaults",
            where,
            f"circuit_breakers {', '.join(unset)} stay at Envoy's default of {ENVOY_DEFAULT_BREAKER_LIMIT}; on a "
            "high-throughput service size them to what the upstream really holds (about peak req/s x p99 "
            "latency in seconds for max_requests)",
        )


def _message_timeout_lints(render_plan: RenderPlan) -> Iterator[Lint]:
    timeouts = {r.route.id: r.route.sentinel.message_timeout for r in render_plan.routes if r.route.sentinel}
    if len(set(timeouts.values())) > 1:
        chosen = render_plan.message_timeout
        differing = sorted(route for route, t in timeouts.items() if t != chosen)
        yield Lint(
            "warning",
            "message-timeout-per-route",
            ", ".join(differing),
            f"Envoy has one ext_proc message_timeout per listener, so every route uses the longest, "
            f"{_seconds(chosen)}; set sentinel.message_timeout once under defaults",
        )


def lint(policy: LoadedPolicy) -> list[Lint]:
    render_plan = plan(policy)
    clusters = {c.name: c for c in render_plan.clusters}
    found: list[Lint] = []
    for entry in render_plan.routes:
        found.extend(_timeout_lints(entry.route))
        found.extend(_retry_lints(entry.route, clusters[entry.cluster]))
        found.extend(_rate_limit_lints(entry.route))
    for cluster in render_plan.clusters:
        found.extend(_cluster_lints(cluster))
    found.extend(_message_timeout_lints(render_plan))
    return sorted(found, key=lambda f: SEVERITIES.index(f.severity))


def blocking_lints(policy: LoadedPolicy) -> list[Lint]:
    """Error-level lints: a policy with any is refused on load and on live reload alike."""
    return [f for f in lint(policy) if f.severity == "error"]
