"""Policy → a standalone Envoy 1.40 bootstrap, or a bootstrap plus filesystem xDS files.

All output is proto-JSON-shaped dicts built in a fixed order, so the same policy always
renders byte-identical files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from irl_extproc.budgets.identity import IdentityConfig
from irl_extproc.contract import METADATA_NAMESPACE
from irl_extproc.policy.load import LoadedPolicy
from irl_extproc.policy.units import format_duration
from irl_extproc.render.envoy_clusters import (
    EXTPROC_CLUSTER,
    OTLP_CLUSTER,
    extproc_cluster,
    otlp_cluster,
    upstream_cluster,
)
from irl_extproc.render.envoy_routes import (
    EXTPROC_FILTER,
    RATE_LIMIT_FILTER,
    ROUTE_CONFIG_NAME,
    route_configuration,
)
from irl_extproc.render.local_reply import local_reply_config
from irl_extproc.render.plan import RenderPlan, plan
from irl_extproc.render.proto_json import typed

LISTENER_NAME = "irl_listener"
MAX_DOWNSTREAM_CONNECTIONS = 50_000
XDS_FILES = {"cds": "cds.yaml", "rds": "rds.yaml", "lds": "lds.yaml"}
_RESOURCE_TYPES = {
    "cds": "envoy.config.cluster.v3.Cluster",
    "rds": "envoy.config.route.v3.RouteConfiguration",
    "lds": "envoy.config.listener.v3.Listener",
}


def extproc_filter(render_plan: RenderPlan) -> dict[str, Any]:
    identity = render_plan.policy.document.identity
    return {
        "name": EXTPROC_FILTER,
        "disabled": True,  # routes with a Sentinel enable it (see envoy_routes.extproc_per_route)
        "typed_config": typed(
            "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            grpc_service={"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}},
            failure_mode_allow=render_plan.failure_mode_allow,
            processing_mode={
                "request_header_mode": "SEND",
                "response_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "response_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            allow_mode_override=True,
            message_timeout=format_duration(render_plan.message_timeout),
            metadata_options=_metadata_options(identity),
            **({"request_attributes": attributes} if (attributes := identity.request_attributes()) else {}),
        ),
    }


def _metadata_options(identity: IdentityConfig) -> dict[str, Any]:
    """IRL's decisions come back as metadata; identity metadata (jwt_authn, ext_authz) goes to IRL."""
    options: dict[str, Any] = {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}}
    if namespaces := identity.forwarding_namespaces():
        options["forwarding_namespaces"] = {"untyped": namespaces}
    return options


def identity_header_filter(identity: IdentityConfig) -> dict[str, Any] | None:
    """Drop client copies of identity headers first, so only Envoy's own filters can set them."""
    headers = identity.envoy_set_headers()
    if not headers:
        return None
    return {
        "name": "irl.identity_header_sanitizer",
        "typed_config": typed(
            "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            mutations={"request_mutations": [{"remove": header} for header in headers]},
        ),
    }


def rate_limit_filter() -> dict[str, Any]:
    """No bucket here: only routes with a per-route config are limited."""
    return {
        "name": RATE_LIMIT_FILTER,
        "typed_config": typed(
            "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", stat_prefix="irl_rate_limit"
        ),
    }


def _tracing(sampling_percent: float) -> dict[str, Any]:
    return {
        "random_sampling": {"value": int(sampling_percent) if sampling_percent.is_integer() else sampling_percent},
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": typed(
                "envoy.config.trace.v3.OpenTelemetryConfig",
                grpc_service={"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "1s"},
                service_name="irl-envoy",
            ),
        },
    }


# Envoy's OpenTelemetry tracer sends a batch once it holds this many spans (or every 5 s). Envoy's
# default of 5 makes an export per two or three requests; measured, that cost Envoy ~70 µs more per
# traced request than 512, which is also the OpenTelemetry SDK's default export batch.
TRACE_FLUSH_SPANS = 512


def _traced_runtime() -> dict[str, Any]:
    """Envoy's layered runtime with the tracer's batch size, then an admin layer (``/runtime_modify``),
    which is what Envoy runs with when no runtime is configured."""
    defaults = {"tracing.opentelemetry.min_flush_spans": TRACE_FLUSH_SPANS}
    return {"layers": [{"name": "irl", "static_layer": defaults}, {"name": "admin", "admin_layer": {}}]}


def _path_source(xds_dir: Path, kind: str) -> dict[str, Any]:
    return {
        "path_config_source": {"path": str(xds_dir / XDS_FILES[kind]), "watched_directory": {"path": str(xds_dir)}},
        "resource_api_version": "V3",
    }


def http_connection_manager(render_plan: RenderPlan, *, tracing: bool, xds_dir: Path | None = None) -> dict[str, Any]:
    # Route matching sees the path the upstream will see, so '//v1/..' cannot dodge a route.
    hcm = typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="irl",
        codec_type="AUTO",
        normalize_path=True,
        merge_slashes=True,
    )
    if xds_dir is None:
        hcm["route_config"] = route_configuration(render_plan)
    else:
        hcm["rds"] = {"route_config_name": ROUTE_CONFIG_NAME, "config_source": _path_source(xds_dir, "rds")}
    sanitizer = identity_header_filter(render_plan.policy.document.identity)
    hcm["http_filters"] = [
        *([sanitizer] if sanitizer else []),
        rate_limit_filter(),  # before ext_proc: a limited request costs IRL nothing
        extproc_filter(render_plan),
        {
            "name": "envoy.filters.http.router",
            "typed_config": typed("envoy.extensions.filters.http.router.v3.Router"),
        },
    ]
    hcm["local_reply_config"] = local_reply_config(render_plan)
    if tracing:
        hcm["tracing"] = _tracing(render_plan.policy.document.telemetry.trace_sampling)
    return hcm


