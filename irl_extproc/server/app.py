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
from irl_extproc.server.policy_holder import PolicyHolder, freeze_heap
from irl_extproc.server.processor import StreamProcessor
from irl_extproc.telemetry.setup import NO_TELEMETRY, Telemetry, TelemetryOptions
from irl_extproc.telemetry.tracing import Metadata

log = logging.getLogger("irl.server")

MAX_MESSAGE_BYTES = 64 << 20  # bodies travel in one gRPC message in BUFFERED mode
SHUTDOWN_GRACE_SECONDS = 10.0
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


def route_id_from(metadata: Metadata | None) -> str | None:
    """The route Envoy named in the ext_proc stream's gRPC metadata (``x-irl-route``)."""
    for key, value in metadata or ():
        if key == ROUTE_METADATA_KEY:
            return value if isinstance(value, str) else value.decode()
    return None


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(self, holder: PolicyHolder, telemetry: Telemetry = NO_TELEMETRY) -> None:
        self.holder = holder
        self.telemetry = telemetry

    async def Process(
        self,
        request_iterator: AsyncIterator[ep.ProcessingRequest],
        context: grpc.aio.ServicerContext[ep.ProcessingRequest, ep.ProcessingResponse],
    ) -> None:
        # read()/write() rather than an async generator: the processor may also send on its
        # own (a streaming hold-back window released by time), through the same context.
        metadata = context.invocation_metadata()  # one read for the route and the trace context
        policy, route_id = self.holder.current, route_id_from(metadata)
        route = policy.routes.get(route_id or "")
        tel = self.telemetry.stream(
            metadata,  # Envoy's traceparent: IRL's spans join Envoy's trace
            service=route.route.service if route else "<none>",
            route=route_id or "<none>",
            policy_version=policy.version,
            mode=route.sentinel.mode if route else "enforce",
        )
        processor = StreamProcessor(policy, route_id, send=context.write, telemetry=tel)
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


async def start_server(
    holder: PolicyHolder, address: str, telemetry: Telemetry = NO_TELEMETRY
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    server = grpc.aio.server(options=server_options())
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(holder, telemetry), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    for service in ("", EXT_PROC_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port


async def serve(
    policy_path: Path, address: str, *, ready_file: Path | None = None, telemetry: TelemetryOptions | None = None
) -> None:
    """Run until SIGTERM/SIGINT; then stop taking streams and let those in flight finish."""
    holder = PolicyHolder(policy_path)
    hub = Telemetry(telemetry)
    await hub.start()
    server, health_servicer, port = await start_server(holder, address, hub)
    log.info("irl ext_proc listening on %s (port %d), policy %s", address, port, holder.current.version[:12])
    if ready_file is not None:
        ready_file.write_text(str(port))  # noqa: ASYNC240 - once, before serving
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    freeze_heap()  # what is built by now (policy, models, telemetry) lives as long as the process
    watcher = asyncio.create_task(holder.watch(on_reload=freeze_heap))
    await stop.wait()
    log.info("shutting down: draining streams for up to %.0fs", SHUTDOWN_GRACE_SECONDS)
    await health_servicer.enter_graceful_shutdown()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await server.stop(SHUTDOWN_GRACE_SECONDS)
    await hub.aclose()  # flush spans, metrics and the audit trail after the last stream
