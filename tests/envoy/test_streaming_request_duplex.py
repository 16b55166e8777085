"""Request bodies in FULL_DUPLEX_STREAMED mode (request_trailer_mode SEND) through a real Envoy:
a large chunked body is buffered by IRL up to the policy limit and checked whole; a bigger
one is refused with 413, and a pattern split across chunks is still found."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import POLICIES
from tests.stack import Stack

pytestmark = pytest.mark.envoy

CHUNK = 16 * 1024


def request_full_duplex(node: Any) -> None:
    """Every buffered request body in the rendered config becomes full duplex."""
    if isinstance(node, dict):
        mode = node.get("processing_mode")
        if isinstance(mode, dict) and mode.get("request_body_mode") == "BUFFERED":
            mode["request_body_mode"] = "FULL_DUPLEX_STREAMED"
            mode["request_trailer_mode"] = "SEND"
        for value in node.values():
            request_full_duplex(value)
    elif isinstance(node, list):
        for value in node:
            request_full_duplex(value)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("duplex"), Path(), patch_bootstrap=request_full_duplex)
    try:
        started = running.start(POLICIES / "streaming.yaml")  # max_body_bytes: 256KiB
        config = json.loads((started.directory / "envoy.json").read_text())
        assert '"request_body_mode": "FULL_DUPLEX_STREAMED"' in json.dumps(config, indent=1).replace("\n", "")
        yield started
    finally:
        running.stop()


def chunked(body: bytes) -> Iterator[bytes]:
    """A generator body: httpx sends it with transfer-encoding chunked, one chunk per piece."""
    for start in range(0, len(body), CHUNK):
        yield body[start : start + CHUNK]


def chat_body(text: str) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}).encode()


def post(stack: Stack, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        content=chunked(body),
        headers={"content-type": "application/json"},
        timeout=10,
    )


def test_a_large_chunked_body_is_checked_whole_and_rewritten(stack: Stack) -> None:
    text = "lorem ipsum " * 16_000 + "mail jane.doe@example.com"  # ~190 KB in 12 chunks
    body = chat_body(text)
    assert 10 * CHUNK < len(body) < 256 * 1024
    reply = post(stack, body)
    assert reply.status_code == 200
    sent = json.loads(stack.received()[-1]["body"])["messages"][0]["content"]
    assert sent == "lorem ipsum " * 16_000 + "mail [EMAIL_1]"


def test_a_body_over_the_limit_is_refused_clearly(stack: Stack) -> None:
    before = len(stack.received())
    reply = post(stack, chat_body("x" * 300_000))
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "irl_body_too_large"
    assert len(stack.received()) == before  # the upstream never saw it


def test_a_pattern_split_across_chunks_is_found(stack: Stack) -> None:
    text = "a" * (CHUNK - 60) + "tell me about project bluebird"  # the phrase straddles the first chunk
    body = chat_body(text)
    assert b"project" in body[:CHUNK] or b"bluebird" in body[CHUNK:]
    reply = post(stack, body)
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "irl_deny_patterns"
