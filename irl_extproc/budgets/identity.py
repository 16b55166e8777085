"""Who a request belongs to (tenant, API key, team), from sources Envoy vouches for.

Trust model (docs/budgets.md): a budget is only as good as its key. IRL therefore reads
identity from what Envoy itself establishes — dynamic metadata written by ``jwt_authn`` or
``ext_authz`` and forwarded on the ext_proc stream (``metadata_context``), or ext_proc
``attributes`` such as the mTLS peer's SAN — and never from a raw client header. A header is
accepted only when the policy states that Envoy sets it (``header_set_by_envoy: true``), which
obliges the rendered Envoy config to remove the client's copy before the filter that sets it
(see ``IdentityConfig.envoy_set_headers``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from google.protobuf import struct_pb2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep

MAX_PRINCIPAL_CHARS = 128  # longer values are hashed so counter keys stay small
PRINCIPALS = ("tenant", "api_key", "team")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetadataRef(_Strict):
    namespace: str = Field(min_length=1, description="filter namespace, e.g. envoy.filters.http.jwt_authn")
    path: list[str] = Field(min_length=1, description="keys into the namespace's struct, e.g. [jwt_payload, org]")


class PrincipalSource(_Strict):
    """Exactly one of ``metadata``, ``attribute`` or ``header``."""

    metadata: MetadataRef | None = Field(None, description="Envoy dynamic metadata forwarded to ext_proc")
    attribute: str | None = Field(None, description="ext_proc request attribute, e.g. source.principal")
    header: str | None = Field(None, pattern=r"^[a-z0-9-]+$", description="a header Envoy sets (lower case)")
    header_set_by_envoy: bool = Field(
        False, description="required with 'header': Envoy sets the header and removes any client copy"
    )
    hash: bool | None = Field(None, description="store a hash instead of the value (default: true for api_key)")

    @model_validator(mode="after")
    def _one_source(self) -> PrincipalSource:
        given = [n for n in ("metadata", "attribute", "header") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'metadata', 'attribute' or 'header'")
        if self.header is not None and not self.header_set_by_envoy:
            raise ValueError(
                "a client can send any header it likes; use 'metadata' from jwt_authn/ext_authz, or add "
                "'header_set_by_envoy: true' if the Envoy config sets this header (the rendered config then "
                "removes the client's copy first)"
            )
        return self


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class IdentityConfig(_Strict):
    """Sources tried in order for each principal; the first one present wins."""

    tenant: list[PrincipalSource] = Field(default_factory=list)
    api_key: list[PrincipalSource] = Field(default_factory=list)
    team: list[PrincipalSource] = Field(default_factory=list)

    _wrap = field_validator("tenant", "api_key", "team", mode="before")(_as_list)

    def _sources(self) -> list[PrincipalSource]:
        return [*self.tenant, *self.api_key, *self.team]

    def forwarding_namespaces(self) -> list[str]:
        """For the renderer: ext_proc ``metadata_options.forwarding_namespaces.untyped``."""
        return sorted({s.metadata.namespace for s in self._sources() if s.metadata})

    def request_attributes(self) -> list[str]:
        """For the renderer: ext_proc ``request_attributes``."""
        return sorted({s.attribute for s in self._sources() if s.attribute})

    def envoy_set_headers(self) -> list[str]:
        """For the renderer: headers whose client copy must be removed before Envoy sets them."""
        return sorted({s.header for s in self._sources() if s.header})


def _scalar(value: struct_pb2.Value) -> str | None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value or None
    if kind == "number_value":
        number = value.number_value
        return str(int(number)) if number.is_integer() else str(number)
    if kind == "bool_value":
        return str(value.bool_value).lower()
    return None


def _walk(struct: struct_pb2.Struct, path: list[str]) -> str | None:
    for i, key in enumerate(path):
        if key not in struct.fields:
            return None
        value = struct.fields[key]
        if i == len(path) - 1:
            return _scalar(value)
        if value.WhichOneof("kind") != "struct_value":
            return None
        struct = value.struct_value
    return None


def _header(message: ep.ProcessingRequest, name: str) -> str | None:
    for h in message.request_headers.headers.headers:
        if h.key.lower() == name:
            return (h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value) or None
    return None


def _read(source: PrincipalSource, message: ep.ProcessingRequest) -> str | None:
    if source.metadata is not None:
        namespaces = message.metadata_context.filter_metadata
        ref = source.metadata
        return _walk(namespaces[ref.namespace], ref.path) if ref.namespace in namespaces else None
    if source.attribute is not None:
        for struct in message.attributes.values():
            if source.attribute in struct.fields:
                return _scalar(struct.fields[source.attribute])
        return None
    assert source.header is not None
    return _header(message, source.header)


def _digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


def resolve_identity(config: IdentityConfig, message: ep.ProcessingRequest) -> dict[str, str]:
    """The principals of the request whose ``request_headers`` message this is."""
    found: dict[str, str] = {}
    for principal in PRINCIPALS:
        for source in getattr(config, principal):
            value = _read(source, message)
            if value is None:
                continue
            hashed = source.hash if source.hash is not None else principal == "api_key"
            found[principal] = _digest(value) if hashed or len(value) > MAX_PRINCIPAL_CHARS else value
            break
    return found
