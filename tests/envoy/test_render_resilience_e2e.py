"""A rendered policy's resilience settings, proven against a real Envoy and a faulty upstream.

Every failure Envoy answers itself must arrive in IRL's error shape (OpenAI's by default,
Anthropic's on /messages), and IRL's own blocks must pass through untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.envoy.fault_upstream import FaultUpstream, fault_upstream
from tests.envoy.render_stack import RenderedEnvoy, rendered_envoy

pytestmark = pytest.mark.envoy

POLICY = """
version: 1
services:
  flaky:
    upstream: {address: 127.0.0.1, port: FAULT_PORT}
    resilience:
      retry_budget: {percent: 50, min_concurrency: 10}
    routes:
      - name: retry
        match: {prefix: /retry}
        resilience: {retries: {attempts: 2, retry_on: [5xx], backoff: {base: 10ms}}}
      - name: post-not-opted
        match: {prefix: /post-not-opted}
        resilience: {retries: {attempts: 2, retry_on: [5xx], backoff: {base: 10ms}}}
      - name: post-opted
        match: {prefix: /post-opted}
        resilience: {retries: {attempts: 2, retry_on: [5xx], methods: [POST], backoff: {base: 10ms}}}
      - name: status-codes
        match: {prefix: /status-codes}
        resilience:
          retries: {attempts: 1, retry_on: [retriable-status-codes], retriable_status_codes: [429]}
      - name: timeout
        match: {prefix: /timeout}
        resilience: {timeouts: {request: 300ms}}
      - name: per-try
        match: {prefix: /per-try}
        resilience: {timeouts: {request: 3s, per_try: 300ms}, retries: {attempts: 1, retry_on: [5xx]}}
      - name: reset
        match: {prefix: /reset}
        resilience: {retries: {attempts: 1, retry_on: [reset]}}
      - name: limited
        match: {prefix: /limited}
        resilience: {rate_limit: {requests: 2, per: 60s}}
      - name: breaker
        match: {prefix: /breaker}
        resilience: {circuit_breakers: {max_connections: 1, max_pending_requests: 1, max_requests: 1}}
      - name: outlier
        match: {prefix: /outlier}
        resilience:
          outlier_detection: {consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: 100}
      - name: messages
        match: {prefix: /v1/messages}
        resilience: {timeouts: {request: 200ms}}
      - name: guarded
        match: {prefix: /guarded}
        sentinel:
          format: openai-chat
          block_status: 503
          request: [{deny_patterns: {patterns: [forbidden], action: block}}]
  sick:
    upstream: {address: 127.0.0.1, port: SICK_PORT}
    resilience:
      health_check:
        {kind: http, path: /healthz, interval: 100ms, timeout: 50ms, unhealthy_threshold: 1, healthy_threshold: 1}
    routes: [{match: {prefix: /sick}}]
  ghost:
    upstream: {address: ghost.invalid, port: 80}
    routes: [{match: {prefix: /ghost}}]
