"""With IRL unreachable or too slow, each route follows its own on_error: the renderer sets
failure_mode_allow per route, and a fail-closed refusal has the error shape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import httpx
import pytest

from tests.envoy.fault_upstream import FaultUpstream, fault_upstream
from tests.envoy.render_stack import RenderedEnvoy, rendered_envoy

pytestmark = pytest.mark.envoy

POLICY = """
version: 1
defaults:
  sentinel: {format: openai-chat, request: [{deny_patterns: {patterns: [forbidden], action: block}}]}
services:
  chat:
    upstream: {address: 127.0.0.1, port: FAULT_PORT}
    routes:
      - {name: open, match: {prefix: /open}, sentinel: {on_error: fail_open}}
      - {name: closed, match: {prefix: /closed}, sentinel: {on_error: fail_closed}}
      - {name: anthropic, match: {prefix: /v1/messages}, sentinel: {on_error: fail_closed}}
"""
SLOW_SECONDS = 1.5
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultUpstream]:
    with fault_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory, fault: FaultUpstream) -> Iterator[RenderedEnvoy]:
    # No IRL server is started: the ext_proc cluster points at a closed port.
    with rendered_envoy(tmp_path_factory.mktemp("down"), POLICY.replace("FAULT_PORT", str(fault.port))) as running:
        yield running


@pytest.fixture(scope="module")
def slow_irl() -> Iterator[int]:
    """An ext_proc server that never answers within Envoy's message_timeout."""

    def process(requests: Iterator[object], context: grpc.ServicerContext) -> Iterator[object]:
        next(requests, None)
        time.sleep(SLOW_SECONDS)
        return iter(())

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler: grpc.RpcMethodHandler[object, object] = grpc.stream_stream_rpc_method_handler(process)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("envoy.service.ext_proc.v3.ExternalProcessor", {"Process": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


@pytest.fixture(scope="module")
def envoy_with_slow_irl(
    tmp_path_factory: pytest.TempPathFactory, fault: FaultUpstream, slow_irl: int
) -> Iterator[RenderedEnvoy]:
    text = POLICY.replace("FAULT_PORT", str(fault.port)).replace(
        "sentinel: {format", "sentinel: {message_timeout: 300ms, format"
    )
    with rendered_envoy(tmp_path_factory.mktemp("slow"), text, extproc_port=slow_irl) as running:
        yield running


def test_fail_open_route_passes_and_fail_closed_route_refuses(envoy: RenderedEnvoy, fault: FaultUpstream) -> None:
    with httpx.Client(base_url=envoy.url, timeout=5) as client:
        opened = client.post("/open", json=BODY, headers={"x-fault-key": "open"})
        assert opened.status_code == 200
        assert fault.count("open") == 1
        closed = client.post("/closed", json=BODY, headers={"x-fault-key": "closed"})
        anthropic = client.post("/v1/messages", json=BODY, headers={"x-fault-key": "closed"})
    assert fault.count("closed") == 0
    assert closed.status_code == 500
    assert closed.headers["x-irl-rule"] == "irl_unavailable"
    assert closed.json()["error"]["code"] == "irl_unavailable"
    assert anthropic.status_code == 500
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "api_error"


def test_a_slow_irl_times_out_per_message_and_each_route_follows_its_on_error(
    envoy_with_slow_irl: RenderedEnvoy, fault: FaultUpstream
) -> None:
    with httpx.Client(base_url=envoy_with_slow_irl.url, timeout=5) as client:
        opened = client.post("/open", json=BODY, headers={"x-fault-key": "slow-open"})
        closed = client.post("/closed", json=BODY, headers={"x-fault-key": "slow-closed"})
    assert opened.status_code == 200
    assert opened.elapsed.total_seconds() < SLOW_SECONDS
    assert closed.status_code == 504
    assert closed.json()["error"]["code"] == "irl_unavailable"
    assert closed.elapsed.total_seconds() < SLOW_SECONDS
    assert fault.count("slow-open") == 1
    assert fault.count("slow-closed") == 0
