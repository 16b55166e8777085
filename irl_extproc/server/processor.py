"""One processor per ext_proc stream: typed state and one method per phase.

The gRPC loop (``app.py``) only feeds ``ProcessingRequest``s in and sends the returned
responses back. Each phase answers with exactly one response, except body chunks in
FULL_DUPLEX_STREAMED mode, which are held until the end of the body (``None``).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from irl_extproc._gen.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from irl_extproc._gen.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from irl_extproc.budgets.identity import resolve_identity
from irl_extproc.codecs.base import Codec, CodecError, encode_json, parse_json
from irl_extproc.codecs.registry import CODECS, codec_for, resolve_format
from irl_extproc.contract import METADATA_NAMESPACE
from irl_extproc.conversation import Conversation, Direction
from irl_extproc.decision import Decision
from irl_extproc.engine import (
    CompiledInvariant,
    CompiledPolicy,
    CompiledRoute,
    decode,
    evaluate_live,
    prepare,
    redact,
    settle,
)
from irl_extproc.invariants.base import CheckContext
from irl_extproc.invariants.budget import charges
from irl_extproc.masking import restore_conversation
from irl_extproc.server import responses
from irl_extproc.server.bodies import DECODABLE, BodyBuffer, BodyTooLarge, UndecodableBody, decode_content
from irl_extproc.streaming.registry import STREAM_CODECS
from irl_extproc.streaming.stream import ResponseStream, StreamHooks
from irl_extproc.telemetry.setup import detached_stream
from irl_extproc.telemetry.stream import StreamTelemetry

log = logging.getLogger("irl.processor")

FULL_DUPLEX = pm.ProcessingMode.FULL_DUPLEX_STREAMED
_DEFAULT_CODEC = CODECS["openai-chat"]


@dataclass(slots=True)
class Side:
    """What one direction of the HTTP exchange has shown so far."""

    direction: Direction
    body_mode: int = pm.ProcessingMode.BUFFERED
    headers: dict[str, str] = field(default_factory=dict)
    buffer: BodyBuffer | None = None
    decision: Decision | None = None
    skipped: str | None = None  # why the body was not inspected (recorded, never silent)

    @property
    def encoding(self) -> str:
        return self.headers.get("content-encoding", "")


@dataclass(slots=True)
class Outcome:
    """What the stream decided, for metadata, telemetry and the audit trail."""

    verdict: str = "allow"
    rules: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # e.g. unchecked:<reason> under fail_open
    error: str | None = None


class Reject(Exception):
    """Bad input: answered with a clear error, or passed flagged under fail_open."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _headers(http_headers: ep.HttpHeaders) -> dict[str, str]:
    return {
        h.key.lower(): (h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value)
        for h in http_headers.headers.headers
    }


def _attribute(message: ep.ProcessingRequest, name: str) -> str:
    """An ext_proc attribute Envoy sent with this message ("" when absent)."""
    for struct in message.attributes.values():
        if name in struct.fields:
            return struct.fields[name].string_value
    return ""


Send = Callable[[ep.ProcessingResponse], Awaitable[None]]


async def _no_send(_: ep.ProcessingResponse) -> None:
    raise RuntimeError("this processor was built without a send channel")


