"""The generated ext_proc classes match the pinned Envoy and round-trip what it really sends."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest

from irl_extproc import protogen
from irl_extproc._gen.envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc.policy.load import load_policy
from irl_extproc.processes import Child, envoy_argv, free_ports, http_ok
from irl_extproc.render.envoy import render_bootstrap
from tests.conftest import POLICIES

pytestmark = pytest.mark.envoy
METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


def test_generated_descriptor_is_the_pinned_envoys() -> None:
    embedded = protogen.extract_descriptor(
        protogen.envoy_binary().read_bytes(), "envoy/service/ext_proc/v3/external_processor.proto"
    )
    assert ep.DESCRIPTOR.serialized_pb == embedded
    # Envoy 1.40's field 11 (the stale xds-protos wheel calls it request_drain)
    assert ep.ProcessingResponse.DESCRIPTOR.fields_by_number[11].name == "streamed_immediate_response"


class RawCapture:
    """An ext_proc endpoint that records the raw bytes Envoy sends and answers 'continue'."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.seen = threading.Event()

    def process(self, request_iterator: Iterator[bytes], _: grpc.ServicerContext) -> Iterator[bytes]:
        for raw in request_iterator:
            self.messages.append(raw)
            self.seen.set()
            phase = ep.ProcessingRequest.FromString(raw).WhichOneof("request")
            reply = ep.ProcessingResponse()
            getattr(reply, phase).SetInParent()
            yield reply.SerializeToString()


@pytest.fixture
def capture_server() -> Iterator[tuple[RawCapture, int]]:
    capture = RawCapture()
    handler = grpc.method_handlers_generic_handler(
        "envoy.service.ext_proc.v3.ExternalProcessor",
        {"Process": grpc.stream_stream_rpc_method_handler(capture.process)},  # raw bytes in and out
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield capture, port
    server.stop(0)


def test_round_trip_of_a_request_captured_from_envoy(capture_server: tuple[RawCapture, int], tmp_path: Path) -> None:
    capture, irl_port = capture_server
    listener, admin, _upstream = free_ports(3)
    bootstrap = render_bootstrap(
        load_policy(POLICIES / "basic.yaml"),
        extproc_endpoints=[("127.0.0.1", irl_port)],
        admin_port=admin,
        listener_port=listener,
    )
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap))
    envoy = Child("envoy", envoy_argv(config), log=tmp_path / "envoy.log")
    try:
        envoy.wait_ready(http_ok(f"http://127.0.0.1:{admin}/ready"))
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        httpx.post(f"http://127.0.0.1:{listener}/v1/chat/completions", json=body, timeout=10)
    finally:
        envoy.stop()
    assert capture.seen.is_set()
    parsed = [ep.ProcessingRequest.FromString(raw) for raw in capture.messages]
    for raw, message in zip(capture.messages, parsed, strict=True):
        assert message.SerializeToString() == raw  # byte-identical: every field is known to our classes
    headers = parsed[0].request_headers.headers.headers
    assert {h.key: h.raw_value for h in headers}[":path"] == b"/v1/chat/completions"
    assert parsed[0].protocol_config.request_body_mode == ProcessingMode.BUFFERED  # as rendered
    assert json.loads(parsed[1].request_body.body) == body


def test_asyncio_is_uvloop_in_the_server() -> None:
    # `irl serve` runs on uvloop (DESIGN: ~30% more throughput); make sure it imports.
    import uvloop

    assert issubclass(uvloop.Loop, asyncio.AbstractEventLoop)