"""


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultUpstream]:
    with fault_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def sick() -> Iterator[FaultUpstream]:
    with fault_upstream(healthy=False) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def envoy(
    tmp_path_factory: pytest.TempPathFactory, fault: FaultUpstream, sick: FaultUpstream
) -> Iterator[RenderedEnvoy]:
    text = POLICY.replace("FAULT_PORT", str(fault.port)).replace("SICK_PORT", str(sick.port))
    with rendered_envoy(tmp_path_factory.mktemp("resilience"), text, irl=True) as running:
        yield running


@pytest.fixture
def client(envoy: RenderedEnvoy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=envoy.url, timeout=10) as http:
        yield http


def fault_headers(key: str, **faults: Any) -> dict[str, str]:
    return {"x-fault-key": key, **{f"x-fault-{name}": str(value) for name, value in faults.items()}}


def assert_openai_error(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert reply.headers["x-irl-rule"] == code


def test_a_retry_hides_one_upstream_failure(client: httpx.Client, fault: FaultUpstream) -> None:
    reply = client.get("/retry", headers=fault_headers("retry", status=503, times=1))
    assert reply.status_code == 200
    assert fault.count("retry") == 2


def test_post_is_not_retried_without_the_explicit_opt_in(client: httpx.Client, fault: FaultUpstream) -> None:
    reply = client.post("/post-not-opted", headers=fault_headers("post-no", status=503, times=1))
    assert reply.status_code == 503  # the upstream's own answer, passed through
    assert fault.count("post-no") == 1
    reply = client.post("/post-opted", headers=fault_headers("post-yes", status=503, times=1))
    assert reply.status_code == 200
    assert fault.count("post-yes") == 2


def test_retriable_status_codes_are_retried(client: httpx.Client, fault: FaultUpstream) -> None:
    reply = client.get("/status-codes", headers=fault_headers("codes", status=429, times=1))
    assert reply.status_code == 200
    assert fault.count("codes") == 2


def test_a_reset_is_retried(client: httpx.Client, fault: FaultUpstream) -> None:
    reply = client.get("/reset", headers=fault_headers("reset", reset=1, times=1))
    assert reply.status_code == 200
    assert fault.count("reset") == 2


def test_resets_beyond_the_retries_get_the_error_shape(client: httpx.Client, fault: FaultUpstream) -> None:
    reply = client.get("/reset", headers=fault_headers("reset-always", reset=1))
    assert_openai_error(reply, 503, "upstream_unavailable")
    assert fault.count("reset-always") == 2


def test_the_request_timeout_answers_504(client: httpx.Client) -> None:
    reply = client.get("/timeout", headers=fault_headers("slow", delay=2))
    assert_openai_error(reply, 504, "upstream_timeout")
    assert reply.elapsed.total_seconds() < 1.5


def test_a_per_try_timeout_starts_a_retry(client: httpx.Client, fault: FaultUpstream) -> None:
    reply = client.get("/per-try", headers=fault_headers("per-try", delay=2, times=1))
    assert reply.status_code == 200
    assert reply.json()["attempt"] == 2
    assert reply.elapsed.total_seconds() < 1.5


def test_anthropic_paths_get_the_anthropic_error_shape(client: httpx.Client) -> None:
    reply = client.post("/v1/messages", json={}, headers=fault_headers("anthropic", delay=2))
    assert reply.status_code == 504
    body = reply.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert "did not answer in time" in body["error"]["message"]


def test_the_rate_limit_answers_429_after_the_bucket_empties(client: httpx.Client) -> None:
    statuses = [client.get("/limited").status_code for _ in range(2)]
    assert statuses == [200, 200]
    reply = client.get("/limited")
    assert_openai_error(reply, 429, "rate_limited")
    assert reply.headers["x-ratelimit-limit"] == "2"


def test_the_circuit_breaker_sheds_load_beyond_its_limits(client: httpx.Client, envoy: RenderedEnvoy) -> None:
    def call(i: int) -> httpx.Response:
        return client.get("/breaker", headers=fault_headers(f"breaker-{i}", delay=0.5))

    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(call, range(4)))
    shed = [r for r in replies if r.status_code != 200]
    assert shed, [r.status_code for r in replies]
    for reply in shed:
        assert_openai_error(reply, 503, "upstream_overflow")
    assert envoy.counter("cluster.svc_flaky__breaker.upstream_rq_pending_overflow") >= 1


def test_outlier_detection_ejects_a_failing_host(client: httpx.Client, envoy: RenderedEnvoy) -> None:
    for _ in range(2):
        assert client.get("/outlier", headers=fault_headers("outlier", status=500)).status_code == 500
    assert envoy.counter("cluster.svc_flaky__outlier.outlier_detection.ejections_enforced_consecutive_5xx") == 1
    assert re.search(r"svc_flaky__outlier::[\d.:]+::health_flags::/failed_outlier_check", envoy.admin("/clusters"))


def test_active_health_checks_mark_a_sick_host(envoy: RenderedEnvoy, sick: FaultUpstream) -> None:
    # Readiness waited for the first check round, so the verdict is already in.
    assert re.search(r"svc_sick::[\d.:]+::health_flags::/failed_active_hc", envoy.admin("/clusters"))
    assert envoy.counter("cluster.svc_sick.health_check.failure") >= 1


def test_no_healthy_upstream_and_no_route_get_the_error_shape(client: httpx.Client) -> None:
    assert_openai_error(client.get("/ghost"), 503, "no_healthy_upstream")
    assert_openai_error(client.get("/nowhere"), 404, "no_route")


def test_irl_blocks_are_not_rewritten_by_envoy_local_replies(client: httpx.Client) -> None:
    blocked = client.post(
        "/guarded", json={"model": "m", "messages": [{"role": "user", "content": "this is forbidden"}]}
    )
    assert blocked.status_code == 503  # the policy's block_status, same as an overflow's
    assert blocked.headers["x-irl-decision"] == "block"
    assert blocked.json()["error"]["code"] == "irl_deny_patterns"
    passed = client.post("/guarded", json={"model": "m", "messages": [{"role": "user", "content": "fine"}]})
    assert passed.status_code == 200
    assert json.loads(passed.text)["method"] == "POST"
