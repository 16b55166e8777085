"""What every renderer needs first: which upstream cluster serves which route.

Envoy keeps connect timeout, retry budget, circuit breakers, outlier detection and
health checks on the cluster, not on the route. A route that changes any of them
(directly or through its service's defaults) gets a cluster of its own, so the policy's
route-level settings are never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from irl_extproc.policy.load import LoadedPolicy
from irl_extproc.policy.model import Upstream
from irl_extproc.policy.resilience import (
    CircuitBreakers,
    HealthCheck,
    OutlierDetection,
    Resilience,
    RetryBudget,
)
from irl_extproc.policy.resolve import DEFAULT_MAX_BODY_BYTES, ResolvedRoute, merge, resolve_routes

# Headroom over the largest body IRL must see, so Envoy never answers 413 before IRL can.
BUFFER_HEADROOM_BYTES = 64 * 1024


@dataclass(frozen=True)
class ClusterSettings:
    connect_timeout: float | None
    retry_budget: RetryBudget | None
    circuit_breakers: CircuitBreakers | None
    outlier_detection: OutlierDetection | None
    health_check: HealthCheck | None

    @classmethod
    def of(cls, resilience: Resilience) -> ClusterSettings:
        return cls(
            connect_timeout=resilience.timeouts.connect if resilience.timeouts else None,
            retry_budget=resilience.retry_budget,
            circuit_breakers=resilience.circuit_breakers,
            outlier_detection=resilience.outlier_detection,
            health_check=resilience.health_check,
        )

    def key(self) -> tuple[Any, ...]:
        return tuple(
            None if value is None else (value if isinstance(value, float) else value.model_dump_json())
            for value in (
                self.connect_timeout,
                self.retry_budget,
                self.circuit_breakers,
                self.outlier_detection,
                self.health_check,
            )
        )


@dataclass(frozen=True)
class UpstreamCluster:
    name: str
    service: str
    upstream: Upstream
    settings: ClusterSettings
    route: str | None  # the route that needed its own cluster; None for the service's


@dataclass(frozen=True)
class RoutePlan:
    route: ResolvedRoute
    cluster: str


@dataclass(frozen=True)
class RenderPlan:
    policy: LoadedPolicy
    routes: tuple[RoutePlan, ...]
    clusters: tuple[UpstreamCluster, ...]

    @property
    def buffer_limit_bytes(self) -> int:
        largest = max(
            (r.route.sentinel.max_body_bytes for r in self.routes if r.route.sentinel),
            default=DEFAULT_MAX_BODY_BYTES,
        )
        return max(largest, DEFAULT_MAX_BODY_BYTES) + BUFFER_HEADROOM_BYTES

    @property
    def message_timeout(self) -> float:
        """Envoy has no per-route message_timeout: the longest one wins (a lint says so)."""
        timeouts = [r.route.sentinel.message_timeout for r in self.routes if r.route.sentinel]
        return max(timeouts, default=0.2)

    @property
    def failure_mode_allow(self) -> bool:
        """Listener-wide default; every route with a Sentinel overrides it with its own."""
        sentinels = [r.route.sentinel for r in self.routes if r.route.sentinel]
        return bool(sentinels) and all(s.on_error == "fail_open" for s in sentinels)


def service_cluster_name(service: str) -> str:
    return f"svc_{service}"


def route_cluster_name(service: str, route: str) -> str:
    return f"svc_{service}__{route}"


def plan(policy: LoadedPolicy) -> RenderPlan:
    document = policy.document
    service_settings = {
        name: ClusterSettings.of(merge(document.defaults.resilience, service.resilience) or Resilience())
        for name, service in document.services.items()
    }
    clusters: dict[str, UpstreamCluster] = {}
    routes = []
    for route in resolve_routes(document):
        base = service_settings[route.service]
        own = ClusterSettings.of(route.resilience)
        if own.key() == base.key():
            name = service_cluster_name(route.service)
            clusters.setdefault(name, UpstreamCluster(name, route.service, route.upstream, base, None))
        else:
            name = route_cluster_name(route.service, route.name)
            clusters[name] = UpstreamCluster(name, route.service, route.upstream, own, route.name)
        routes.append(RoutePlan(route, name))
    return RenderPlan(policy, tuple(routes), tuple(clusters.values()))
