"""Istio output: strict models, CRD schemas (when available), version gates and warnings."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from irl_extproc.policy.load import load_policy
from irl_extproc.render.istio import IstioOptions, dump_istio, render_istio
from irl_extproc.render.istio_models import DestinationRule, TrafficPolicy
from tests.conftest import REPO, TESTS

pytestmark = pytest.mark.unit

MESH = TESTS / "golden" / "policies" / "mesh.yaml"
# Istio's published CRDs, beside the checkout in development and CI; a fresh clone has none.
CRD_FILE = REPO.parent / "shared" / "schemas" / "istio-crds-1.30.3.yaml"


def rendered(options: IstioOptions | None = None, policy: Path = MESH) -> list[dict[str, Any]]:
    loaded = load_policy(policy)
    return [d for d in yaml.safe_load_all(dump_istio(render_istio(loaded, options or IstioOptions()), loaded)) if d]


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def test_a_misspelt_field_cannot_be_built() -> None:
    with pytest.raises(pydantic.ValidationError, match="retryBudgit"):
        TrafficPolicy.model_validate({"retryBudgit": {"percent": 20}})
    with pytest.raises(pydantic.ValidationError):
        DestinationRule.model_validate({"metadata": {"name": "x", "namespace": "y"}, "spec": {"hots": "a"}})


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected (Istio's own schemas allow them)."""
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: _strict(v) for k, v in schema.items()}
    if "properties" in strict and not strict.get("x-kubernetes-preserve-unknown-fields"):
        strict["additionalProperties"] = False
    return strict


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for doc in yaml.load_all(CRD_FILE.read_text(), Loader=yaml.CSafeLoader):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schemas[(f"{group}/{version['name']}", kind)] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


@pytest.mark.skipif(not CRD_FILE.exists(), reason="Istio CRD schemas are not next to this checkout")
def test_every_resource_validates_against_istios_crds_with_unknown_fields_rejected() -> None:
    import jsonschema

    schemas = crd_schemas()
    documents = rendered() + rendered(IstioOptions(context="GATEWAY"))
    for document in documents:
        schema = schemas[(document["apiVersion"], document["kind"])]
        jsonschema.Draft7Validator(schema).validate(
            {"spec": document["spec"]}
        )  # metadata and kind are Kubernetes', not Istio's
    assert {d["kind"] for d in documents} == {"DestinationRule", "VirtualService", "EnvoyFilter"}


@pytest.mark.skipif(not CRD_FILE.exists(), reason="Istio CRD schemas are not next to this checkout")
def test_the_crd_check_catches_a_misspelt_field() -> None:
    import jsonschema

    schema = crd_schemas()[("networking.istio.io/v1", "DestinationRule")]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate({"spec": {"host": "a", "trafficPolicy": {"retryBudgit": {}}}})


def test_destination_rule_carries_pool_outlier_budget_and_route_subsets() -> None:
    payments = next(d for d in by_kind(rendered(), "DestinationRule") if d["metadata"]["name"] == "irl-payments")
    policy = payments["spec"]["trafficPolicy"]
    assert policy["connectionPool"] == {
        "tcp": {"maxConnections": 200, "connectTimeout": "0.5s"},
        "http": {"http1MaxPendingRequests": 50, "http2MaxRequests": 400, "maxRetries": 10},
    }
    assert policy["retryBudget"] == {"percent": 20.0, "minRetryConcurrency": 3}
    assert policy["outlierDetection"]["consecutive5xxErrors"] == 5
    (subset,) = payments["spec"]["subsets"]
    assert subset["name"] == "reports"
    assert subset["trafficPolicy"]["connectionPool"]["http"]["http2MaxRequests"] == 20


def test_retries_apply_only_to_the_methods_the_policy_allows() -> None:
    payments = next(d for d in by_kind(rendered(), "VirtualService") if d["metadata"]["name"] == "irl-payments")
    routes = {r["name"]: r for r in payments["spec"]["http"]}
    assert routes["payments-charges-retried"]["match"][0]["method"] == {"regex": "GET"}
    assert routes["payments-charges-retried"]["retries"]["attempts"] == 2
    assert routes["payments-charges-retried"]["retries"]["retryOn"] == "5xx,reset,retriable-status-codes,429"
    assert routes["payments-charges"]["match"][0]["method"] == {"regex": "POST"}
    assert routes["payments-charges"]["retries"] == {"attempts": 0}
    assert routes["payments-refunds-retried"]["match"][0] == {
        "uri": {"exact": "/v1/refunds"},
        "method": {"regex": "POST"},
    }
    assert routes["payments-reports"]["route"][0]["destination"]["subset"] == "reports"


