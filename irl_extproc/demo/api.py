"""What each provider API module of the demo upstream provides, and the parts they share.

The demo reads requests with its own small extractors on purpose, not with IRL's codecs:
it stands in for an independent provider, so a codec bug cannot hide itself in a test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


class RequestError(ValueError):
    """A request the provider would refuse with 400; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Prompt:
    model: str
    last_user_text: str
    prompt_tokens: int
    stream: bool
    stream_usage: bool = False  # OpenAI chat: stream_options.include_usage


@dataclass(frozen=True, slots=True)
class Completion:
    id: str
    created: int
    model: str
    text: str
    pieces: list[str]  # the streamed deltas, joined they make ``text``
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """SSE events already framed: written as head, then deltas (paced), then tail."""

    head: list[bytes]
    deltas: list[bytes]
    tail: list[bytes]


class DemoApi(Protocol):
    name: str

    def read_prompt(self, body: Any) -> Prompt: ...

    def completion_body(self, completion: Completion) -> dict[str, Any]: ...

    def stream_plan(self, completion: Completion, prompt: Prompt) -> StreamPlan: ...

    def error_body(self, status: int, message: str) -> dict[str, Any]: ...


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: one token per started 4 characters."""
    return (len(text) + 3) // 4


def text_of(content: Any) -> str:
    """The text of a string, or of a list of text parts (OpenAI parts, Anthropic blocks,
    Responses ``input_text``; tool results nest theirs under ``content``)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, dict):
            texts.append(part["text"] if isinstance(part.get("text"), str) else text_of(part.get("content")))
    return "".join(texts)


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


def require_messages(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    return messages


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' must be a non-empty string")
    return model


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps would build one per call


def build_prompt(body: dict[str, Any], turns: list[Any], texts: list[str], *, stream_usage: bool = False) -> Prompt:
    """The prompt of a request whose conversation ``turns`` hold ``texts`` (system text included)."""
    return Prompt(
        model=model_of(body),
        last_user_text=last_user_text(turns),
        prompt_tokens=sum(count_tokens(text) for text in texts),
        stream=body.get("stream") is True,
        stream_usage=stream_usage,
    )


def dumps(document: Any) -> bytes:
    return _ENCODER.encode(document).encode()


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event as the providers frame it: optional ``event:`` line, one ``data:`` line."""
    payload = data if isinstance(data, bytes) else dumps(data)
    return (b"event: %b\ndata: %b\n\n" % (event.encode(), payload)) if event else b"data: %b\n\n" % payload