def listener(
    render_plan: RenderPlan, *, port: int | None, tracing: bool, xds_dir: Path | None = None
) -> dict[str, Any]:
    spec = render_plan.policy.document.listener
    return {
        "name": LISTENER_NAME,
        "address": {"socket_address": {"address": spec.address, "port_value": spec.port if port is None else port}},
        "per_connection_buffer_limit_bytes": render_plan.buffer_limit_bytes,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": http_connection_manager(render_plan, tracing=tracing, xds_dir=xds_dir),
                    }
                ]
            }
        ],
    }


def service_clusters(render_plan: RenderPlan) -> list[dict[str, Any]]:
    return [upstream_cluster(c, render_plan.buffer_limit_bytes) for c in render_plan.clusters]


def _overload_manager() -> dict[str, Any]:
    """Cap downstream connections so a flood degrades instead of exhausting file descriptors."""
    return {
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": typed(
                    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS,
                ),
            }
        ]
    }


def _check_ports(extproc_endpoints: Sequence[tuple[str, int]], admin_port: int, listener_port: int | None) -> None:
    if not extproc_endpoints:
        raise ValueError("extproc_endpoints is empty: give at least one (host, port) of an IRL server")
    if listener_port == 0 or admin_port == 0:
        raise ValueError("port 0 is not allowed: pick a free port and pass it")


def render_bootstrap(
    policy: LoadedPolicy,
    *,
    extproc_endpoints: Sequence[tuple[str, int]],
    admin_port: int,
    listener_port: int | None = None,
    xds_dir: Path | None = None,
    otlp_endpoint: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """A complete bootstrap. With ``xds_dir``, listeners, routes and service clusters come
    from the files ``write_xds`` puts there, so Envoy reloads them when they change."""
    _check_ports(extproc_endpoints, admin_port, listener_port)
    render_plan = plan(policy)
    static_clusters = [extproc_cluster(extproc_endpoints, render_plan.buffer_limit_bytes)]
    if otlp_endpoint:
        static_clusters.append(otlp_cluster(otlp_endpoint))
    bootstrap: dict[str, Any] = {
        "node": {"id": "irl-envoy", "cluster": "irl"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "overload_manager": _overload_manager(),
    }
    if otlp_endpoint:
        bootstrap["layered_runtime"] = _traced_runtime()
    if xds_dir is None:
        bootstrap["static_resources"] = {
            "listeners": [listener(render_plan, port=listener_port, tracing=otlp_endpoint is not None)],
            "clusters": [*service_clusters(render_plan), *static_clusters],
        }
    else:
        bootstrap["static_resources"] = {"clusters": static_clusters}
        bootstrap["dynamic_resources"] = {
            "cds_config": _path_source(Path(xds_dir), "cds"),
            "lds_config": _path_source(Path(xds_dir), "lds"),
        }
    return bootstrap


def render_xds(
    policy: LoadedPolicy,
    xds_dir: Path,
    *,
    listener_port: int | None = None,
    otlp_endpoint: tuple[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """The CDS, RDS and LDS discovery responses, by kind."""
    render_plan = plan(policy)
    version = policy.version
    resources = {
        "cds": service_clusters(render_plan),
        "rds": [route_configuration(render_plan)],
        "lds": [listener(render_plan, port=listener_port, tracing=otlp_endpoint is not None, xds_dir=xds_dir)],
    }
    return {
        kind: {"version_info": version, "resources": [typed(_RESOURCE_TYPES[kind], **r) for r in items]}
        for kind, items in resources.items()
    }


def header(policy: LoadedPolicy) -> str:
    return f"# Rendered by irl from {policy.source} (sha256 {policy.version}). Do not edit: edit the policy.\n"


def dump_yaml(data: Any, policy: LoadedPolicy) -> str:
    return header(policy) + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120)


def write_atomically(path: Path, text: str) -> None:
    """Write a sibling temp file, then rename: a watcher never sees a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_xds(
    policy: LoadedPolicy,
    xds_dir: Path,
    *,
    extproc_endpoints: Sequence[tuple[str, int]] = (),
    admin_port: int | None = None,
    listener_port: int | None = None,
    otlp_endpoint: tuple[str, int] | None = None,
) -> list[Path]:
    """Write cds/rds/lds atomically, clusters first so no route points at a missing cluster.

    ``extproc_endpoints`` and ``admin_port`` live in the bootstrap; they are accepted so
    callers can pass the same options to both functions.
    """
    del extproc_endpoints, admin_port
    xds_dir = Path(xds_dir)
    xds_dir.mkdir(parents=True, exist_ok=True)
    responses = render_xds(policy, xds_dir, listener_port=listener_port, otlp_endpoint=otlp_endpoint)
    written = []
    for kind in ("cds", "rds", "lds"):
        path = xds_dir / XDS_FILES[kind]
        write_atomically(path, dump_yaml(responses[kind], policy))
        written.append(path)
    return written
