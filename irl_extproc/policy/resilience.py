"""Transport resilience settings (timeouts, retries, breakers, ...) rendered into Envoy/Istio.

Every field is optional so the same models layer defaults → service → route
(``resolve.merge`` merges nested models field by field; lists replace). Settings that
Envoy keeps per upstream cluster (connect timeout, retry budget, circuit breakers,
outlier detection, health checks) give a route its own cluster when the route changes
them; everything else is rendered on the route itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from irl_extproc.policy.units import Duration

HttpMethod = Literal["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "POST", "PATCH"]
IDEMPOTENT_METHODS: tuple[HttpMethod, ...] = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE")
RetryOn = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "refused-stream",
    "retriable-4xx",
    "retriable-status-codes",
    "envoy-ratelimited",
    "http3-post-connect-failure",
]
# Conditions where the upstream never saw the request: retrying them is safe for any method.
SAFE_RETRY_ON: frozenset[str] = frozenset(
    {"connect-failure", "refused-stream", "reset-before-request", "http3-post-connect-failure"}
)
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = ("connect-failure", "refused-stream", "reset-before-request")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    request: Duration | None = Field(
        None, description="whole request, all retries included (Envoy's default: 15s; 0s disables it)"
    )
    per_try: Duration | None = Field(None, description="one attempt; a retry starts when it expires")
    idle: Duration | None = Field(None, description="a stream with no bytes in either direction for this long ends")
    connect: Duration | None = Field(None, description="TCP/TLS connect to the upstream (Envoy's default: 5s)")


class Backoff(_Strict):
    base: Duration | None = Field(None, description="first retry waits up to this (jittered; Envoy: 25ms)")
    max: Duration | None = Field(None, description="cap on the wait (Envoy: 10 x base)")


class ResetHeader(_Strict):
    name: str = Field(min_length=1, description="response header naming when to retry, e.g. retry-after")
    format: Literal["seconds", "unix_timestamp"] = "seconds"


class RateLimitedBackoff(_Strict):
    reset_headers: list[ResetHeader] = Field(min_length=1)
    max_interval: Duration | None = Field(None, description="never wait longer than this (Envoy: 300s)")


class Retries(_Strict):
    attempts: int | None = Field(None, ge=0, le=10, description="retries after the first try (0: none)")
    retry_on: list[RetryOn] | None = Field(
        None, description="conditions that trigger a retry (default: " + ", ".join(DEFAULT_RETRY_ON) + ")"
    )
    retriable_status_codes: list[int] | None = Field(
        None, description="status codes to retry; needs 'retriable-status-codes' in retry_on"
    )
    backoff: Backoff | None = None
    rate_limited_backoff: RateLimitedBackoff | None = Field(
        None, description="wait as long as the upstream's reset headers (e.g. retry-after) say"
    )
    avoid_previous_hosts: bool | None = Field(None, description="retry on a host not tried before")
    methods: list[HttpMethod] | None = Field(
        None,
        description="methods retried on conditions where the upstream may have seen the request "
        "(5xx, reset, ...); default: the idempotent ones. Listing POST or PATCH is the explicit "
        "opt-in to retry non-idempotent requests",
    )

    @model_validator(mode="after")
    def _status_codes_valid(self) -> Retries:
        for code in self.retriable_status_codes or ():
            if not 100 <= code <= 599:
                raise ValueError(f"retriable status code {code} is not an HTTP status (100-599)")
        return self


class RetryBudget(_Strict):
    percent: float | None = Field(
        None, gt=0, le=100, description="retries may add at most this % of active requests (Envoy: 20)"
    )
    min_concurrency: int | None = Field(None, ge=0, description="retries always allowed up to this many (Envoy: 3)")


class CircuitBreakers(_Strict):
    max_connections: int | None = Field(None, ge=0, description="Envoy's default: 1024")
    max_pending_requests: int | None = Field(None, ge=0, description="Envoy's default: 1024")
    max_requests: int | None = Field(None, ge=0, description="Envoy's default: 1024")
    max_retries: int | None = Field(None, ge=0, description="concurrent retries (Envoy's default: 3)")


class SuccessRateDetection(_Strict):
    min_hosts: int | None = Field(None, ge=1)
    request_volume: int | None = Field(None, ge=1, description="requests per host per interval to judge it")
    stdev_factor: float | None = Field(None, gt=0, description="eject below mean - factor x stdev (Envoy: 1.9)")


class FailurePercentageDetection(_Strict):
    threshold: int | None = Field(None, ge=0, le=100, description="eject above this failure % (Envoy: 85)")
    min_hosts: int | None = Field(None, ge=1)
    request_volume: int | None = Field(None, ge=1)


class OutlierDetection(_Strict):
    consecutive_5xx: int | None = Field(None, ge=1)
    consecutive_gateway_errors: int | None = Field(None, ge=1, description="502/503/504 and connect failures")
    interval: Duration | None = Field(None, description="how often hosts are judged (Envoy: 10s)")
    base_ejection_time: Duration | None = Field(None, description="multiplied by the number of ejections")
    max_ejection_time: Duration | None = None
    max_ejection_percent: int | None = Field(None, ge=0, le=100, description="Envoy's default: 10")
    success_rate: SuccessRateDetection | None = None
    failure_percentage: FailurePercentageDetection | None = None


class HealthCheck(_Strict):
    kind: Literal["http", "grpc", "tcp"] | None = None
    path: str | None = Field(None, pattern=r"^/", description="HTTP checks: the path to GET")
    grpc_service: str | None = Field(None, description="gRPC checks: the service name to ask about")
    interval: Duration | None = None
    timeout: Duration | None = None
    unhealthy_threshold: int | None = Field(None, ge=1)
    healthy_threshold: int | None = Field(None, ge=1)


class RateLimit(_Strict):
    requests: int | None = Field(None, ge=1, description="tokens added per 'per' interval")
    per: Duration | None = Field(None, description="the refill interval, e.g. 1s")
    burst: int | None = Field(None, ge=1, description="bucket size (default: 'requests')")


class Resilience(_Strict):
    timeouts: Timeouts | None = None
    retries: Retries | None = None
    retry_budget: RetryBudget | None = None
    circuit_breakers: CircuitBreakers | None = None
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    rate_limit: RateLimit | None = Field(None, description="local token bucket per route; excess gets 429")


# Settings Envoy keeps on the upstream cluster rather than the route.
CLUSTER_FIELDS = ("retry_budget", "circuit_breakers", "outlier_detection", "health_check")
