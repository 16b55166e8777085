"""OpenAI Responses (``POST /v1/responses``) for the demo upstream."""

from __future__ import annotations

import itertools
from typing import Any

from irl_extproc.demo.api import (
    Completion,
    Prompt,
    RequestError,
    StreamPlan,
    build_prompt,
    require_object,
    sse,
    text_of,
)
from irl_extproc.demo.openai_chat import OpenAIChat


def _item_text(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    return text_of(item.get("content")) or text_of(item.get("output"))


class OpenAIResponses:
    name = "openai-responses"

    def read_prompt(self, body: Any) -> Prompt:
        body = require_object(body)
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        if not isinstance(items, list) or not items:
            raise RequestError("'input' must be a string or a non-empty list of input items")
        texts = [text_of(body.get("instructions"))] + [_item_text(item) for item in items]
        return build_prompt(body, items, texts)

    def completion_body(self, completion: Completion) -> dict[str, Any]:
        return _response(completion, "completed", [_message(completion, "completed", completion.text)])

    def stream_plan(self, completion: Completion, prompt: Prompt) -> StreamPlan:
        sequence = itertools.count()

        def event(kind: str, **fields: Any) -> bytes:
            return sse({"type": kind, "sequence_number": next(sequence), **fields}, kind)

        item_id = _item_id(completion)
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        in_progress = _response(completion, "in_progress", [])
        head = [
            event("response.created", response=in_progress),
            event("response.in_progress", response=in_progress),
            event("response.output_item.added", output_index=0, item=_message(completion, "in_progress", None)),
            event("response.content_part.added", **where, part=_text_part("")),
        ]
        deltas = [event("response.output_text.delta", **where, delta=piece, logprobs=[]) for piece in completion.pieces]
        done = _message(completion, "completed", completion.text)
        tail = [
            event("response.output_text.done", **where, text=completion.text, logprobs=[]),
            event("response.content_part.done", **where, part=_text_part(completion.text)),
            event("response.output_item.done", output_index=0, item=done),
            event("response.completed", response=_response(completion, "completed", [done])),
        ]
        return StreamPlan(head, deltas, tail)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return OpenAIChat().error_body(status, message)  # one error shape for both OpenAI APIs


def _item_id(completion: Completion) -> str:
    return "msg_" + completion.id.removeprefix("resp_")


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(completion: Completion, status: str, text: str | None) -> dict[str, Any]:
    return {
        "id": _item_id(completion),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [_text_part(text)],
    }


def _response(completion: Completion, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": completion.id,
        "object": "response",
        "created_at": completion.created,
        "status": status,
        "model": completion.model,
        "output": output,
        "usage": {
            "input_tokens": completion.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        } if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
    }
