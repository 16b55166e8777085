"""A small HTTP/1.1 upstream that injects faults on request, for resilience tests.

It runs on its own event loop in a background thread so synchronous tests can drive it.
Each request says what should go wrong through headers (Envoy forwards them):

- ``x-fault-status: 503``  answer with this status;
- ``x-fault-delay: 0.5``   wait this many seconds first;
- ``x-fault-reset: 1``     drop the connection with a TCP reset instead of answering;
- ``x-fault-times: N``     only the first N requests with the same ``x-fault-key`` get the fault.

``GET /healthz`` answers 200 while ``healthy`` is true and 503 otherwise. ``hits`` counts
requests per key, so a test can tell how many tries reached the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator

MAX_HEADER_BYTES = 64 * 1024


@contextlib.contextmanager
def fault_upstream(*, healthy: bool = True) -> Iterator[FaultUpstream]:
    upstream = FaultUpstream().start()
    upstream.healthy = healthy
    try:
        yield upstream
    finally:
        upstream.stop()


class FaultUpstream:
    def __init__(self) -> None:
        self.healthy = True
        self.hits: Counter[str] = Counter()
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-upstream", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> FaultUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=5)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def count(self, key: str) -> int:
        with self._lock:
            return self.hits[key]

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        """Stop listening and end every open connection while the loop still runs."""
        assert self._server is not None
        self._server.close()
        connections = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            return False
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        await reader.readexactly(int(headers.get("content-length", "0")))
        if path == "/healthz":
            await self._answer(writer, 200 if self.healthy else 503, {"healthy": self.healthy})
            return True
        key = headers.get("x-fault-key", path)
        with self._lock:
            self.hits[key] += 1
            attempt = self.hits[key]
        faulty = attempt <= int(headers.get("x-fault-times", "1000000"))
        if faulty and "x-fault-delay" in headers:
            await asyncio.sleep(float(headers["x-fault-delay"]))
        if faulty and headers.get("x-fault-reset") == "1":
            self._reset(writer)
            return False
        status = int(headers["x-fault-status"]) if faulty and "x-fault-status" in headers else 200
        await self._answer(writer, status, {"key": key, "attempt": attempt, "method": method})
        return True

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, body: dict[str, object]) -> None:
        payload = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:  # SO_LINGER 0: close() sends RST, the peer sees a reset, not a clean FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