class StreamProcessor:
    def __init__(
        self,
        policy: CompiledPolicy,
        route_id: str | None,
        send: Send = _no_send,
        telemetry: StreamTelemetry | None = None,
    ) -> None:
        self.policy = policy  # a snapshot: a reload never changes a stream half-way
        self.send = send  # for replies not triggered by a request (e.g. a timed stream release)
        self.route: CompiledRoute | None = policy.routes.get(route_id or "")
        self.route_id = route_id or "<none>"
        self.context = CheckContext(route_id=self.route_id)
        self.request = Side("request")
        self.response = Side("response")
        self.codec: Codec | None = None
        self.path = ""
        self.request_id = ""
        self.status = 0
        self.outcome = Outcome()
        self.stream: ResponseStream | None = None  # a streamed (SSE) response under inspection
        self.tel = telemetry or detached_stream(self.route_id)  # spans, metrics and audit of this stream
        self._durable: list[asyncio.Future[Any]] = []  # audit records to be on disk before answering
        self._charged = False  # a budget charge already went into a decision record

    # -- the loop's entry point -------------------------------------------------------------

    async def handle(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse | None:
        phase = message.WhichOneof("request")
        if phase is None or phase not in responses.PHASE_FIELDS:
            return None  # observability-only or unknown message types need no answer
        if message.HasField("protocol_config"):  # on the first message, whichever phase that is
            self.request.body_mode = message.protocol_config.request_body_mode
            self.response.body_mode = message.protocol_config.response_body_mode
        with self.tel.phase(phase):
            try:
                handler = getattr(self, f"on_{phase}")
                result: ep.ProcessingResponse | None = await handler(getattr(message, phase), message)
            except Reject as reject:
                result = self._reject(phase, reject)
            except Exception as exc:  # noqa: BLE001 - any bug becomes the policy's fail behaviour
                result = self._internal_error(phase, exc)
        if self._durable:  # --audit-wait: the decision's record is on disk before Envoy acts on it
            durable, self._durable = self._durable, []
            await asyncio.gather(*durable)
        return result

    async def close(self) -> None:
        """The stream ended (normally, or Envoy closed it early): settle and release per-stream state."""
        response = None
        if self.stream is not None:
            self.stream.close()
            response = self.stream.conversation  # what the client got, with the stream's usage
        if self.route is not None and self.route.request:
            try:
                await settle(self.route.request, response, self.context, completed=200 <= self.status < 300)
            except Exception as exc:  # noqa: BLE001 - a failed charge must not break the stream's end
                log.error("route=%s settle failed: %s", self.route_id, type(exc).__name__)
            if (spent := charges(self.context)) and not self._charged:
                with self.tel.phase("settle"):  # a streamed exchange is charged once it has ended
                    self._audit(self.tel.decide(None, conversation=response, status=self.status, charges=spent))
        self.tel.close(self.outcome.error if self.outcome.error == "irl_internal_error" else None)
        self.context.state.clear()

    # -- phases -----------------------------------------------------------------------------

    async def on_request_headers(self, headers: ep.HttpHeaders, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        self.request.headers = _headers(headers)
        self._identify(message, self.request.headers.get(":path", ""), self.request.headers.get("x-request-id", ""))
        route = self.route
        if route is None:
            raise Reject(500, "irl_unknown_route", f"IRL has no policy for route {self.route_id!r}")
        remove: tuple[str, ...] = ()
        if route.sentinel.needs_response:
            remove = ("accept-encoding",)  # ask upstream for identity so responses stay inspectable
        if route.sentinel.needs_request_body:
            self._check_request_headers(route, end_of_stream=headers.end_of_stream)
        return responses.mutate("request_headers", remove_headers=remove)

    def _identify(self, message: ep.ProcessingRequest, path: str, request_id: str) -> None:
        self.path, self.request_id = path, request_id
        # Who the request belongs to, from what Envoy vouches for (docs/budgets.md: trust model).
        self.context.identity = resolve_identity(self.policy.loaded.document.identity, message)
        self.context.tenant = self.tel.tenant = self.context.identity.get("tenant")
        self.tel.request_id = self.request_id

    def _check_request_headers(self, route: CompiledRoute, *, end_of_stream: bool) -> None:
        sentinel = route.sentinel
        length = self.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > sentinel.max_body_bytes:
            raise Reject(413, "irl_body_too_large", f"request body exceeds {sentinel.max_body_bytes} bytes")
        self.codec = codec_for(sentinel.format, self.path)
        if self.codec is None:
            raise Reject(
                404,
                "irl_unknown_api",
                f"IRL cannot read requests to {self.path.split('?')[0]!r}: unknown LLM API format; "
                "set sentinel.format on this route",
            )
        self._check_encoding(self.request, route)
        if end_of_stream:
            raise Reject(400, "irl_empty_body", "request body is empty")
        self.request.buffer = BodyBuffer(sentinel.max_body_bytes)

    def _check_encoding(self, side: Side, route: CompiledRoute) -> None:
        encoding = side.encoding.strip().lower()
        if encoding in ("", "identity"):
            return
        if route.sentinel.content_encoding == "reject":
            raise Reject(415, "irl_encoding_refused", f"content-encoding {encoding!r} is refused by policy")
        if encoding not in DECODABLE:
            raise Reject(415, "irl_encoding_unsupported", f"content-encoding {encoding!r} is not supported")

    async def on_request_body(self, body: ep.HttpBody, _: ep.ProcessingRequest) -> ep.ProcessingResponse | None:
        route, side = self.route, self.request
        if route is None or side.buffer is None:
            return self._pass_body("request_body", side, body)
        raw = self._collect(side, body)
        if raw is None:
            return None
        conversation = self._decode(side, raw, route)
        # Response-side invariants may prepare the request too (a canary in the system prompt).
        changed = prepare(route.request + route.response, conversation, self.context)
        decision = await self._evaluate(side, route.request, conversation, route)
        self.context.request = conversation
        if decision.acts and decision.verdict == "block":
            return self._block(decision, route)
        changed = redact(conversation, decision) > 0 or changed
        return self._body_reply("request_body", side, conversation if changed else None, raw)

    async def on_response_headers(self, headers: ep.HttpHeaders, msg: ep.ProcessingRequest) -> ep.ProcessingResponse:
        if not self.request.headers:  # a response-only route skips the request headers (render/envoy_routes.py)
            self._identify(msg, _attribute(msg, "request.path"), _attribute(msg, "request.id"))
            if self.route is None:
                raise Reject(500, "irl_unknown_route", f"IRL has no policy for route {self.route_id!r}")
        self.response.headers = _headers(headers)
        status = self.response.headers.get(":status", "0")
        self.status = int(status) if status.isdigit() else 0
        route = self.route
        reply = responses.mutate("response_headers", set_headers=self._client_headers())
        if route is None or not route.sentinel.needs_response:
            return reply
        if not 200 <= self.status < 300:
            self.response.skipped = f"upstream status {self.status}"
        elif "text/event-stream" in self.response.headers.get("content-type", ""):
            if self.response.body_mode in (FULL_DUPLEX, pm.ProcessingMode.BUFFERED):
                return self._open_stream(route, reply)
            self.response.skipped = "streamed response outside full-duplex or buffered mode"
        else:
            self._check_encoding(self.response, route)
            self.response.buffer = BodyBuffer(route.sentinel.max_body_bytes)
            return reply
        if self.response.body_mode != FULL_DUPLEX:
            responses.mode_override(reply, response_body_mode=pm.ProcessingMode.NONE)
        return reply

    async def on_response_body(self, body: ep.HttpBody, _: ep.ProcessingRequest) -> ep.ProcessingResponse | None:
        if self.stream is not None:  # replies go out through self.send (full duplex)
            return await self.stream.feed(body.body, end_of_stream=body.end_of_stream)
        route, side = self.route, self.response
        if route is None or side.buffer is None:
            return self._pass_body("response_body", side, body)
        raw = self._collect(side, body)
        if raw is None:
            return None
        conversation = self._decode(side, raw, route)
        await settle(route.request, conversation, self.context, completed=True)
        decision = await self._evaluate(side, route.response, conversation, route)
        if decision.acts and decision.verdict == "block":
            return self._block(decision, route)
        changed = redact(conversation, decision) > 0
        # Reversible masking: the model's output is judged as written, then the request's
        # placeholders it echoes are given back their originals (as streams do).
        changed = restore_conversation(conversation, self.context) > 0 or changed
        return self._body_reply("response_body", side, conversation if changed else None, raw)

    async def on_request_trailers(self, _: Any, __: ep.ProcessingRequest) -> ep.ProcessingResponse:
        return responses.continue_response("request_trailers")

    async def on_response_trailers(self, _: Any, __: ep.ProcessingRequest) -> ep.ProcessingResponse:
        if self.stream is not None:  # a body that ends with trailers: release what is held first
            await self.stream.feed(b"", end_of_stream=True, trailers=True)
        return responses.continue_response("response_trailers")

    def _open_stream(self, route: CompiledRoute, reply: ep.ProcessingResponse) -> ep.ProcessingResponse:
        """Inspect a streamed (SSE) response in flight (irl_extproc/streaming, docs/streaming.md)."""
        self._check_encoding(self.response, route)
        make_codec = STREAM_CODECS.get(resolve_format(route.sentinel.format, self.path))
        if make_codec is None:
            raise Reject(502, "irl_unknown_api", "IRL cannot read this streamed response: set sentinel.format")
        hooks = StreamHooks(
            send=self.send,
            record=lambda decision: self._record(self.response, decision),
            fault=lambda code, passed: self._note_failure("response_body", code, passed=passed),
            decorate=self._with_metadata,
        )
        full_duplex = self.response.body_mode == FULL_DUPLEX
        self.stream = ResponseStream(
            route, make_codec(), self.context, hooks, full_duplex=full_duplex, encoding=self.response.encoding
        )
        if self.response.encoding:  # the stream goes on decoded
            return responses.mutate(
                "response_headers", set_headers=self._client_headers(), remove_headers=("content-encoding",)
            )
        return reply

    # -- helpers ----------------------------------------------------------------------------

    def _collect(self, side: Side, body: ep.HttpBody) -> bytes | None:
        """Add a chunk; the whole body once it is complete, else None (held back)."""
        assert side.buffer is not None
        try:
            side.buffer.add(body.body, end_of_stream=body.end_of_stream)
        except BodyTooLarge:
            raise Reject(
                413, "irl_body_too_large", f"{side.direction} body exceeds {side.buffer.limit} bytes"
            ) from None
        if not body.end_of_stream:
            if side.body_mode == FULL_DUPLEX:
                return None
            raise Reject(500, "irl_partial_body", "received a partial body outside buffered/full-duplex mode")
        return side.buffer.data()

    def _decode(self, side: Side, raw: bytes, route: CompiledRoute) -> Conversation:
        limit = route.sentinel.max_body_bytes
        try:
            plain = decode_content(raw, side.encoding, limit)
        except BodyTooLarge:
            raise Reject(413, "irl_body_too_large", f"decoded {side.direction} body exceeds {limit} bytes") from None
        except UndecodableBody as exc:
            raise Reject(400, "irl_bad_encoding", str(exc)) from None
        codec = self.codec or _DEFAULT_CODEC
        try:
            return decode(codec, side.direction, parse_json(plain))
        except CodecError as exc:
            status = 400 if side.direction == "request" else 502
            raise Reject(status, "irl_unreadable_body", f"{codec.name} {side.direction}: {exc}") from None

    async def _evaluate(
        self, side: Side, invariants: tuple[CompiledInvariant, ...], conversation: Conversation, route: CompiledRoute
    ) -> Decision:
        decision = await evaluate_live(
            invariants, conversation, self.context, route.sentinel.mode, self.tel.evaluations
        )
        self._record(side, decision, conversation)
        return decision

    def _record(self, side: Side, decision: Decision, conversation: Conversation | None = None) -> None:
        side.decision = decision
        spent = charges(self.context) if side.direction == "response" else []
        self._charged = self._charged or bool(spent)
        self._audit(self.tel.decide(decision, conversation=conversation, status=self.status, charges=spent))
        # Monitor findings (e.g. a budget store that was down under fail_open) are recorded too.
        self.outcome.rules += [f.rule for f in decision.findings]
        if decision.verdict != "allow" and (decision.enforced or self.outcome.verdict == "allow"):
            self.outcome.verdict = decision.verdict if decision.enforced else f"monitor:{decision.verdict}"

    def _body_reply(self, phase: str, side: Side, changed: Conversation | None, raw: bytes) -> ep.ProcessingResponse:
        body = encode_json(changed.body) if changed is not None else None
        if side.body_mode == FULL_DUPLEX:
            # In full duplex Envoy forwards only what we send back: resend the original when unchanged.
            reply = responses.streamed_body(phase, raw if body is None else body, end_of_stream=True)
            return self._with_metadata(reply)
        if body is None:
            return self._with_metadata(responses.continue_response(phase))
        reply = responses.mutate(
            phase,
            set_headers={"content-length": str(len(body))},
            remove_headers=("content-encoding",) if side.encoding else (),
            body=body,
        )
        return self._with_metadata(reply)

    def _pass_body(self, phase: str, side: Side, body: ep.HttpBody) -> ep.ProcessingResponse:
        if side.body_mode == FULL_DUPLEX:
            return responses.streamed_body(phase, body.body, end_of_stream=body.end_of_stream)
        return responses.continue_response(phase)

    def _client_headers(self) -> dict[str, str]:
        headers = dict(self.context.client_headers)
        if self.outcome.verdict != "allow":
            headers["x-irl-decision"] = self.outcome.verdict
        if self.outcome.flags:
            headers["x-irl-flags"] = ",".join(self.outcome.flags)
        return headers

    def _error_headers(self, decision: str, code: str) -> dict[str, str]:
        return {
            **self.context.client_headers,
            "x-irl-decision": decision,
            "x-irl-rule": code,
            "x-irl-route": self.route_id,
            "x-irl-policy-version": self.policy.version[:12],
        }

    def _block(self, decision: Decision, route: CompiledRoute) -> ep.ProcessingResponse:
        finding = decision.blocking
        assert finding is not None
        self.outcome.verdict = "block"
        codec = self.codec or _DEFAULT_CODEC
        status = finding.status or route.sentinel.block_status
        # Finding messages never quote content (invariants/base.py), so they can be shown.
        message = f"blocked by IRL policy: {finding.invariant} ({finding.rule}): {finding.message}"
        body = codec.error_body(status, message, f"irl_{finding.invariant}")
        headers = self._error_headers("block", finding.rule)
        headers["x-irl-invariant"] = finding.invariant
        return self._with_metadata(
            responses.immediate(status, body, headers=headers, details=f"irl_block:{finding.rule}")
        )

    def _reject(self, phase: str, reject: Reject) -> ep.ProcessingResponse:
        """Bad input: fail_open passes it on flagged; fail_closed answers with a clear error."""
        fail_open = self._on_error() == "fail_open"
        self._note_failure(phase, reject.code, passed=fail_open)
        if fail_open:
            return self._with_metadata(self._pass_unchecked(phase, reject.code))
        codec = self.codec or _DEFAULT_CODEC
        body = codec.error_body(reject.status, reject.message, reject.code)
        headers = self._error_headers("error", reject.code)
        return self._with_metadata(responses.immediate(reject.status, body, headers=headers, details=reject.code))

    def _note_failure(self, phase: str, code: str, *, passed: bool) -> None:
        log.warning(
            "route=%s request_id=%s phase=%s %s (%s)",
            self.route_id,
            self.request_id,
            phase,
            code,
            "passed unchecked: fail_open" if passed else "refused: fail_closed",
        )
        if passed:
            self.outcome.flags.append(f"unchecked:{code}")
        else:
            self.outcome.verdict = "error"
            self.outcome.error = code
        flags = [f"unchecked:{code}"] if passed else []
        self._audit(self.tel.decide(None, status=self.status, error=None if passed else code, flags=flags))

    def _audit(self, durable: asyncio.Future[Any] | None) -> None:
        if durable is not None:
            self._durable.append(durable)

    def _pass_unchecked(self, phase: str, reason: str) -> ep.ProcessingResponse:
        """Stop inspecting this side and forward everything held so far unchanged."""
        side = self.request if phase.startswith("request") else self.response
        side.skipped = reason
        held, side.buffer = side.buffer, None
        if phase.endswith("_body") and side.body_mode == FULL_DUPLEX:
            data = held.data() if held else b""
            return responses.streamed_body(phase, data, end_of_stream=held.ended if held else False)
        return responses.continue_response(phase)

    def _internal_error(self, phase: str, exc: Exception) -> ep.ProcessingResponse:
        # Exception text may quote content, so only its type and the code path are logged.
        log.error(
            "route=%s phase=%s internal error %s\n%s",
            self.route_id,
            phase,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        return self._reject(phase, Reject(500, "irl_internal_error", "IRL failed to evaluate this message"))

    def _on_error(self) -> Literal["fail_open", "fail_closed"]:
        if self.route is not None:
            return self.route.sentinel.on_error
        defaults = self.policy.loaded.document.defaults.sentinel
        return (defaults.on_error if defaults else None) or "fail_closed"

    def _with_metadata(self, response: ep.ProcessingResponse) -> ep.ProcessingResponse:
        o = self.outcome
        values = {
            "route": self.route_id,
            "decision": o.verdict,
            "policy_version": self.policy.version[:12],
        }
        if o.rules:
            values["rules"] = ",".join(sorted(set(o.rules)))
        if o.flags:
            values["flags"] = ",".join(o.flags)
        responses.attach_metadata(response, METADATA_NAMESPACE, values)
        return response
