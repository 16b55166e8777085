"""The local stack for end-to-end tests: demo upstream, IRL server(s) and a real Envoy.

Everything listens on ephemeral loopback ports, readiness is probed (never slept on),
and ``stop()`` always terminates what was started.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from irl_extproc.policy.load import load_policy
from irl_extproc.processes import Child, envoy_argv, free_port_block, free_ports, grpc_serving, http_ok, irl_argv
from irl_extproc.render.envoy import render_bootstrap


def policy_on_ports(source: Path, target: Path, upstream_port: int) -> Path:
    """A copy of ``source`` whose loopback upstreams point at ``upstream_port``."""
    document = yaml.safe_load(source.read_text())
    for service in document["services"].values():
        if service["upstream"]["address"] in ("127.0.0.1", "localhost"):
            service["upstream"]["port"] = upstream_port
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


@dataclass
class Stack:
    directory: Path
    policy: Path
    workers: int = 1
    children: list[Child] = field(default_factory=list)
    demo_port: int = 0
    listener_port: int = 0
    admin_port: int = 0
    irl_port: int = 0
    irl: Child | None = None
    patch_bootstrap: Callable[[dict[str, Any]], None] | None = None  # edit the rendered config first

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}"

    @property
    def demo_url(self) -> str:
        return f"http://127.0.0.1:{self.demo_port}"

    def start(self, source_policy: Path) -> Stack:
        self.demo_port, self.listener_port, self.admin_port = free_ports(3)
        self.irl_port = free_port_block(self.workers)
        self.policy = policy_on_ports(source_policy, self.directory / "policy.yaml", self.demo_port)
        demo = self._spawn("demo", [sys.executable, "-m", "irl_extproc.demo.upstream", "--port", str(self.demo_port)])
        demo.wait_ready(http_ok(f"{self.demo_url}/healthz"))
        self.start_irl()
        endpoints = [("127.0.0.1", self.irl_port + i) for i in range(self.workers)]
        bootstrap = render_bootstrap(
            load_policy(self.policy),
            extproc_endpoints=endpoints,
            admin_port=self.admin_port,
            listener_port=self.listener_port,
        )
        if self.patch_bootstrap is not None:
            self.patch_bootstrap(bootstrap)
        config = self.directory / "envoy.json"
        config.write_text(json.dumps(bootstrap, indent=2))
        envoy = self._spawn("envoy", envoy_argv(config))
        envoy.wait_ready(http_ok(f"http://127.0.0.1:{self.admin_port}/ready"))
        return self

    def start_irl(self) -> None:
        argv = irl_argv("serve", "--policy", str(self.policy), "--port", str(self.irl_port))
        self.irl = self._spawn("irl", [*argv, "--workers", str(self.workers)])
        for i in range(self.workers):
            self.irl.wait_ready(grpc_serving(f"127.0.0.1:{self.irl_port + i}"))

    def stop_irl(self) -> None:
        if self.irl is not None:
            self.irl.stop()
            self.children.remove(self.irl)
            self.irl = None

    def _spawn(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv, log=self.directory / f"{name}.log")
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def received(self) -> list[dict[str, Any]]:
        """What the demo upstream actually received, oldest first."""
        with urllib.request.urlopen(f"{self.demo_url}/__irl/received", timeout=5) as reply:
            requests: list[dict[str, Any]] = json.loads(reply.read())["requests"]
            return requests
