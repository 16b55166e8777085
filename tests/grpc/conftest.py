"""A real grpc.aio ext_proc server on an ephemeral port, and a real gRPC client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from irl_extproc.server.app import start_server
from irl_extproc.server.policy_holder import PolicyHolder
from tests.conftest import POLICIES


@dataclass
class Server:
    port: int
    holder: PolicyHolder
    channel: grpc.aio.Channel

    def stream(self, route: str | None) -> grpc.aio.StreamStreamCall[ep.ProcessingRequest, ep.ProcessingResponse]:
        stub = ep_grpc.ExternalProcessorStub(self.channel)
        metadata = (("x-irl-route", route),) if route else ()
        return stub.Process(metadata=metadata)


async def _serve(policy: Path) -> AsyncIterator[Server]:
    holder = PolicyHolder(policy)
    server, _, port = await start_server(holder, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Server(port, holder, channel)
    finally:
        await channel.close()
        await server.stop(0)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for s in _serve(POLICIES / "basic.yaml"):
        yield s
