"""Anthropic Messages (``POST /v1/messages``) for the demo upstream."""

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
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                529: "overloaded_error"}


class AnthropicMessages:
    name = "anthropic-messages"

    def read_prompt(self, body: Any) -> Prompt:
        body = require_object(body)
        messages = require_messages(body)
        texts = [text_of(body.get("system"))] + [text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        return build_prompt(body, messages, texts)

    def completion_body(self, completion: Completion) -> dict[str, Any]:
        message = self._message(completion, completion.completion_tokens)
        message["content"] = [{"type": "text", "text": completion.text}]
        message["stop_reason"] = "end_turn"
        return message

    def stream_plan(self, completion: Completion, prompt: Prompt) -> StreamPlan:
        start = self._message(completion, output_tokens=1)
        return StreamPlan(
            head=[
                sse({"type": "message_start", "message": start}, "message_start"),
                sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                    "content_block_start"),
                sse({"type": "ping"}, "ping"),
            ],
            deltas=[
                sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                    "content_block_delta")
                for piece in completion.pieces
            ],
            tail=[
                sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                sse({
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": completion.completion_tokens},
                }, "message_delta"),
                sse({"type": "message_stop"}, "message_stop"),
            ],
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    @staticmethod
    def _message(completion: Completion, output_tokens: int) -> dict[str, Any]:
        return {
            "id": completion.id,
            "type": "message",
            "role": "assistant",
            "model": completion.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": completion.prompt_tokens, "output_tokens": output_tokens},
        }
