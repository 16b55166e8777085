"""Requests and responses for driving budget invariants the way the processor does."""

from __future__ import annotations

from typing import Any

from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.conversation import Conversation
from irl_extproc.invariants.base import CheckContext

ONE_ROUTE_POLICY = """\
version: 1
services:
  chat:
    upstream: {address: 127.0.0.1, port: 18080}
    routes:
      - match: {prefix: /v1/chat/completions}
        sentinel:
          format: openai-chat
          request:
"""


def one_route_policy(entries: str) -> str:
    """A policy whose one route checks requests with ``entries`` (list items, indented 12, from line 10)."""
    return ONE_ROUTE_POLICY + entries


def chat(text: str = "x" * 400, model: str = "gpt-4o-mini", **extra: Any) -> Conversation:
    """400 characters: an estimated 100 prompt tokens."""
    return OpenAIChat().decode_request({"model": model, "messages": [{"role": "user", "content": text}], **extra})


def completion(text: str = "ok", usage: dict[str, int] | None = None) -> Conversation:
    body: dict[str, Any] = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    if usage is not None:
        body["usage"] = usage
    return OpenAIChat().decode_response(body)


def usage(prompt_tokens: int, completion_tokens: int) -> Conversation:
    return completion(usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})


def context(tenant: str | None = "acme", **identity: str) -> CheckContext:
    return CheckContext(route_id="chat/completions", tenant=tenant, identity=identity)
