"""Builders for the ProcessingRequests Envoy sends, for tests that play Envoy's part."""

from __future__ import annotations

import json
from typing import Any

from irl_extproc._gen.envoy.config.core.v3 import base_pb2
from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep


def headers(phase: str, values: dict[str, str], *, end_of_stream: bool = False) -> ep.ProcessingRequest:
    http = ep.HttpHeaders(end_of_stream=end_of_stream)
    for key, value in values.items():
        http.headers.headers.append(base_pb2.HeaderValue(key=key, raw_value=value.encode()))
    return ep.ProcessingRequest(**{phase: http})


def request_headers(path: str = "/v1/chat/completions", **extra: str) -> ep.ProcessingRequest:
    values = {":method": "POST", ":path": path, "content-type": "application/json", **extra}
    return headers("request_headers", values)


def body(phase: str, data: bytes | Any, *, end_of_stream: bool = True) -> ep.ProcessingRequest:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return ep.ProcessingRequest(**{phase: ep.HttpBody(body=raw, end_of_stream=end_of_stream)})


def chat(text: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
