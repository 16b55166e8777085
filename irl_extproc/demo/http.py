"""A lean HTTP/1.1 server on ``asyncio.Protocol`` + httptools, for the demo LLM upstream.

The demo upstream is the backend of the benchmarks, so it must cost far less than Envoy:
no framework, one parser callback object per connection, keep-alive, pipelined requests
answered in order, ``content-length`` on whole responses and chunked transfer for streams,
write back-pressure honoured while streaming.

A handler gets a ``Request`` and a ``Responder``. It either answers at once (returns
``None``) or returns a coroutine, which the connection runs as a task; requests pipelined
behind it wait until it finishes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import httptools

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 16 * 1024 * 1024
Headers = Iterable[tuple[str, str]]


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


Handler = Callable[[Request, "Responder"], Awaitable[None] | None]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class Responder:
    """Writes one response: whole (``send``) or chunked (``start_stream``/``write``/``end_stream``)."""

    __slots__ = ("_connection", "_keep_alive", "started")

    def __init__(self, connection: _Connection, keep_alive: bool) -> None:
        self._connection = connection
        self._keep_alive = keep_alive
        self.started = False

    def _head(self, status: int, content_type: str, headers: Headers, framing: str) -> bytes:
        self.started = True
        lines = [f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: {content_type}\r\n{framing}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        if not self._keep_alive:
            lines.append("connection: close\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def send(self, status: int, body: bytes, content_type: str = "application/json", headers: Headers = ()) -> None:
        head = self._head(status, content_type, headers, f"content-length: {len(body)}")
        self._connection.write(head + body)
        if not self._keep_alive:
            self._connection.close()

    def send_truncated(self, status: int, body: bytes, content_type: str, sent: int) -> None:
        """Announce the whole body's length, send only ``sent`` bytes of it, then close."""
        self._keep_alive = False
        head = self._head(status, content_type, (), f"content-length: {len(body)}")
        self._connection.write(head + body[:sent])
        self._connection.close()

    def start_stream(self, status: int, content_type: str, headers: Headers = ()) -> None:
        self._connection.write(self._head(status, content_type, headers, "transfer-encoding: chunked"))

    async def write(self, data: bytes) -> None:
        """Send one chunk, waiting while the peer is slow. Raises ConnectionError once it is gone."""
        if data:
            self._connection.write(b"%x\r\n%b\r\n" % (len(data), data))
        await self._connection.drain()

    def end_stream(self) -> None:
        self._connection.write(b"0\r\n\r\n")
        if not self._keep_alive:
            self._connection.close()

    def close(self) -> None:
        """Close the connection (FIN after pending data), whatever state the response is in."""
        self._connection.close()

    def reset(self) -> None:
        """Abort the connection with a TCP RST and no further data."""
        self._connection.reset()


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, max_body: int) -> None:
        self._handler = handler
        self._max_body = max_body
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._pending: deque[tuple[Request, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._closed = False

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._reject(400, b"malformed HTTP request")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake_writer()
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    # -- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and not self._closed:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl otherwise waits 1 s before the body

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size <= self._max_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._body_size > self._max_body:
            self._reject(413, b"request body too large")
            return
        path, _, query = self._url.decode("latin-1").partition("?")
        method = self._parser.get_method().decode("latin-1")
        request = Request(method, path, query, self._headers, b"".join(self._body))
        self._pending.append((request, self._parser.should_keep_alive()))
        if self._task is None:
            self._dispatch()

    # -- plumbing used by Responder ----------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._closed or self._transport is None:
            raise ConnectionResetError("client connection closed")
        self._transport.write(data)

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionResetError("client connection closed")
        if self._writable is not None:
            await self._writable
            if self._closed:
                raise ConnectionResetError("client connection closed")

    def close(self) -> None:
        self._closed = True
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()

    def reset(self) -> None:
        self._closed = True
        self._pending.clear()
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:  # linger 0 turns close() into an RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    # -- internals ---------------------------------------------------------------------
    def _wake_writer(self) -> None:
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def _reject(self, status: int, message: bytes) -> None:
        if not self._closed:
            Responder(self, keep_alive=False).send(status, message, "text/plain")

    def _dispatch(self) -> None:
        while self._pending and self._task is None and not self._closed:
            request, keep_alive = self._pending.popleft()
            responder = Responder(self, keep_alive)
            try:
                pending = self._handler(request, responder)
            except Exception:
                log.exception("demo upstream handler failed on %s %s", request.method, request.path)
                self._fail(responder)
                continue
            if pending is not None:
                self._task = asyncio.get_running_loop().create_task(self._run(pending, responder))

    async def _run(self, pending: Awaitable[None], responder: Responder) -> None:
        try:
            await pending
        except (ConnectionError, asyncio.CancelledError):
            return
        except Exception:
            log.exception("demo upstream handler task failed")
            self._fail(responder)
        finally:
            self._task = None
        self._dispatch()

    def _fail(self, responder: Responder) -> None:
        if self._closed:
            return
        if responder.started:
            self.close()  # a half-sent response cannot be repaired
        else:
            responder.send(500, b"internal error", "text/plain")


async def serve_http(
    handler: Handler, host: str, port: int, *, max_body: int = DEFAULT_MAX_BODY, backlog: int = 1024
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Connection(handler, max_body), host, port, backlog=backlog, reuse_address=True
    )
