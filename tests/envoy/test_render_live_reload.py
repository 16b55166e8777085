"""Rewriting the filesystem xDS files under a running Envoy changes its behaviour live,
with zero failed requests while it happens."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.envoy.fault_upstream import FaultUpstream, fault_upstream
from tests.envoy.render_stack import RenderedEnvoy, rendered_envoy

pytestmark = pytest.mark.envoy

POLICY = """
version: 1
services:
  live:
    upstream: {address: 127.0.0.1, port: FAULT_PORT}
    resilience:
      circuit_breakers: {max_connections: CONNECTIONS}
      retry_budget: {percent: 50, min_concurrency: 5}
    routes:
      - name: slow
        match: {prefix: /slow}
        resilience: {timeouts: {request: TIMEOUT}}
      - name: flaky
        match: {prefix: /flaky}
        resilience: {retries: {attempts: ATTEMPTS, retry_on: [5xx]}}
      - name: steady
        match: {prefix: /steady}
"""
RELOAD_DEADLINE_SECONDS = 10.0


def policy_text(fault: FaultUpstream, *, timeout: str, attempts: int, connections: int) -> str:
    return (
        POLICY.replace("FAULT_PORT", str(fault.port))
        .replace("TIMEOUT", timeout)
        .replace("ATTEMPTS", str(attempts))
        .replace("CONNECTIONS", str(connections))
    )


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultUpstream]:
    with fault_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory, fault: FaultUpstream) -> Iterator[RenderedEnvoy]:
    text = policy_text(fault, timeout="200ms", attempts=0, connections=100)
    with rendered_envoy(tmp_path_factory.mktemp("live"), text, xds=True) as running:
        yield running


class SteadyLoad:
    """Requests in a loop on another thread; every answer that is not 200 is a failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + RELOAD_DEADLINE_SECONDS + 5
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    self.statuses.append(client.get("/steady").status_code)
                except httpx.HTTPError as exc:
                    self.statuses.append(type(exc).__name__)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_until_slow_route_succeeds(client: httpx.Client) -> float:
    started = time.monotonic()
    while time.monotonic() - started < RELOAD_DEADLINE_SECONDS:
        if client.get("/slow", headers={"x-fault-delay": "0.4"}).status_code == 200:
            return time.monotonic() - started
    pytest.fail("Envoy did not apply the new timeout")


def test_timeout_and_retry_changes_apply_live_with_zero_failures(envoy: RenderedEnvoy, fault: FaultUpstream) -> None:
    with httpx.Client(base_url=envoy.url, timeout=5) as client:
        assert client.get("/slow", headers={"x-fault-delay": "0.4"}).status_code == 504
        before = client.get("/flaky", headers={"x-fault-key": "v1", "x-fault-status": "503", "x-fault-times": "1"})
        assert before.status_code == 503  # no retries yet

        with SteadyLoad(envoy.url) as load:
            envoy.policy.write_text(policy_text(fault, timeout="3s", attempts=2, connections=50))
            envoy.reload()
            wait_until_slow_route_succeeds(client)
            while len(load.statuses) < 20:  # keep the load on past the switch
                time.sleep(0.01)

        after = client.get("/flaky", headers={"x-fault-key": "v2", "x-fault-status": "503", "x-fault-times": "1"})
        assert after.status_code == 200
        assert fault.count("v2") == 2
    print(f"{len(load.statuses)} requests during the reload")
    failures = [s for s in load.statuses if s != 200]
    assert not failures, f"{len(failures)} of {len(load.statuses)} requests failed during the reload: {failures[:5]}"
    clusters = json.loads(envoy.admin("/config_dump?resource=dynamic_active_clusters"))["configs"]
    (live,) = [c["cluster"] for c in clusters if c["cluster"]["name"] == "svc_live"]
    assert live["circuit_breakers"]["thresholds"][0]["max_connections"] == 50  # the CDS change landed too
