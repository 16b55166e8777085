"""With IRL unreachable, each route follows its own on_error: Envoy cannot express that per
listener, so the renderer sets failure_mode_allow per route. The refusal has the error shape."""

from __future__ import annotations

from collections.abc import Iterator

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
