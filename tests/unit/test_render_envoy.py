"""The Envoy bootstrap's contract with IRL's ext_proc server and with the policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from irl_extproc.policy.load import load_policy
from irl_extproc.render.envoy import render_bootstrap, render_xds, write_xds
from tests.conftest import POLICIES, TESTS

pytestmark = pytest.mark.unit

GOLDEN_POLICIES = TESTS / "golden" / "policies"
ENDPOINTS = [("127.0.0.1", 50051), ("127.0.0.1", 50052)]


def bootstrap(policy: Path, **options: Any) -> dict[str, Any]:
    options.setdefault("extproc_endpoints", ENDPOINTS)
    options.setdefault("admin_port", 19000)
    return render_bootstrap(load_policy(policy), **options)


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def routes_by_name(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for vh in hcm(config)["route_config"]["virtual_hosts"] for r in vh["routes"]}


def cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in config["static_resources"]["clusters"] if c["name"] == name)


def test_extproc_filter_sits_before_the_router_with_the_agreed_settings() -> None:
    filters = hcm(bootstrap(POLICIES / "basic.yaml"))["http_filters"]
    names = [f["name"] for f in filters]
    assert names.index("envoy.filters.http.ext_proc") == names.index("envoy.filters.http.router") - 1
    ext_proc_filter = filters[names.index("envoy.filters.http.ext_proc")]
    assert ext_proc_filter["disabled"] is True  # requests that match no route never reach IRL
    ext_proc = ext_proc_filter["typed_config"]
    assert ext_proc["grpc_service"] == {"envoy_grpc": {"cluster_name": "irl_extproc"}}
    assert ext_proc["allow_mode_override"] is True
    assert ext_proc["failure_mode_allow"] is False  # one route fails open, the others closed
    assert ext_proc["message_timeout"] == "2s"  # the policy default's
    assert ext_proc["metadata_options"] == {"receiving_namespaces": {"untyped": ["irl"]}}
    assert ext_proc["processing_mode"]["request_body_mode"] == "BUFFERED"


def overrides(route: dict[str, Any]) -> dict[str, Any]:
    """The ExtProcPerRoute overrides inside the FilterConfig that enables ext_proc on a route."""
    wrapper = route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
    assert wrapper["@type"] == "type.googleapis.com/envoy.config.route.v3.FilterConfig"
    assert wrapper["disabled"] is False
    config: dict[str, Any] = wrapper["config"]
    assert config["@type"] == "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
    return dict(config["overrides"])


def test_each_route_carries_its_identity_and_needs_only_the_bodies_it_checks() -> None:
    routes = routes_by_name(bootstrap(POLICIES / "basic.yaml"))
    chat = overrides(routes["chat/chat"])
    assert chat["grpc_initial_metadata"] == [{"key": "x-irl-route", "value": "chat/chat"}]
    assert chat["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert chat["processing_mode"]["response_body_mode"] == "FULL_DUPLEX_STREAMED"
    assert chat["processing_mode"]["response_trailer_mode"] == "SEND"
    assert chat["failure_mode_allow"] is False
    messages = overrides(routes["chat/messages"])
    assert messages["processing_mode"]["response_header_mode"] == "SKIP"
    assert messages["processing_mode"]["response_body_mode"] == "NONE"
    assert overrides(routes["chat/headers-only"])["processing_mode"]["request_body_mode"] == "NONE"
    open_route = overrides(routes["chat/open"])
    assert open_route["failure_mode_allow"] is True
    plain = routes["chat/plain"]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
    assert plain == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
        "disabled": True,
    }


RESPONSE_ONLY = """
version: 1
{identity}
services:
  a:
    upstream: {{address: 127.0.0.1, port: 1}}
    routes:
      - name: out
        match: {{prefix: /out}}
        sentinel: {{response: [{{pii: {{}}}}]}}
      - name: both
        match: {{prefix: /both}}
        sentinel: {{request: [{{pii: {{}}}}], response: [{{pii: {{}}}}]}}
