"""Shared by the streaming unit tests: a compiled route, provider streams from the demo
upstream's own (independent) event writers, and a ResponseStream driven like Envoy does."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any

from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc.decision import Decision
from irl_extproc.demo.anthropic_messages import AnthropicMessages
from irl_extproc.demo.api import Completion, Prompt
from irl_extproc.demo.openai_chat import OpenAIChat
from irl_extproc.demo.openai_responses import OpenAIResponses
from irl_extproc.engine import CompiledPolicy, CompiledRoute
from irl_extproc.invariants.base import CheckContext
from irl_extproc.policy.load import LoadedPolicy, parse_text
from irl_extproc.streaming.registry import STREAM_CODECS
from irl_extproc.streaming.stream import ResponseStream, StreamHooks

API_FORMATS = ("openai-chat", "openai-responses", "anthropic-messages")
_DEMO = {"openai-chat": OpenAIChat(), "openai-responses": OpenAIResponses(), "anthropic-messages": AnthropicMessages()}

RESPONSE_INVARIANTS = """
            - pii: {types: [email, credit_card, us_ssn, iban], action: redact}
            - secrets: {action: redact}
            - deny_patterns: {patterns: ['CANARY-[0-9a-f]{12}'], action: block}
"""


def compile_route(sentinel_yaml: str = "", response: str = RESPONSE_INVARIANTS, request: str = "") -> CompiledRoute:
    """The route ``svc/r`` of a one-route policy; ``sentinel_yaml`` adds settings (indented 10)."""
    text = f"""
version: 1
services:
  svc:
    upstream: {{address: 127.0.0.1, port: 1}}
    routes:
      - name: r
        match: {{prefix: /}}
        sentinel:
          format: auto
{sentinel_yaml}
          response:
{response}
"""
    if request:
        text += f"          request:\n{request}\n"
    loaded = LoadedPolicy(parse_text(text, "test.yaml"), "test.yaml", "0" * 64)
    return CompiledPolicy.compile(loaded).routes["svc/r"]


def cut(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(text)}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def provider_stream(api_format: str, pieces: list[str], *, usage: bool = True) -> bytes:
    """The SSE body a provider sends for a reply made of ``pieces`` (the demo upstream's writers)."""
    text = "".join(pieces)
    completion = Completion("resp_1", 0, "m", text, pieces, prompt_tokens=7, completion_tokens=11)
    plan = _DEMO[api_format].stream_plan(completion, Prompt("m", "", 7, stream=True, stream_usage=usage))
    return b"".join(plan.head + plan.deltas + plan.tail)


def random_chunks(data: bytes, rng: random.Random, largest: int = 64) -> list[bytes]:
    chunks, position = [], 0
    while position < len(data):
        size = rng.randint(1, largest)
        chunks.append(data[position : position + size])
        position += size
    return chunks


@dataclass
class Driven:
    """What a driven stream sent (as Envoy would forward it) and reported."""

    replies: list[ep.ProcessingResponse] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    faults: list[tuple[str, bool]] = field(default_factory=list)

    async def send(self, reply: ep.ProcessingResponse) -> None:
        self.replies.append(reply)

    def hooks(self) -> StreamHooks:
        return StreamHooks(
            send=self.send,
            record=self.decisions.append,
            fault=lambda code, passed: self.faults.append((code, passed)),
            decorate=lambda reply: reply,
        )

    @property
    def body(self) -> bytes:
        return b"".join(r.response_body.response.body_mutation.streamed_response.body for r in self.replies)

    @property
    def ended(self) -> bool:
        ends = [r.response_body.response.body_mutation.streamed_response.end_of_stream for r in self.replies]
        return bool(ends) and ends[-1] and not any(ends[:-1])

    @property
    def rules(self) -> set[str]:
        return {f.rule for d in self.decisions for f in d.findings}


def open_stream(
    route: CompiledRoute, api_format: str, context: CheckContext | None = None
) -> tuple[ResponseStream, Driven]:
    driven = Driven()
    stream = ResponseStream(route, STREAM_CODECS[api_format](), context or CheckContext("svc/r"), driven.hooks())
    return stream, driven


async def drive(
    route: CompiledRoute, api_format: str, chunks: list[bytes], context: CheckContext | None = None
) -> tuple[ResponseStream, Driven]:
    """Feed ``chunks`` as Envoy's body messages, the last one with end_of_stream."""
    stream, driven = open_stream(route, api_format, context)
    for chunk in chunks:
        await stream.feed(chunk, end_of_stream=False)
    await stream.feed(b"", end_of_stream=True)
    return stream, driven


def events(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) per event, read the plain way a client does (LF-framed providers)."""
    out = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((name, "\n".join(data)))
    return out


def client_text(api_format: str, body: bytes) -> str:
    """The assistant text a client assembles from the deltas it received."""
    text = []
    for name, data in events(body):
        if data == "[DONE]":
            continue
        document: Any = json.loads(data)
        if api_format == "openai-chat":
            text += [c["delta"].get("content") or "" for c in document.get("choices", [])]
        elif api_format == "anthropic-messages" and name == "content_block_delta":
            text.append(document["delta"].get("text", ""))
        elif api_format == "openai-responses" and name == "response.output_text.delta":
            text.append(document["delta"])
    return "".join(text)
