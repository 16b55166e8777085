"""ProcessingResponse builders. User-facing errors are JSON built by a serializer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from irl_extproc._gen.envoy.config.core.v3 import base_pb2
from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc._gen.envoy.type.v3 import http_status_pb2
from irl_extproc.codecs.base import encode_json

Headers = Mapping[str, str]
PHASE_FIELDS = {
    "request_headers": "request_headers",
    "response_headers": "response_headers",
    "request_body": "request_body",
    "response_body": "response_body",
    "request_trailers": "request_trailers",
    "response_trailers": "response_trailers",
}
_TRAILER_PHASES = {"request_trailers", "response_trailers"}


def header_mutation(set_headers: Headers | None = None, remove: tuple[str, ...] = ()) -> ep.HeaderMutation:
    mutation = ep.HeaderMutation(remove_headers=list(remove))
    for key, value in (set_headers or {}).items():
        mutation.set_headers.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    return mutation


def continue_response(phase: str, common: ep.CommonResponse | None = None) -> ep.ProcessingResponse:
    """Let the phase continue, optionally with header or body mutations."""
    response = ep.ProcessingResponse()
    target = getattr(response, PHASE_FIELDS[phase])
    if phase in _TRAILER_PHASES:
        target.SetInParent()
    elif common is not None:
        target.response.CopyFrom(common)
    else:
        target.SetInParent()
    return response


def mutate(
    phase: str,
    *,
    set_headers: Headers | None = None,
    remove_headers: tuple[str, ...] = (),
    body: bytes | None = None,
) -> ep.ProcessingResponse:
    common = ep.CommonResponse()
    if set_headers or remove_headers:
        common.header_mutation.CopyFrom(header_mutation(set_headers, remove_headers))
    if body is not None:
        common.body_mutation.body = body
    return continue_response(phase, common)


def streamed_body(phase: str, body: bytes, *, end_of_stream: bool) -> ep.ProcessingResponse:
    """A FULL_DUPLEX_STREAMED body reply: the bytes to send on, in place of what came in."""
    common = ep.CommonResponse()
    common.body_mutation.streamed_response.body = body
    common.body_mutation.streamed_response.end_of_stream = end_of_stream
    return continue_response(phase, common)


def immediate(status: int, body: Any, *, headers: Headers | None = None, details: str = "irl") -> ep.ProcessingResponse:
    """Answer the client now with a JSON body (never formatted by hand)."""
    all_headers = {"content-type": "application/json", **(headers or {})}
    response = ep.ProcessingResponse()
    response.immediate_response.status.code = http_status_pb2.StatusCode.Value(_status_name(status))  # type: ignore[assignment]
    response.immediate_response.headers.CopyFrom(header_mutation(all_headers))
    response.immediate_response.body = encode_json(body)
    response.immediate_response.details = details
    return response


def _status_name(code: int) -> str:
    for name, number in http_status_pb2.StatusCode.items():
        if number == code:
            return name
    raise ValueError(f"HTTP status {code} is not one Envoy's StatusCode enum knows")


def attach_metadata(response: ep.ProcessingResponse, namespace: str, values: Mapping[str, str]) -> None:
    """Dynamic metadata for Envoy's access logs (the namespace must be in receiving_namespaces)."""
    # Set string fields directly: Struct.update() walks Python types and is ~5x slower.
    fields = response.dynamic_metadata.fields[namespace].struct_value.fields
    for key, value in values.items():
        fields[key].string_value = value


def mode_override(response: ep.ProcessingResponse, **modes: int) -> None:
    for field, value in modes.items():
        setattr(response.mode_override, field, value)
