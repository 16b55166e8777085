"""A real Envoy running a rendered policy, for the renderer's end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from irl_extproc.policy.load import load_policy
from irl_extproc.processes import Child, envoy_argv, free_ports, grpc_serving, http_ok, irl_argv
from irl_extproc.render.envoy import dump_yaml, render_bootstrap, write_xds


@dataclass
class RenderedEnvoy:
    directory: Path
    policy: Path
    extproc_port: int
    xds: bool = False
    listener_port: int = 0
    admin_port: int = 0
    children: list[Child] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}"

    def start(self) -> RenderedEnvoy:
        self.listener_port, self.admin_port = free_ports(2)
        loaded = load_policy(self.policy)
        xds_dir = self.directory / "xds" if self.xds else None
        options = {
            "extproc_endpoints": [("127.0.0.1", self.extproc_port)],
            "admin_port": self.admin_port,
            "listener_port": self.listener_port,
        }
        if xds_dir is not None:
            write_xds(loaded, xds_dir, **options)  # type: ignore[arg-type]
        bootstrap = render_bootstrap(loaded, xds_dir=xds_dir, **options)  # type: ignore[arg-type]
        config = self.directory / "envoy.yaml"
        config.write_text(dump_yaml(bootstrap, loaded))
        envoy = Child("envoy", envoy_argv(config), log=self.directory / "envoy.log")
        self.children.append(envoy)
        envoy.wait_ready(http_ok(f"http://127.0.0.1:{self.admin_port}/ready"))
        return self

    def reload(self) -> None:
        """Re-render the xDS files from the (edited) policy file; Envoy watches them."""
        write_xds(load_policy(self.policy), self.directory / "xds", listener_port=self.listener_port)

    def start_irl(self) -> None:
        irl = Child(
            "irl",
            irl_argv("serve", "--policy", str(self.policy), "--port", str(self.extproc_port)),
            log=self.directory / "irl.log",
        )
        self.children.append(irl)
        irl.wait_ready(grpc_serving(f"127.0.0.1:{self.extproc_port}"))

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as reply:
            text: str = reply.read().decode()
            return text

    def counter(self, name: str) -> int:
        stats = json.loads(self.admin(f"/stats?format=json&filter=^{name}$"))["stats"]
        return int(stats[0]["value"]) if stats else 0

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()


@contextlib.contextmanager
def rendered_envoy(
    directory: Path, policy_text: str, *, irl: bool = False, xds: bool = False, extproc_port: int | None = None
) -> Iterator[RenderedEnvoy]:
    """Envoy on the rendered policy (and IRL's server when ``irl``), stopped on exit.
    ``extproc_port`` points Envoy at an ext_proc server the caller runs. Any deprecation
    Envoy logged while running the config (xDS reloads included) fails the test."""
    policy = directory / "policy.yaml"
    policy.write_text(policy_text)
    stack = RenderedEnvoy(directory, policy, extproc_port or free_ports(1)[0], xds=xds)
    try:
        if irl:
            stack.start_irl()
        yield stack.start()
    finally:
        stack.stop()
    log = directory / "envoy.log"
    deprecated = [line for line in log.read_text().splitlines() if "deprecat" in line.lower()] if log.exists() else []
    assert not deprecated, "\n".join(deprecated)
