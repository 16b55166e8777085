"""A throwaway redis-server on an ephemeral loopback port (tests and benchmarks).

No persistence (``--save '' --appendonly no``); readiness is a PING, never a sleep; the
process can be killed or frozen on purpose to test the budget store's fail modes.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from irl_extproc.processes import Child, free_ports


def _answers_ping(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        """A new server; give ``port`` to bring one back where a killed one was."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `./dev test` installs it (Debian package redis-server)")
        (self.port,) = (port,) if port is not None else free_ports(1)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(directory)]
        self.child = Child("redis-server", argv, log=directory / f"redis-{self.port}.log")
        self.child.wait_ready(lambda: _answers_ping(self.port), timeout=15)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-load, connections reset."""
        os.kill(self.child.process.pid, signal.SIGKILL)
        self.child.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a stalled server)."""
        os.kill(self.child.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.child.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.child.process.poll() is None:
            self.thaw()  # a frozen process would not act on SIGTERM
        self.child.stop()


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    try:
        yield server
    finally:
        server.stop()