"""


@pytest.mark.parametrize(
    ("identity", "skipped", "attributes"),
    [
        ("", True, ["request.id", "request.path"]),
        ("identity: {tenant: {attribute: source.principal}}", True, ["request.id", "request.path", "source.principal"]),
        ("identity: {tenant: {metadata: {namespace: envoy.filters.http.jwt_authn, path: [org]}}}", True, None),
        ("identity: {tenant: {header: x-tenant, header_set_by_envoy: true}}", False, None),
    ],
)
def test_response_only_routes_skip_the_request_headers_round_trip(
    tmp_path: Path, identity: str, skipped: bool, attributes: list[str] | None
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(RESPONSE_ONLY.format(identity=identity))
    routes = routes_by_name(bootstrap(policy))
    out, both = overrides(routes["a/out"]), overrides(routes["a/both"])
    assert out["processing_mode"]["request_header_mode"] == ("SKIP" if skipped else "SEND")
    assert both["processing_mode"]["request_header_mode"] == "SEND"  # request invariants need the request
    if skipped:  # what the request headers reply gave IRL comes another way
        assert out["response_attributes"] == (attributes or ["request.id", "request.path"])
        assert routes["a/out"]["request_headers_to_remove"] == ["accept-encoding"]
    else:
        assert "response_attributes" not in out
        assert "request_headers_to_remove" not in routes["a/out"]
    assert "request_headers_to_remove" not in routes["a/both"]


def test_extproc_cluster_balances_every_endpoint_over_http2() -> None:
    extproc = cluster(bootstrap(POLICIES / "basic.yaml"), "irl_extproc")
    hosts = [
        e["endpoint"]["address"]["socket_address"] for e in extproc["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert hosts == [{"address": "127.0.0.1", "port_value": 50051}, {"address": "127.0.0.1", "port_value": 50052}]
    assert extproc["lb_policy"] == "ROUND_ROBIN"
    options = extproc["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]


def test_buffers_fit_the_largest_body_irl_must_see(tmp_path: Path) -> None:
    policy = tmp_path / "big.yaml"
    policy.write_text(
        "version: 1\nservices:\n  a:\n    upstream: {address: 127.0.0.1, port: 1}\n"
        "    routes:\n      - match: {prefix: /}\n        sentinel: {max_body_bytes: 8MiB}\n"
    )
    config = bootstrap(policy)
    limit = config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"]
    assert limit > 8 * 2**20
    assert all(c["per_connection_buffer_limit_bytes"] >= limit for c in config["static_resources"]["clusters"][:-1])


def test_listener_port_override_and_port_zero_refused() -> None:
    config = bootstrap(POLICIES / "basic.yaml", listener_port=12345)
    address = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert address["port_value"] == 12345
    with pytest.raises(ValueError, match="port 0"):
        bootstrap(POLICIES / "basic.yaml", listener_port=0)


def test_virtual_hosts_services_with_hosts_get_their_own() -> None:
    vhosts = hcm(bootstrap(GOLDEN_POLICIES / "full.yaml"))["route_config"]["virtual_hosts"]
    assert [(v["name"], v["domains"]) for v in vhosts] == [
        ("svc_billing", ["billing.example.com"]),
        ("irl_default", ["*"]),
    ]


def test_dns_names_tls_and_host_rewrite() -> None:
    config = bootstrap(GOLDEN_POLICIES / "full.yaml")
    billing = cluster(config, "svc_billing")
    assert billing["type"] == "STRICT_DNS"
    assert billing["transport_socket"]["typed_config"]["sni"] == "billing.internal"
    assert cluster(config, "svc_chat-llm")["type"] == "STATIC"
    route = routes_by_name(config)["billing/root"]["route"]
    assert route["host_rewrite_literal"] == "billing.internal"


def test_route_level_cluster_settings_get_their_own_cluster() -> None:
    config = bootstrap(GOLDEN_POLICIES / "full.yaml")
    routes = routes_by_name(config)
    assert routes["chat-llm/v1-chat-completions"]["route"]["cluster"] == "svc_chat-llm"
    assert routes["chat-llm/v1-messages"]["route"]["cluster"] == "svc_chat-llm__v1-messages"
    own = cluster(config, "svc_chat-llm__v1-messages")["circuit_breakers"]["thresholds"][0]
    assert own["max_requests"] == 5
    assert own["max_connections"] == 100  # inherited from the service, merged field by field


def test_tracing_only_with_an_otlp_endpoint() -> None:
    assert "tracing" not in hcm(bootstrap(POLICIES / "basic.yaml"))
    config = bootstrap(POLICIES / "basic.yaml", otlp_endpoint=("127.0.0.1", 4317))
    provider = hcm(config)["tracing"]["provider"]["typed_config"]
    assert provider["service_name"] == "irl-envoy"
    assert provider["grpc_service"]["envoy_grpc"]["cluster_name"] == "otlp_collector"
    assert cluster(config, "otlp_collector")["load_assignment"]["endpoints"][0]["lb_endpoints"][0]


def test_xds_mode_points_lds_and_cds_at_watched_files(tmp_path: Path) -> None:
    policy = load_policy(POLICIES / "basic.yaml")
    config = render_bootstrap(policy, extproc_endpoints=ENDPOINTS, admin_port=19000, xds_dir=tmp_path)
    lds = config["dynamic_resources"]["lds_config"]["path_config_source"]
    assert lds == {"path": str(tmp_path / "lds.yaml"), "watched_directory": {"path": str(tmp_path)}}
    assert [c["name"] for c in config["static_resources"]["clusters"]] == ["irl_extproc"]
    written = write_xds(policy, tmp_path, extproc_endpoints=ENDPOINTS, admin_port=19000)
    assert [p.name for p in written] == ["cds.yaml", "rds.yaml", "lds.yaml"]
    assert not list(tmp_path.glob(".*.tmp"))
    rds = yaml.safe_load((tmp_path / "rds.yaml").read_text())
    assert rds["version_info"] == policy.version
    assert rds == render_xds(policy, tmp_path)["rds"]


def test_rendering_is_deterministic() -> None:
    first = bootstrap(GOLDEN_POLICIES / "full.yaml", otlp_endpoint=("127.0.0.1", 4317))
    second = bootstrap(GOLDEN_POLICIES / "full.yaml", otlp_endpoint=("127.0.0.1", 4317))
    assert yaml.safe_dump(first) == yaml.safe_dump(second)
