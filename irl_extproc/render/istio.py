"""Policy → Istio resources: DestinationRule, VirtualService and IRL's EnvoyFilter.

What Istio has a field for goes into DestinationRule/VirtualService. IRL's ext_proc, the
per-route IRL identity, the local rate limit and the error shape of local replies go into
one EnvoyFilter (built from the same functions as the standalone Envoy config). Settings
Istio cannot express become warnings, never silent drops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from irl_extproc.policy.load import LoadedPolicy
from irl_extproc.policy.resilience import DEFAULT_RETRY_ON, Resilience
from irl_extproc.policy.units import format_duration
from irl_extproc.render.envoy import extproc_filter, header, rate_limit_filter
from irl_extproc.render.envoy_clusters import is_ip
from irl_extproc.render.envoy_routes import (
    ALL_METHODS,
    EXTPROC_FILTER,
    RATE_LIMIT_FILTER,
    extproc_per_route,
    methods_regex,
    rate_limit_per_route,
    request_header_edits,
    retried_methods,
)
from irl_extproc.render.istio_models import (
    ClientTls,
    ConfigPatch,
    ConnectionPool,
    Destination,
    DestinationRule,
    DestinationRuleSpec,
    EnvoyFilter,
    EnvoyFilterSpec,
    FilterChainMatch,
    FilterMatch,
    HttpMatchRequest,
    HttpRetry,
    HttpRoute,
    HttpRouteDestination,
    HttpSettings,
    IstioContext,
    IstioResource,
    ListenerMatch,
    ObjectMeta,
    OutlierDetection,
    Patch,
    PatchMatch,
    PortSelector,
    RetryBudget,
    RouteConfigurationMatch,
    RouteMatch,
    StringMatch,
    SubFilterMatch,
    Subset,
    TcpSettings,
    TrafficPolicy,
    VirtualHostMatch,
    VirtualService,
    VirtualServiceSpec,
)
from irl_extproc.render.local_reply import local_reply_config
from irl_extproc.render.plan import ClusterSettings, RenderPlan, RoutePlan, UpstreamCluster, plan, route_cluster_name
from irl_extproc.render.proto_json import typed

ENVOY_DEFAULT_ROUTE_TIMEOUT = "15s"  # Envoy's default; Istio's is none, the policy means Envoy's
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
EXTPROC_PRIORITY = 10
# Istio version that first has each field (older targets get a warning instead).
FEATURE_VERSIONS = {"retryBudget": (1, 27), "backoff": (1, 26)}
MIN_ISTIO_VERSION = (1, 22)


@dataclass(frozen=True)
class IstioOptions:
    version: str = "1.27"
    namespace: str = "default"
    context: IstioContext = "SIDECAR_OUTBOUND"
    extproc_host: str = "irl-extproc.irl-system.svc.cluster.local"
    extproc_port: int = 50051
    gateway: str = "istio-system/ingressgateway"

    @property
    def version_tuple(self) -> tuple[int, int]:
        major, _, minor = self.version.partition(".")
        if not (major.isdigit() and minor.split(".")[0].isdigit()):
            raise ValueError(f"Istio version {self.version!r} is not MAJOR.MINOR, e.g. 1.27")
        return int(major), int(minor.split(".")[0])


@dataclass
class IstioOutput:
    resources: list[IstioResource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _has(options: IstioOptions, feature: str) -> bool:
    return options.version_tuple >= FEATURE_VERSIONS[feature]


def _k8s_name(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _metadata(name: str, policy: LoadedPolicy, options: IstioOptions) -> ObjectMeta:
    return ObjectMeta(
        name=_k8s_name(name),
        namespace=options.namespace,
        labels={"app.kubernetes.io/managed-by": "irl"},
        annotations={"irl.dev/policy": policy.source, "irl.dev/policy-sha256": policy.version},
    )


def _traffic_policy(
    settings: ClusterSettings, cluster: UpstreamCluster, out: IstioOutput, options: IstioOptions
) -> TrafficPolicy | None:
    where = cluster.name
    breakers, budget, od = settings.circuit_breakers, settings.retry_budget, settings.outlier_detection
    tcp = TcpSettings(
        max_connections=breakers.max_connections if breakers else None,
        connect_timeout=format_duration(settings.connect_timeout) if settings.connect_timeout else None,
    )
    http = HttpSettings(
        http1_max_pending_requests=breakers.max_pending_requests if breakers else None,
        http2_max_requests=breakers.max_requests if breakers else None,
        max_retries=breakers.max_retries if breakers else None,
    )
    pool = ConnectionPool(
        tcp=tcp if tcp.to_yaml_dict() else None,
        http=http if http.to_yaml_dict() else None,
    )
    outlier = None
    if od:
        outlier = OutlierDetection(
            consecutive_5xx_errors=od.consecutive_5xx,
            consecutive_gateway_errors=od.consecutive_gateway_errors,
            interval=format_duration(od.interval) if od.interval is not None else None,
            base_ejection_time=format_duration(od.base_ejection_time) if od.base_ejection_time is not None else None,
            max_ejection_percent=od.max_ejection_percent,
        )
        for name in ("max_ejection_time", "success_rate", "failure_percentage"):
            if getattr(od, name) is not None:
                out.warnings.append(
                    f"{where}: outlier_detection.{name} has no DestinationRule field and is not rendered for "
                    "Istio; drop it or apply it with your own EnvoyFilter on the cluster"
                )
    retry_budget = None
    if budget:
        if _has(options, "retryBudget"):
            retry_budget = RetryBudget(percent=budget.percent, min_retry_concurrency=budget.min_concurrency)
        else:
            out.warnings.append(
                f"{where}: retry_budget needs Istio ≥ 1.27 (DestinationRule retryBudget); target "
                f"{options.version} has no such field, so retries are not budgeted: upgrade or use --istio-version 1.27"
            )
    if settings.health_check:
        out.warnings.append(
            f"{where}: Istio has no active health checks; the health_check is not rendered. Use Kubernetes "
            "readiness probes for the upstream pods, and outlier_detection for passive ejection"
        )
    tls = ClientTls(mode="SIMPLE", sni=cluster.upstream.address) if cluster.upstream.tls else None
    policy = TrafficPolicy(
        connection_pool=pool if pool.to_yaml_dict() else None,
        outlier_detection=outlier,
        retry_budget=retry_budget,
        tls=tls,
    )
    return policy if policy.to_yaml_dict() else None


def _destination_rule(
    service: str, clusters: list[UpstreamCluster], policy: LoadedPolicy, out: IstioOutput, options: IstioOptions
) -> DestinationRule:
    base = next((c for c in clusters if c.route is None), None)
    subsets = [
        Subset(name=_k8s_name(c.route or ""), traffic_policy=_traffic_policy(c.settings, c, out, options))
        for c in clusters
        if c.route is not None
    ]
    return DestinationRule(
        metadata=_metadata(f"irl-{service}", policy, options),
        spec=DestinationRuleSpec(
            host=clusters[0].upstream.address,
            traffic_policy=_traffic_policy(base.settings, base, out, options) if base else None,
            subsets=subsets or None,
        ),
    )


def _retries(
    resilience: Resilience, methods_limited: bool, options: IstioOptions, out: IstioOutput, where: str
) -> HttpRetry:
    """Unset retries render as none: the policy means Envoy's default, not Istio's two attempts."""
    retries = resilience.retries
    per_try = resilience.timeouts.per_try if resilience.timeouts else None
    if retries is None or methods_limited or retries.attempts == 0:
        return HttpRetry(attempts=0)
    retry_on = [*(retries.retry_on or DEFAULT_RETRY_ON), *(str(c) for c in retries.retriable_status_codes or ())]
    backoff = None
    if retries.backoff and retries.backoff.base is not None:
        if _has(options, "backoff"):
            backoff = format_duration(retries.backoff.base)
        else:
            out.warnings.append(f"{where}: retries.backoff needs Istio ≥ 1.26; Istio's 25ms default applies")
    if retries.backoff and retries.backoff.max is not None:
        out.warnings.append(f"{where}: Istio has no retry backoff maximum; retries.backoff.max is not rendered")
    if retries.rate_limited_backoff:
        out.warnings.append(
            f"{where}: Istio has no rate-limited retry backoff; retries.rate_limited_backoff is not rendered"
        )
    return HttpRetry(
        attempts=1 if retries.attempts is None else retries.attempts,
        per_try_timeout=format_duration(per_try) if per_try is not None else None,
        retry_on=",".join(retry_on),
        retry_ignore_previous_hosts=bool(retries.avoid_previous_hosts),
        backoff=backoff,
    )


def _http_routes(entry: RoutePlan, out: IstioOutput, options: IstioOptions) -> list[HttpRoute]:
    """One HTTPRoute per policy route; two when retries apply to only some methods (Istio has
    no retriable-methods field, so the retried methods get their own match)."""
    route, res = entry.route, entry.route.resilience
    uri = (
        StringMatch(prefix=route.match.prefix)
        if route.match.prefix is not None
        else StringMatch(exact=route.match.path)
    )
    allowed = route.match.methods
    destination = HttpRouteDestination(
        destination=Destination(
            host=route.upstream.address,
            port=PortSelector(number=route.upstream.port),
            subset=_k8s_name(route.name) if entry.cluster == route_cluster_name(route.service, route.name) else None,
        )
    )
    request = res.timeouts.request if res.timeouts else None
    # 0s disables the timeout in Envoy; Istio spells that by leaving the field out.
    timeout = ENVOY_DEFAULT_ROUTE_TIMEOUT if request is None else (format_duration(request) if request else None)
    if res.timeouts and res.timeouts.idle is not None:
        out.warnings.append(f"{route.id}: Istio has no per-route stream idle timeout; timeouts.idle is not rendered")
    name = _k8s_name(f"{route.service}-{route.name}")

    def http_route(suffix: str, methods: Sequence[str] | None, limited: bool) -> HttpRoute:
        method = StringMatch(regex=methods_regex(list(methods))) if methods else None
        return HttpRoute(
            name=name + suffix,
            match=[HttpMatchRequest(uri=uri, method=method)],
            route=[destination],
            timeout=timeout,
            retries=_retries(res, limited, options, out, route.id),
        )

    retried = retried_methods(res.retries) if res.retries else ALL_METHODS
    if retried == ALL_METHODS:
        return [http_route("", allowed, limited=False)]
    selected = [m for m in retried if allowed is None or m in allowed]
    rest = [m for m in (allowed or ALL_METHODS) if m not in retried]
    routes = [http_route("-retried", selected, limited=False)] if selected else []
    if rest:
        routes.append(http_route("", rest if allowed else None, limited=True))
    return routes


def _virtual_service(
    service: str, entries: list[RoutePlan], policy: LoadedPolicy, out: IstioOutput, options: IstioOptions
) -> VirtualService:
    upstream = entries[0].route.upstream
    hosts = [upstream.address]
    gateways = None
    if options.context == "GATEWAY":
        hosts = list(policy.document.services[service].hosts or [upstream.address])
        gateways = [options.gateway]
    http = [r for entry in entries for r in _http_routes(entry, out, options)]
    return VirtualService(
        metadata=_metadata(f"irl-{service}", policy, options),
        spec=VirtualServiceSpec(hosts=hosts, gateways=gateways, http=http),
    )


def _extproc_cluster_name(options: IstioOptions) -> str:
    return f"outbound|{options.extproc_port}||{options.extproc_host}"


def _envoy_filter(
    render_plan: RenderPlan, policy: LoadedPolicy, http_names: dict[str, list[str]], options: IstioOptions
) -> EnvoyFilter:
    before_router = PatchMatch(
        context=options.context,
        listener=ListenerMatch(
            filter_chain=FilterChainMatch(filter=FilterMatch(name=HCM, sub_filter=SubFilterMatch(name=ROUTER)))
        ),
    )
    ext_proc = extproc_filter(render_plan)
    ext_proc["typed_config"]["grpc_service"] = {"envoy_grpc": {"cluster_name": _extproc_cluster_name(options)}}
    patches = [
        ConfigPatch(
            apply_to="NETWORK_FILTER",
            match=PatchMatch(
                context=options.context,
                listener=ListenerMatch(filter_chain=FilterChainMatch(filter=FilterMatch(name=HCM))),
            ),
            patch=Patch(
                operation="MERGE",
                value={
                    "typed_config": typed(
                        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        local_reply_config=local_reply_config(render_plan),
                    )
                },
            ),
        ),
        ConfigPatch(
            apply_to="HTTP_FILTER",
            match=before_router,
            patch=Patch(operation="INSERT_BEFORE", value=rate_limit_filter()),
        ),
        ConfigPatch(
            apply_to="HTTP_FILTER", match=before_router, patch=Patch(operation="INSERT_BEFORE", value=ext_proc)
        ),
    ]
    for entry in render_plan.routes:
        identity = policy.document.identity
        per_filter: dict[str, Any] = {EXTPROC_FILTER: extproc_per_route(entry.route, entry.route.sentinel, identity)}
        if entry.route.resilience.rate_limit:
            per_filter[RATE_LIMIT_FILTER] = rate_limit_per_route(entry.route, entry.route.resilience.rate_limit)
        for name in http_names[entry.route.id]:
            patches.append(
                ConfigPatch(
                    apply_to="HTTP_ROUTE",
                    match=PatchMatch(
                        context=options.context,
                        route_configuration=RouteConfigurationMatch(
                            vhost=VirtualHostMatch(route=RouteMatch(name=name))
                        ),
                    ),
                    patch=Patch(
                        operation="MERGE",
                        value={"typed_per_filter_config": per_filter, **request_header_edits(entry.route, identity)},
                    ),
                )
            )
    return EnvoyFilter(
        metadata=_metadata("irl-extproc", policy, options),
        spec=EnvoyFilterSpec(config_patches=patches, priority=EXTPROC_PRIORITY),
    )


def render_istio(policy: LoadedPolicy, options: IstioOptions) -> IstioOutput:
    if options.version_tuple < MIN_ISTIO_VERSION:
        raise ValueError(f"Istio {options.version} is too old: IRL renders for Istio ≥ 1.22")
    render_plan = plan(policy)
    out = IstioOutput()
    http_names: dict[str, list[str]] = {}
    services: dict[str, list[RoutePlan]] = {}
    for entry in render_plan.routes:
        services.setdefault(entry.route.service, []).append(entry)
    for service, entries in services.items():
        address = entries[0].route.upstream.address
        if is_ip(address):
            out.warnings.append(
                f"{service}: upstream {address} is an IP address; Istio routes by service host name, so this "
                "service is skipped: use its Kubernetes service name (e.g. payments.shop.svc.cluster.local)"
            )
            for entry in entries:
                http_names[entry.route.id] = []
            continue
        clusters = [c for c in render_plan.clusters if c.service == service]
        out.resources.append(_destination_rule(service, clusters, policy, out, options))
        virtual_service = _virtual_service(service, entries, policy, out, options)
        out.resources.append(virtual_service)
        for entry in entries:
            prefix = _k8s_name(f"{entry.route.service}-{entry.route.name}")
            http_names[entry.route.id] = [
                r.name for r in virtual_service.spec.http if r.name in (prefix, prefix + "-retried")
            ]
    out.resources.append(_envoy_filter(render_plan, policy, http_names, options))
    return out


def dump_istio(output: IstioOutput, policy: LoadedPolicy) -> str:
    documents = [
        yaml.safe_dump(r.to_yaml_dict(), sort_keys=False, default_flow_style=False, width=120) for r in output.resources
    ]
    return header(policy) + "---\n" + "---\n".join(documents)
