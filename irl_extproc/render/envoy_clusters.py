"""Envoy clusters: one per service (or per route that changes cluster-level settings),
IRL's ext_proc cluster, and the OTLP collector."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from irl_extproc.policy.resilience import CircuitBreakers, HealthCheck, OutlierDetection, RetryBudget
from irl_extproc.policy.units import format_duration
from irl_extproc.render.plan import UpstreamCluster
from irl_extproc.render.proto_json import typed

EXTPROC_CLUSTER = "irl_extproc"
OTLP_CLUSTER = "otlp_collector"
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
HTTP2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        explicit_http_config={"http2_protocol_options": {}},
    )
}
# Envoy's defaults for health-check fields the policy leaves out.
HEALTH_CHECK_DEFAULTS = {"interval": 5.0, "timeout": 1.0, "unhealthy_threshold": 3, "healthy_threshold": 2}


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _endpoints(name: str, endpoints: Sequence[tuple[str, int]]) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                    for host, port in endpoints
                ]
            }
        ],
    }


def _base_cluster(name: str, endpoints: Sequence[tuple[str, int]], connect_timeout: float) -> dict[str, Any]:
    static = all(is_ip(host) for host, _ in endpoints)
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if static else "STRICT_DNS",
        "connect_timeout": format_duration(connect_timeout),
        "lb_policy": "ROUND_ROBIN",
    }
    if not static:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    cluster["load_assignment"] = _endpoints(name, endpoints)
    return cluster


def _tls(address: str) -> dict[str, Any]:
    validation: dict[str, Any] = {"trusted_ca": {"filename": SYSTEM_CA_FILE}}
    if not is_ip(address):
        validation["match_typed_subject_alt_names"] = [{"san_type": "DNS", "matcher": {"exact": address}}]
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            sni=address,
            common_tls_context={"validation_context": validation},
        ),
    }


def _circuit_breakers(breakers: CircuitBreakers | None, budget: RetryBudget | None) -> dict[str, Any] | None:
    threshold: dict[str, Any] = {}
    if breakers:
        for field in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            value = getattr(breakers, field)
            if value is not None:
                threshold[field] = value
    if budget:
        retry_budget: dict[str, Any] = {}
        if budget.percent is not None:
            retry_budget["budget_percent"] = {"value": budget.percent}
        if budget.min_concurrency is not None:
            retry_budget["min_retry_concurrency"] = budget.min_concurrency
        threshold["retry_budget"] = retry_budget
    return {"thresholds": [{"priority": "DEFAULT", **threshold}]} if threshold else None


def _copy_set(source: BaseModel, names: dict[str, str], out: dict[str, Any]) -> None:
    """Copy the fields the policy set, under Envoy's names; durations as proto-JSON."""
    for ours, envoys in names.items():
        value = getattr(source, ours)
        if value is not None:
            out[envoys] = format_duration(value) if ours in _DURATION_FIELDS else value


_DURATION_FIELDS = {"interval", "base_ejection_time", "max_ejection_time"}
_OUTLIER_FIELDS = {
    "consecutive_5xx": "consecutive_5xx",
    "consecutive_gateway_errors": "consecutive_gateway_failure",
    "interval": "interval",
    "base_ejection_time": "base_ejection_time",
    "max_ejection_time": "max_ejection_time",
    "max_ejection_percent": "max_ejection_percent",
}
_SUCCESS_RATE_FIELDS = {"min_hosts": "success_rate_minimum_hosts", "request_volume": "success_rate_request_volume"}
_FAILURE_PERCENTAGE_FIELDS = {
    "threshold": "failure_percentage_threshold",
    "min_hosts": "failure_percentage_minimum_hosts",
    "request_volume": "failure_percentage_request_volume",
}


def _outlier_detection(od: OutlierDetection) -> dict[str, Any]:
    """Only the detectors the policy names eject: Envoy enforces gateway-failure and
    failure-percentage at 0% unless told, and success-rate at 100% unless told."""
    out: dict[str, Any] = {}
    _copy_set(od, _OUTLIER_FIELDS, out)
    if od.consecutive_gateway_errors is not None:
        out["enforcing_consecutive_gateway_failure"] = 100
    out["enforcing_success_rate"] = 100 if od.success_rate else 0
    if od.success_rate:
        _copy_set(od.success_rate, _SUCCESS_RATE_FIELDS, out)
        if od.success_rate.stdev_factor is not None:
            out["success_rate_stdev_factor"] = round(od.success_rate.stdev_factor * 1000)  # thousandths
    if od.failure_percentage:
        out["enforcing_failure_percentage"] = 100
        _copy_set(od.failure_percentage, _FAILURE_PERCENTAGE_FIELDS, out)
    return out


def health_check(hc: HealthCheck) -> dict[str, Any]:
    out: dict[str, Any] = {
        "timeout": format_duration(hc.timeout if hc.timeout is not None else HEALTH_CHECK_DEFAULTS["timeout"]),
        "interval": format_duration(hc.interval if hc.interval is not None else HEALTH_CHECK_DEFAULTS["interval"]),
        "unhealthy_threshold": hc.unhealthy_threshold or HEALTH_CHECK_DEFAULTS["unhealthy_threshold"],
        "healthy_threshold": hc.healthy_threshold or HEALTH_CHECK_DEFAULTS["healthy_threshold"],
    }
    if hc.kind == "http":
        out["http_health_check"] = {"path": hc.path or "/"}
    elif hc.kind == "grpc":
        out["grpc_health_check"] = {"service_name": hc.grpc_service} if hc.grpc_service else {}
    else:
        out["tcp_health_check"] = {}
    return out


def upstream_cluster(cluster: UpstreamCluster, buffer_limit: int) -> dict[str, Any]:
    upstream, settings = cluster.upstream, cluster.settings
    out = _base_cluster(cluster.name, [(upstream.address, upstream.port)], settings.connect_timeout or 5.0)
    out["per_connection_buffer_limit_bytes"] = buffer_limit
    if upstream.tls:
        out["transport_socket"] = _tls(upstream.address)
    breakers = _circuit_breakers(settings.circuit_breakers, settings.retry_budget)
    if breakers:
        out["circuit_breakers"] = breakers
    if settings.outlier_detection:
        out["outlier_detection"] = _outlier_detection(settings.outlier_detection)
    if settings.health_check:
        out["health_checks"] = [health_check(settings.health_check)]
        if settings.health_check.kind == "grpc":  # gRPC health checks need an HTTP/2 upstream
            out["typed_extension_protocol_options"] = HTTP2_OPTIONS
    return out


def extproc_cluster(endpoints: Sequence[tuple[str, int]], buffer_limit: int) -> dict[str, Any]:
    """HTTP/2 to every IRL server process; one Envoy worker keeps one connection per host,
    so several endpoints are what spreads the load."""
    out = _base_cluster(EXTPROC_CLUSTER, endpoints, 1.0)
    out["per_connection_buffer_limit_bytes"] = buffer_limit
    out["typed_extension_protocol_options"] = HTTP2_OPTIONS
    out["health_checks"] = [
        {
            "timeout": "1s",
            "interval": "2s",
            "no_traffic_interval": "2s",
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            "grpc_health_check": {},
        }
    ]
    return out


def otlp_cluster(endpoint: tuple[str, int]) -> dict[str, Any]:
    out = _base_cluster(OTLP_CLUSTER, [endpoint], 1.0)
    out["typed_extension_protocol_options"] = HTTP2_OPTIONS
    return out
