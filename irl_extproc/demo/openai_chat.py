"""OpenAI Chat Completions (``POST /v1/chat/completions``) for the demo upstream."""

from __future__ import annotations

from typing import Any

from irl_extproc.demo.api import (
    Completion,
    Prompt,
    StreamPlan,
    build_prompt,
    require_messages,
    require_object,
    sse,
    text_of,
)

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error"}


class OpenAIChat:
    name = "openai-chat"

    def read_prompt(self, body: Any) -> Prompt:
        body = require_object(body)
        messages = require_messages(body)
        options = body.get("stream_options")
        texts = [text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return build_prompt(body, messages, texts, stream_usage=include_usage)

    def completion_body(self, completion: Completion) -> dict[str, Any]:
        return {
            "id": completion.id,
            "object": "chat.completion",
            "created": completion.created,
            "model": completion.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": completion.text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "usage": _usage(completion),
            "system_fingerprint": None,
        }

    def stream_plan(self, completion: Completion, prompt: Prompt) -> StreamPlan:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            document: dict[str, Any] = {
                "id": completion.id,
                "object": "chat.completion.chunk",
                "created": completion.created,
                "model": completion.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if prompt.stream_usage:  # every chunk carries usage: null, the last one the counts
                document["usage"] = None
            return sse(document)

        tail = [chunk({}, "stop")]
        if prompt.stream_usage:
            tail.append(sse({
                "id": completion.id,
                "object": "chat.completion.chunk",
                "created": completion.created,
                "model": completion.model,
                "system_fingerprint": None,
                "choices": [],
                "usage": _usage(completion),
            }))
        tail.append(sse(b"[DONE]"))
        return StreamPlan(
            head=[chunk({"role": "assistant", "content": "", "refusal": None})],
            deltas=[chunk({"content": piece}) for piece in completion.pieces],
            tail=tail,
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }
