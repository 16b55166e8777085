"""`irl serve` as a real process: SIGTERM lets streams in flight finish."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest

from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from irl_extproc.processes import Child, free_ports, grpc_serving, irl_argv
from tests.conftest import POLICIES
from tests.extproc_messages import body, chat, request_headers

pytestmark = pytest.mark.grpc


async def test_sigterm_drains_the_stream_in_flight(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    child = Child(
        "irl",
        irl_argv("serve", "--policy", str(POLICIES / "basic.yaml"), "--port", str(port)),
        log=tmp_path / "irl.log",
    )
    try:
        child.wait_ready(grpc_serving(f"127.0.0.1:{port}"))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = ep_grpc.ExternalProcessorStub(channel).Process(metadata=(("x-irl-route", "chat/chat"),))
            await call.write(request_headers())
            await call.read()
            child.process.send_signal(signal.SIGTERM)
            await call.write(body("request_body", chat("about project bluebird")))
            reply = await call.read()
            await call.done_writing()
            assert reply.immediate_response.status.code == 403  # answered after SIGTERM
        assert child.process.wait(timeout=15) == 0
        assert "shutting down: draining streams" in (tmp_path / "irl.log").read_text()
    finally:
        child.stop()
