"""A streamed (SSE) response through the real server's processor, over real gRPC, in full duplex:
replies are sent by the processor on its own, and a body that ends with trailers is released
before the trailers reply."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from irl_extproc._gen.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc.engine import CompiledPolicy
from irl_extproc.policy.load import LoadedPolicy, parse_text
from irl_extproc.server.processor import StreamProcessor
from tests.conftest import POLICIES
from tests.extproc_messages import body, chat, headers, request_headers
from tests.grpc.conftest import Server, _serve
from tests.unit.streaming_helpers import client_text, cut, provider_stream

pytestmark = pytest.mark.grpc


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for running in _serve(POLICIES / "streaming.yaml"):
        yield running


def full_duplex_request_headers() -> ep.ProcessingRequest:
    message = request_headers()
    message.protocol_config.request_body_mode = pm.ProcessingMode.BUFFERED
    message.protocol_config.response_body_mode = pm.ProcessingMode.FULL_DUPLEX_STREAMED
    return message


Call = grpc.aio.StreamStreamCall[ep.ProcessingRequest, ep.ProcessingResponse]


async def open_sse_response(server: Server) -> Call:
    call = server.stream("llm/chat")
    await call.write(full_duplex_request_headers())
    await call.read()
    await call.write(body("request_body", chat("hi")))
    await call.read()
    await call.write(headers("response_headers", {":status": "200", "content-type": "text/event-stream"}))
    reply = await call.read()
    assert reply.WhichOneof("response") == "response_headers"
    return call


def response_only_headers(tenant: str) -> ep.ProcessingRequest:
    """The first message of a route that skips the request headers (render/envoy_routes.py)."""
    message = headers("response_headers", {":status": "200", "content-type": "text/event-stream"})
    message.protocol_config.response_body_mode = pm.ProcessingMode.FULL_DUPLEX_STREAMED
    attributes = message.attributes["envoy.filters.http.ext_proc"]
    attributes.update({"request.id": "req-7", "request.path": "/v1/chat/completions"})
    message.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].update({"payload": {"tenant": tenant}})
    return message


async def test_a_response_only_stream_starts_at_the_response_headers(server: Server) -> None:
    call = server.stream("llm/chat")
    await call.write(response_only_headers("acme"))
    assert (await call.read()).WhichOneof("response") == "response_headers"
    stream = provider_stream("openai-chat", cut("mail jane.doe@example.com now", [8, 12, 20]))
    await call.write(body("response_body", stream, end_of_stream=True))
    sent = b""
    while not sent.endswith(b"[DONE]\n\n"):
        sent += (await call.read()).response_body.response.body_mutation.streamed_response.body
    assert client_text("openai-chat", sent) == "mail [EMAIL_1] now"
    await call.done_writing()


async def test_a_response_only_stream_knows_its_request_and_tenant_from_envoy() -> None:
    policy = POLICIES / "streaming.yaml"
    identity = "identity: {tenant: {metadata: {namespace: envoy.filters.http.jwt_authn, path: [payload, tenant]}}}"
    text = policy.read_text().replace("version: 1\n", f"version: 1\n{identity}\n")
    compiled = CompiledPolicy.compile(LoadedPolicy(parse_text(text, "p.yaml"), "p.yaml", "0" * 64))
    processor = StreamProcessor(compiled, "llm/chat")
    reply = await processor.handle(response_only_headers("acme"))
    assert reply is not None
    assert reply.WhichOneof("response") == "response_headers"
    assert (processor.request_id, processor.path, processor.context.tenant) == ("req-7", "/v1/chat/completions", "acme")
    assert processor.stream is not None
    assert processor.stream.full_duplex  # the body mode came with the first message, whichever it is
    await processor.close()


async def test_chunks_are_released_by_the_processor_and_trailers_come_last(server: Server) -> None:
    call = await open_sse_response(server)
    stream = provider_stream("openai-chat", cut("mail jane.doe@example.com now", [8, 12, 20]))
    for start in range(0, len(stream), 50):
        await call.write(body("response_body", stream[start : start + 50], end_of_stream=False))
    await call.write(ep.ProcessingRequest(response_trailers=ep.HttpTrailers()))
    sent, replies = b"", []
    while True:
        reply = await call.read()
        replies.append(reply.WhichOneof("response"))
        if replies[-1] == "response_trailers":
            break
        streamed = reply.response_body.response.body_mutation.streamed_response
        assert not streamed.end_of_stream  # the trailers reply ends this body
        sent += streamed.body
    assert client_text("openai-chat", sent) == "mail [EMAIL_1] now"
    assert set(replies[:-1]) == {"response_body"}
    await call.done_writing()


async def test_a_block_ends_the_body_and_later_chunks_get_no_reply(server: Server) -> None:
    call = await open_sse_response(server)
    stream = provider_stream("openai-chat", ["the canary ", "CANARY-0123", "456789ab", " leaked"])
    await call.write(body("response_body", stream, end_of_stream=False))
    sent = b""
    while True:  # the first text may go out at once (time to first token), then the block ends the body
        reply = await call.read()
        streamed = reply.response_body.response.body_mutation.streamed_response
        sent += streamed.body
        if streamed.end_of_stream:
            break
    assert client_text("openai-chat", sent) == "the canary "
    assert b"CANARY" not in sent
    assert b"irl_deny_patterns" in streamed.body
    assert reply.dynamic_metadata.fields["irl"].struct_value.fields["decision"].string_value == "block"
    await call.write(body("response_body", b"data: more\n\n", end_of_stream=True))
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF  # no reply to what came after the end
