"""The grpc.aio ext_proc server: the stream loop, health, reload and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from irl_extproc.contract import ROUTE_METADATA_KEY
from irl_extproc.server.policy_holder import PolicyHolder
from irl_extproc.server.processor import StreamProcessor

log = logging.getLogger("irl.server")

MAX_MESSAGE_BYTES = 64 << 20  # bodies travel in one gRPC message in BUFFERED mode
SHUTDOWN_GRACE_SECONDS = 10.0
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


def route_id_from(context: grpc.aio.ServicerContext[ep.ProcessingRequest, ep.ProcessingResponse]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == ROUTE_METADATA_KEY:
            return value if isinstance(value, str) else value.decode()
    return None


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(self, holder: PolicyHolder) -> None:
        self.holder = holder

    async def Process(
        self,
        request_iterator: AsyncIterator[ep.ProcessingRequest],
        context: grpc.aio.ServicerContext[ep.ProcessingRequest, ep.ProcessingResponse],
    ) -> None:
        # read()/write() rather than an async generator: the processor may also send on its
        # own (a streaming hold-back window released by time), through the same context.
        processor = StreamProcessor(self.holder.current, route_id_from(context), send=context.write)
        try:
            while (request := await context.read()) != grpc.aio.EOF:
                response = await processor.handle(request)
                if response is not None:
                    await context.write(response)
        finally:
            await processor.close()


def server_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]


async def start_server(holder: PolicyHolder, address: str) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    server = grpc.aio.server(options=server_options())
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(holder), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    for service in ("", EXT_PROC_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port


async def serve(policy_path: Path, address: str, *, ready_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT; then stop taking streams and let those in flight finish."""
    holder = PolicyHolder(policy_path)
    server, health_servicer, port = await start_server(holder, address)
    log.info("irl ext_proc listening on %s (port %d), policy %s", address, port, holder.current.version[:12])
    if ready_file is not None:
        ready_file.write_text(str(port))  # noqa: ASYNC240 - once, before serving
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(holder.watch())
    await stop.wait()
    log.info("shutting down: draining streams for up to %.0fs", SHUTDOWN_GRACE_SECONDS)
    await health_servicer.enter_graceful_shutdown()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await server.stop(SHUTDOWN_GRACE_SECONDS)
