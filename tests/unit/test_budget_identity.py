"""Identity comes from what Envoy vouches for: metadata, attributes, or a header Envoy sets."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from irl_extproc._gen.envoy.config.core.v3 import base_pb2
from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc.budgets.identity import IdentityConfig, resolve_identity

pytestmark = pytest.mark.unit

JWT = "envoy.filters.http.jwt_authn"


def message(metadata: dict[str, Any] | None = None, attributes: dict[str, Any] | None = None,
            **headers: str) -> ep.ProcessingRequest:
    request = ep.ProcessingRequest()
    for key, value in headers.items():
        request.request_headers.headers.headers.append(base_pb2.HeaderValue(key=key, raw_value=value.encode()))
    for namespace, values in (metadata or {}).items():
        request.metadata_context.filter_metadata[namespace].update(values)
    for attribute, value in (attributes or {}).items():
        request.attributes["envoy.filters.http.ext_proc"].update({attribute: value})
    return request


def config(**principals: Any) -> IdentityConfig:
    return IdentityConfig.model_validate(principals)


def test_jwt_claims_from_forwarded_metadata() -> None:
    identity = config(
        tenant={"metadata": {"namespace": JWT, "path": ["jwt_payload", "org"]}},
        team=[{"metadata": {"namespace": JWT, "path": ["jwt_payload", "team"]}}],
    )
    request = message({JWT: {"jwt_payload": {"org": "acme", "team": 42}}}, **{"x-tenant": "evil"})
    assert resolve_identity(identity, request) == {"tenant": "acme", "team": "42"}


def test_sources_are_tried_in_order_and_missing_ones_skipped() -> None:
    identity = config(tenant=[
        {"metadata": {"namespace": JWT, "path": ["jwt_payload", "org"]}},
        {"attribute": "source.principal"},
    ])
    spiffe = "spiffe://cluster.local/ns/shop/sa/checkout"
    assert resolve_identity(identity, message(attributes={"source.principal": spiffe})) == {"tenant": spiffe}
    assert resolve_identity(identity, message({JWT: {"jwt_payload": {"org": ["a"]}}})) == {}


def test_api_keys_are_hashed_by_default_and_long_values_always() -> None:
    identity = config(
        api_key={"metadata": {"namespace": "envoy.filters.http.ext_authz", "path": ["key"]}},
        team={"header": "x-team", "header_set_by_envoy": True},
    )
    request = message({"envoy.filters.http.ext_authz": {"key": "sk-live-123"}}, **{"x-team": "t" * 200})
    found = resolve_identity(identity, request)
    assert found["api_key"].startswith("sha256:")
    assert "sk-live" not in found["api_key"]
    assert found["team"].startswith("sha256:")


def test_a_raw_client_header_is_refused_unless_envoy_sets_it() -> None:
    with pytest.raises(ValidationError, match="a client can send any header it likes"):
        config(tenant={"header": "x-tenant"})
    with pytest.raises(ValidationError, match="exactly one of"):
        config(tenant={"header": "x-tenant", "attribute": "source.principal", "header_set_by_envoy": True})
    identity = config(tenant={"header": "x-tenant", "header_set_by_envoy": True})
    assert resolve_identity(identity, message(**{"x-tenant": "acme"})) == {"tenant": "acme"}


def test_what_the_renderer_must_configure() -> None:
    identity = config(
        tenant=[{"metadata": {"namespace": JWT, "path": ["jwt_payload", "org"]}}, {"attribute": "source.principal"}],
        team={"header": "x-irl-team", "header_set_by_envoy": True},
    )
    assert identity.forwarding_namespaces() == [JWT]
    assert identity.request_attributes() == ["source.principal"]
    assert identity.envoy_set_headers() == ["x-irl-team"]
