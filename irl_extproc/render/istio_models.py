"""Strict models of the Istio resources IRL emits (networking.istio.io, Istio ≥ 1.27).

Only the fields IRL writes are modelled, each with Istio's own camelCase name, and every
model forbids unknown fields: a misspelt field fails when the resource is built, not when
the mesh ignores it. Istio's published CRD schemas do not forbid unknown fields, so these
models are the primary check; tests also validate the output against the CRDs when the
schema file is available.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

IstioContext = Literal["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]


class IstioModel(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(IstioModel):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    namespace: str
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


# DestinationRule ---------------------------------------------------------------------------


class TcpSettings(IstioModel):
    max_connections: int | None = None
    connect_timeout: str | None = None


class HttpSettings(IstioModel):
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_retries: int | None = None


class ConnectionPool(IstioModel):
    tcp: TcpSettings | None = None
    http: HttpSettings | None = None


class OutlierDetection(IstioModel):
    consecutive_5xx_errors: int | None = Field(None, alias="consecutive5xxErrors")
    consecutive_gateway_errors: int | None = None
    interval: str | None = None
    base_ejection_time: str | None = None
    max_ejection_percent: int | None = None


class RetryBudget(IstioModel):
    percent: float | None = None
    min_retry_concurrency: int | None = None


class ClientTls(IstioModel):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
    sni: str | None = None


class TrafficPolicy(IstioModel):
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    retry_budget: RetryBudget | None = None
    tls: ClientTls | None = None


class Subset(IstioModel):
    name: str
    labels: dict[str, str] | None = None
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(IstioModel):
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] | None = None


class DestinationRule(IstioModel):
    api_version: Literal["networking.istio.io/v1"] = "networking.istio.io/v1"
    kind: Literal["DestinationRule"] = "DestinationRule"
    metadata: ObjectMeta
    spec: DestinationRuleSpec


# VirtualService ----------------------------------------------------------------------------


class StringMatch(IstioModel):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class HttpMatchRequest(IstioModel):
    uri: StringMatch | None = None
    method: StringMatch | None = None


class PortSelector(IstioModel):
    number: int = Field(ge=1, le=65535)


class Destination(IstioModel):
    host: str
    port: PortSelector | None = None
    subset: str | None = None


class HttpRouteDestination(IstioModel):
    destination: Destination


class HttpRetry(IstioModel):
    attempts: int = Field(ge=0)
    per_try_timeout: str | None = None
    retry_on: str | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: str | None = None


class HttpRoute(IstioModel):
    name: str
    match: list[HttpMatchRequest] | None = None
    route: list[HttpRouteDestination]
    timeout: str | None = None
    retries: HttpRetry | None = None


class VirtualServiceSpec(IstioModel):
    hosts: list[str] = Field(min_length=1)
    gateways: list[str] | None = None
    http: list[HttpRoute]


class VirtualService(IstioModel):
    api_version: Literal["networking.istio.io/v1"] = "networking.istio.io/v1"
    kind: Literal["VirtualService"] = "VirtualService"
    metadata: ObjectMeta
    spec: VirtualServiceSpec


# EnvoyFilter -------------------------------------------------------------------------------


class SubFilterMatch(IstioModel):
    name: str


class FilterMatch(IstioModel):
    name: str
    sub_filter: SubFilterMatch | None = None


class FilterChainMatch(IstioModel):
    filter: FilterMatch


class ListenerMatch(IstioModel):
    filter_chain: FilterChainMatch


class RouteMatch(IstioModel):
    name: str


class VirtualHostMatch(IstioModel):
    route: RouteMatch


class RouteConfigurationMatch(IstioModel):
    vhost: VirtualHostMatch


class PatchMatch(IstioModel):
    context: IstioContext
    listener: ListenerMatch | None = None
    route_configuration: RouteConfigurationMatch | None = None


class Patch(IstioModel):
    operation: Literal["MERGE", "INSERT_BEFORE"]
    value: dict[str, Any]  # Envoy proto-JSON: checked by building it with the Envoy renderer


class ConfigPatch(IstioModel):
    apply_to: Literal["NETWORK_FILTER", "HTTP_FILTER", "HTTP_ROUTE"]
    match: PatchMatch
    patch: Patch


class WorkloadSelector(IstioModel):
    labels: dict[str, str]


class EnvoyFilterSpec(IstioModel):
    workload_selector: WorkloadSelector | None = None
    config_patches: list[ConfigPatch]
    priority: int | None = None


class EnvoyFilter(IstioModel):
    api_version: Literal["networking.istio.io/v1alpha3"] = "networking.istio.io/v1alpha3"
    kind: Literal["EnvoyFilter"] = "EnvoyFilter"
    metadata: ObjectMeta
    spec: EnvoyFilterSpec


IstioResource = DestinationRule | VirtualService | EnvoyFilter
