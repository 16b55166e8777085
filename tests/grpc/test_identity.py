"""The processor takes identity only from what Envoy vouches for (metadata), never client headers."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from irl_extproc.engine import CompiledPolicy
from irl_extproc.policy.load import load_policy
from irl_extproc.server.processor import StreamProcessor
from tests.extproc_messages import request_headers

pytestmark = pytest.mark.grpc

POLICY = """version: 1
identity:
  tenant:
    - {metadata: {namespace: envoy.filters.http.jwt_authn, path: [payload, tenant]}}
services:
  chat:
    upstream: {address: 127.0.0.1, port: 8080}
    routes:
      - name: chat
        match: {prefix: /v1/chat/completions}
        sentinel: {request: [{limits: {max_prompt_chars: 100}}]}
"""


@pytest.fixture
def policy(tmp_path: Path) -> CompiledPolicy:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    return CompiledPolicy.compile(load_policy(path))


async def test_tenant_comes_from_envoy_metadata(policy: CompiledPolicy) -> None:
    message = request_headers(**{"x-tenant-id": "spoofed"})
    payload = struct_pb2.Struct()
    payload.update({"payload": {"tenant": "acme"}})
    message.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].CopyFrom(payload)
    processor = StreamProcessor(policy, "chat/chat")
    await processor.handle(message)
    assert processor.context.tenant == "acme"


async def test_a_client_header_alone_is_no_identity(policy: CompiledPolicy) -> None:
    processor = StreamProcessor(policy, "chat/chat")
    await processor.handle(request_headers(**{"x-tenant-id": "spoofed", "tenant": "spoofed"}))
    assert processor.context.tenant is None