def test_envoy_filter_inserts_extproc_before_the_router_and_names_each_route() -> None:
    (envoy_filter,) = by_kind(rendered(), "EnvoyFilter")
    spec = envoy_filter["spec"]
    assert spec["priority"] == 10
    inserts = [p for p in spec["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    assert [p["patch"]["value"]["name"] for p in inserts] == [
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.ext_proc",
    ]
    assert all(
        p["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
        for p in inserts
    )
    ext_proc = inserts[1]["patch"]["value"]["typed_config"]
    assert ext_proc["grpc_service"]["envoy_grpc"]["cluster_name"] == (
        "outbound|50051||irl-extproc.irl-system.svc.cluster.local"
    )
    route_patches = {
        p["match"]["routeConfiguration"]["vhost"]["route"]["name"]: p["patch"]["value"]["typed_per_filter_config"]
        for p in spec["configPatches"]
        if p["applyTo"] == "HTTP_ROUTE"
    }
    chat = route_patches["assistant-chat"]["envoy.filters.http.ext_proc"]["config"]["overrides"]
    assert chat["grpc_initial_metadata"] == [{"key": "x-irl-route", "value": "assistant/chat"}]
    assert route_patches["payments-charges"]["envoy.filters.http.ext_proc"]["disabled"] is True
    assert "envoy.filters.http.local_ratelimit" in route_patches["payments-refunds-retried"]


def test_a_response_only_route_skips_the_request_headers_in_the_mesh_too(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\nservices:\n  a:\n    upstream: {address: llm.ai.svc.cluster.local, port: 80}\n"
        "    routes:\n      - {name: out, match: {prefix: /}, sentinel: {response: [{pii: {}}]}}\n"
    )
    (envoy_filter,) = by_kind(rendered(policy=policy), "EnvoyFilter")
    (route,) = [p["patch"]["value"] for p in envoy_filter["spec"]["configPatches"] if p["applyTo"] == "HTTP_ROUTE"]
    overrides = route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["config"]["overrides"]
    assert overrides["processing_mode"]["request_header_mode"] == "SKIP"
    assert overrides["response_attributes"] == ["request.id", "request.path"]
    assert route["request_headers_to_remove"] == ["accept-encoding"]


def test_contexts_and_gateway_hosts() -> None:
    documents = rendered(IstioOptions(context="GATEWAY"))
    assistant = next(d for d in by_kind(documents, "VirtualService") if d["metadata"]["name"] == "irl-assistant")
    assert assistant["spec"]["hosts"] == ["assistant.example.com"]
    assert assistant["spec"]["gateways"] == ["istio-system/ingressgateway"]
    (envoy_filter,) = by_kind(documents, "EnvoyFilter")
    assert {p["match"]["context"] for p in envoy_filter["spec"]["configPatches"]} == {"GATEWAY"}


def test_older_istio_gets_warnings_instead_of_unknown_fields() -> None:
    output = render_istio(load_policy(MESH), IstioOptions(version="1.25"))
    assert any("retry_budget needs Istio ≥ 1.27" in w for w in output.warnings)
    assert any("backoff needs Istio ≥ 1.26" in w for w in output.warnings)
    dumped = dump_istio(output, load_policy(MESH))
    assert "retryBudget" not in dumped
    assert "backoff:" not in dumped


def test_what_istio_cannot_express_is_a_warning() -> None:
    warnings = render_istio(load_policy(MESH), IstioOptions()).warnings
    assert any("svc_status: Istio has no active health checks" in w for w in warnings)
    assert any("payments/reports: Istio has no per-route stream idle timeout" in w for w in warnings)


def test_ip_upstreams_are_skipped_with_a_warning() -> None:
    output = render_istio(load_policy(TESTS / "policies" / "basic.yaml"), IstioOptions())
    assert any("upstream 127.0.0.1 is an IP address" in w for w in output.warnings)
    assert [type(r).__name__ for r in output.resources] == ["EnvoyFilter"]


def test_a_disabled_timeout_is_left_out_and_an_unset_one_means_envoys_15s(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\nservices:\n  a:\n    upstream: {address: a.svc, port: 80}\n    routes:\n"
        "      - {name: stream, match: {prefix: /s}, resilience: {timeouts: {request: 0s}}}\n"
        "      - {name: plain, match: {prefix: /}}\n"
    )
    (service,) = by_kind(rendered(policy=policy), "VirtualService")
    routes = {r["name"]: r for r in service["spec"]["http"]}
    assert "timeout" not in routes["a-stream"]
    assert routes["a-plain"]["timeout"] == "15s"
