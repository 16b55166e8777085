"""The demo LLM upstream: OpenAI- and Anthropic-compatible, deterministic, fast, steerable.

``irl up`` puts it behind Envoy, the end-to-end tests use it as the provider, and the
benchmarks use it as the backend (so it is built on a lean HTTP/1.1 server, see ``http``).

Run it::

    python -m irl_extproc.demo.upstream --port 18080      # prints one readiness line

Endpoints
    POST /v1/chat/completions   OpenAI Chat Completions, ``stream: true`` with
                                ``stream_options.include_usage`` honoured
    POST /v1/responses          OpenAI Responses, streamed as ``response.*`` events
    POST /v1/messages           Anthropic Messages, streamed as ``message_start`` …
                                ``content_block_delta`` … ``message_delta`` … ``message_stop``
    GET  /v1/models             model list (Anthropic's shape when ``anthropic-version`` is sent)
    GET  /healthz               ``{"status": "ok"}``
    GET  /__irl/received        the last ``--history`` requests to the POST endpoints (and to
                                unknown paths), oldest first: ``{"requests": [{"method", "path",
                                "query", "headers", "body"}]}`` with the body as received (text),
                                so a test can prove what the upstream really got
    DELETE /__irl/received      forgets the received requests and the fault counters

Replies are deterministic: ``"echo: " + <text of the last user message>``. Token usage is
one token per started 4 characters of the prompt texts and of the reply. Any model name
is accepted and echoed back. Errors use the provider's own error shape.

Request headers that steer a reply (all optional)
    x-demo-reply: TEXT          reply with TEXT instead of the echo; percent-decoded as UTF-8
                                (so any text fits a header), e.g. to make the model "leak"
    x-demo-split: 5,12,30       stream the reply cut at these character offsets
    x-demo-chunks: N            …or cut into N pieces at random offsets, seeded by
    x-demo-seed: S              (default 0). Without either, one piece per word.
    x-demo-chunk-delay-ms: N    pause between streamed pieces (a model's token pace)

Fault injection (for resilience tests)
    x-demo-delay-ms: N          wait N ms before answering
    x-demo-status: CODE         answer with this error status (400 to 599), provider-shaped body
    x-demo-fault: reset         abort the connection with a TCP RST, no response
    x-demo-fault: close-mid-stream
                                stream: send the head and half the pieces (or
                                ``x-demo-close-after: K`` pieces), then close without the
                                end of the stream; not streamed: announce the full
                                content-length, send half the body, close
    x-demo-fault: not-sse       the body does not match its content-type: a JSON document
                                under ``text/event-stream`` when streamed, a non-JSON text
                                under ``application/json`` otherwise
    x-demo-fault: long-event    the reply is ``x-demo-event-bytes`` (default 1 MiB) of "x",
                                streamed as ONE event
    x-demo-fault-key: K         apply the delay/status/fault above only to the first
    x-demo-fault-times: N       N requests carrying key K; later ones succeed (retries)

A malformed ``x-demo-*`` header is answered with 400 naming the header.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import uvloop

from irl_extproc.demo.anthropic_messages import AnthropicMessages
from irl_extproc.demo.api import Completion, DemoApi, Prompt, RequestError, count_tokens, dumps
from irl_extproc.demo.directives import DirectiveError, Directives, parse_directives, split_reply
from irl_extproc.demo.http import Request, Responder, serve_http
from irl_extproc.demo.openai_chat import OpenAIChat
from irl_extproc.demo.openai_responses import OpenAIResponses

READY_LINE = "irl demo upstream ready on http://{host}:{port}"
RECEIVED_PATH = "/__irl/received"
MODELS = ("demo-model", "gpt-4o-mini", "claude-haiku-4-5")
_ID_PREFIX = {"openai-chat": "chatcmpl-demo-", "openai-responses": "resp_demo", "anthropic-messages": "msg_demo"}
_JSON = "application/json"
_SSE_HEADERS = (("cache-control", "no-cache"),)

APIS: dict[str, DemoApi] = {
    "/v1/chat/completions": OpenAIChat(),
    "/v1/responses": OpenAIResponses(),
    "/v1/messages": AnthropicMessages(),
}


def _read_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        raise RequestError("request body is not valid JSON") from None
    except RecursionError:
        raise RequestError("request body JSON is nested too deeply") from None


class DemoUpstream:
    """The request handler and its state: received requests and per-key fault counters."""

    def __init__(self, history: int = 100) -> None:
        self.received: deque[dict[str, Any]] = deque(maxlen=history)
        self._fault_counts: dict[str, int] = {}
        self._ids = itertools.count(1)

    def handle(self, request: Request, responder: Responder) -> Awaitable[None] | None:
        api = APIS.get(request.path)
        if request.method == "POST" and api is not None:
            self._record(request)
            return self._complete(api, request, responder)
        if request.method == "GET" and request.path == "/healthz":
            responder.send(200, b'{"status":"ok"}')
        elif request.method == "GET" and request.path == "/v1/models":
            responder.send(200, dumps(self._models("anthropic-version" in request.headers)))
        elif request.method == "GET" and request.path == RECEIVED_PATH:
            responder.send(200, dumps({"requests": list(self.received)}))
        elif request.method == "DELETE" and request.path == RECEIVED_PATH:
            self.received.clear()
            self._fault_counts.clear()
            responder.send(204, b"")
        else:
            self._record(request)
            status = 405 if api is not None else 404
            message = f"{request.method} {request.path} is not served by the demo upstream"
            responder.send(status, dumps(OpenAIChat().error_body(status, message)))
        return None

    def _record(self, request: Request) -> None:
        self.received.append({
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": request.headers,
            "body": request.body.decode("utf-8", errors="replace"),
        })

    @staticmethod
    def _models(anthropic: bool) -> dict[str, Any]:
        if anthropic:
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"}
                    for m in MODELS]
            return {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "irl-demo"}
                                           for m in MODELS]}

    def _complete(self, api: DemoApi, request: Request, responder: Responder) -> Awaitable[None] | None:
        try:
            directives = self._gate_faults(parse_directives(request.headers))
            prompt = api.read_prompt(_read_json(request.body))
        except (DirectiveError, RequestError) as exc:
            responder.send(400, dumps(api.error_body(400, str(exc))))
            return None
        completion = self._completion(api, prompt, directives)
        if not prompt.stream and not directives.has_fault:  # the hot path stays synchronous
            responder.send(200, dumps(api.completion_body(completion)))
            return None
        return _respond(api, prompt, completion, directives, responder)

    def _gate_faults(self, directives: Directives) -> Directives:
        key = directives.fault_key
        if key is None or not directives.has_fault:
            return directives
        self._fault_counts[key] = seen = self._fault_counts.get(key, 0) + 1
        if directives.fault_times is not None and seen > directives.fault_times:
            return directives.without_faults()
        return directives

    def _completion(self, api: DemoApi, prompt: Prompt, directives: Directives) -> Completion:
        if directives.fault == "long-event":
            text = "x" * directives.event_bytes
            pieces = [text]
        else:
            text = directives.reply if directives.reply is not None else "echo: " + prompt.last_user_text
            pieces = split_reply(text, directives) if prompt.stream else [text]
        return Completion(
            id=f"{_ID_PREFIX[api.name]}{next(self._ids):06d}",
            created=int(time.time()),
            model=prompt.model,
            text=text,
            pieces=pieces,
            prompt_tokens=prompt.prompt_tokens,
            completion_tokens=count_tokens(text),
        )


async def _respond(
    api: DemoApi, prompt: Prompt, completion: Completion, directives: Directives, responder: Responder
) -> None:
    """The slow path: delays, faults and streams."""
    if directives.delay_ms:
        await asyncio.sleep(directives.delay_ms / 1000)
    if directives.fault == "reset":
        responder.reset()
        return
    if directives.status is not None:
        message = f"demo upstream injected status {directives.status}"
        responder.send(directives.status, dumps(api.error_body(directives.status, message)))
        return
    body = dumps(api.completion_body(completion))
    if not prompt.stream:
        if directives.fault == "close-mid-stream":
            responder.send_truncated(200, body, _JSON, sent=len(body) // 2)
        elif directives.fault == "not-sse":
            responder.send(200, b"this is not JSON", _JSON)
        else:
            responder.send(200, body)
        return
    responder.start_stream(200, "text/event-stream", _SSE_HEADERS)
    if directives.fault == "not-sse":
        await responder.write(body)
        responder.end_stream()
        return
    await _stream(api, prompt, completion, directives, responder)


async def _stream(
    api: DemoApi, prompt: Prompt, completion: Completion, directives: Directives, responder: Responder
) -> None:
    plan = api.stream_plan(completion, prompt)
    close_at = len(plan.deltas) + 1  # never, unless the fault asks
    if directives.fault == "close-mid-stream":
        close_at = directives.close_after if directives.close_after is not None else len(plan.deltas) // 2
    await responder.write(b"".join(plan.head))
    pause = directives.chunk_delay_ms / 1000
    for index, delta in enumerate(plan.deltas):
        if index == close_at:
            responder.close()
            return
        if index and pause:
            await asyncio.sleep(pause)
        await responder.write(delta)
    if directives.fault == "close-mid-stream":  # asked to close after the last piece
        responder.close()
        return
    await responder.write(b"".join(plan.tail))
    responder.end_stream()


@dataclass(frozen=True, slots=True)
class DemoServer:
    server: asyncio.Server
    upstream: DemoUpstream
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def serve(host: str = "127.0.0.1", port: int = 0, *, history: int = 100) -> DemoServer:
    """Start serving (port 0 picks a free port); close with ``server.close()``."""
    upstream = DemoUpstream(history)
    server = await serve_http(upstream.handle, host, port)
    bound_port = server.sockets[0].getsockname()[1]
    return DemoServer(server, upstream, host, bound_port)


async def _run(host: str, port: int, history: int) -> None:
    demo = await serve(host, port, history=history)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(READY_LINE.format(host=host, port=demo.port), flush=True)
    await stop.wait()
    demo.server.close()  # open keep-alive connections end with the loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m irl_extproc.demo.upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18080, help="0 picks a free port (printed on the ready line)")
    parser.add_argument("--history", type=int, default=100, help="how many received requests to keep")
    args = parser.parse_args(argv)
    uvloop.run(_run(args.host, args.port, args.history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
