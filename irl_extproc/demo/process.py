"""Run the demo upstream as a child process: started, probed on ``/healthz``, always stopped."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType

from irl_extproc.processes import Child, free_ports, http_ok


class DemoUpstreamProcess:
    def __init__(self, child: Child, host: str, port: int) -> None:
        self.child = child
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.child.process.pid

    def stop(self) -> int:
        return self.child.stop()

    def __enter__(self) -> DemoUpstreamProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def start_demo_upstream(
    port: int = 0, *, host: str = "127.0.0.1", history: int = 100, log: Path | None = None, timeout: float = 15.0
) -> DemoUpstreamProcess:
    """Start ``python -m irl_extproc.demo.upstream`` (on a free port when ``port`` is 0) and
    return once ``/healthz`` answers 200."""
    port = port or free_ports(1)[0]
    argv = [sys.executable, "-m", "irl_extproc.demo.upstream",
            "--host", host, "--port", str(port), "--history", str(history)]
    child = Child("demo upstream", argv, log=log)
    try:
        child.wait_ready(http_ok(f"http://{host}:{port}/healthz"), timeout)
    except BaseException:
        child.stop()
        raise
    return DemoUpstreamProcess(child, host, port)
