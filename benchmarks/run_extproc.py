"""Envoy alone vs Envoy + IRL, in one run on this machine (issue 2's performance floor).

Starts the demo upstream, a plain Envoy proxy (no ext_proc) and the IRL stack (Envoy
rendered from the policy by ``render_bootstrap`` + ``irl serve --workers N`` + its own
demo upstream), then drives each with wrk and prints req/s, p50 and p99, the ratios to
Envoy alone, the p50 latency IRL adds at one connection, CPU per component, and the RSS
of every IRL server process under load and over a soak.

    .venv/bin/python -m benchmarks.run_extproc                  # ~2 minutes
    .venv/bin/python -m benchmarks.run_extproc --soak 300       # the 5-minute RSS soak
    .venv/bin/python -m benchmarks.run_extproc --stacks upstream,envoy   # without IRL

A scenario is a request (``Load``) and the stacks it runs on; add one to ``SCENARIOS``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.proc_stats import Sampler, children
from benchmarks.wrk_driver import Load, WrkResult, ensure_wrk, run_wrk
from irl_extproc.demo.process import start_demo_upstream
from irl_extproc.processes import Child, envoy_argv, free_ports, http_ok, write_json
from tests.stack import Stack

REPO = Path(__file__).resolve().parent.parent
STACKS = ("upstream", "envoy", "envoy+irl")
BASELINE = "envoy"
JSON_HEADERS = (("content-type", "application/json"),)


def _chat_body(target_bytes: int = 2048) -> bytes:
    """A benign ~2 KB chat request: passes every example invariant, so it is forwarded."""
    sentence = ("The pumping station logged steady pressure through the night shift, and the "
                "maintenance crew replaced two worn valve seals before the morning inspection. ")
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You summarise maintenance reports in three short bullet points."},
        {"role": "user", "content": ""},
    ]}
    overhead = len(json.dumps(body))
    text = (sentence * (target_bytes // len(sentence) + 1))[: target_bytes - overhead]
    body["messages"][1]["content"] = text.rstrip()
    return json.dumps(body).encode()


MODELS = Load("header-only GET /v1/models", "GET", "/v1/models")
CHAT = Load("buffered chat ~2KB", "POST", "/v1/chat/completions", _chat_body(), JSON_HEADERS)


@dataclass(frozen=True)
class Scenario:
    load: Load
    stacks: tuple[str, ...]


SCENARIOS = (
    Scenario(CHAT, ("upstream", "envoy", "envoy+irl")),
    Scenario(MODELS, ("envoy", "envoy+irl")),
)


def plain_envoy_config(listener_port: int, admin_port: int, upstream_port: int) -> dict[str, Any]:
    """Envoy alone: one listener, one route, the router filter, one upstream cluster."""
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    route = {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "plain",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": hcm,
                        "stat_prefix": "plain",
                        "route_config": {"name": "plain", "virtual_hosts": [
                            {"name": "all", "domains": ["*"], "routes": [route]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "upstream",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
            }],
        },
    }


@dataclass
class Target:
    """A running stack: where to send load, and which processes to watch."""

    url: str
    components: dict[str, list[int]]
    admin_url: str | None = None


@dataclass
class Environment:
    targets: dict[str, Target] = field(default_factory=dict)
    irl_servers: list[int] = field(default_factory=list)


@contextmanager
def environment(directory: Path, stacks: tuple[str, ...], policy: Path, irl_workers: int) -> Iterator[Environment]:
    env = Environment()
    with ExitStack() as cleanup:
        if {"upstream", "envoy"} & set(stacks):
            demo = cleanup.enter_context(start_demo_upstream(log=directory / "demo.log"))
            if "upstream" in stacks:
                env.targets["upstream"] = Target(demo.url, {"upstream": [demo.pid]})
        if "envoy" in stacks:
            listener_port, admin_port = free_ports(2)
            plain = plain_envoy_config(listener_port, admin_port, demo.port)
            config = write_json(directory / "envoy-plain.json", plain)
            envoy = Child("envoy (plain)", envoy_argv(config), log=directory / "envoy-plain.log")
            cleanup.callback(envoy.stop)
            envoy.wait_ready(http_ok(f"http://127.0.0.1:{admin_port}/ready"))
            env.targets["envoy"] = Target(f"http://127.0.0.1:{listener_port}",
                                          {"envoy": [envoy.process.pid], "upstream": [demo.pid]},
                                          f"http://127.0.0.1:{admin_port}")
        if "envoy+irl" in stacks:
            (directory / "irl").mkdir()
            stack = Stack(directory / "irl", Path(), workers=irl_workers)
            cleanup.callback(stack.stop)
            stack.start(policy)
            pids = {child.name: child.process.pid for child in stack.children}
            env.irl_servers = children(pids["irl"]) if irl_workers > 1 else [pids["irl"]]
            env.targets["envoy+irl"] = Target(
                stack.url, {"envoy": [pids["envoy"]], "upstream": [pids["demo"]], "irl": env.irl_servers},
                f"http://127.0.0.1:{stack.admin_port}")
        yield env


def _request(url: str, load: Load) -> tuple[int, bytes]:
    request = urllib.request.Request(url + load.path, data=load.body or None, method=load.method,
                                     headers=dict(load.headers))
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def preflight(env: Environment) -> None:
    """Each load gets 200 on each stack, and on Envoy + IRL it opens an ext_proc stream."""
    for scenario in SCENARIOS:
        for name in (s for s in scenario.stacks if s in env.targets):
            target = env.targets[name]
            streams = extproc_streams(target.admin_url)
            status, body = _request(target.url, scenario.load)
            if status != 200:
                raise SystemExit(f"preflight: {scenario.load.name} on {name} answered {status}: {body[:300]!r}")
            if name == "envoy+irl" and extproc_streams(target.admin_url) <= streams:
                raise SystemExit(f"preflight: {scenario.load.name} on {name} did not go through IRL")


def extproc_streams(admin_url: str | None) -> int:
    """Envoy's count of ext_proc streams started (0 without an admin URL)."""
    if admin_url is None:
        return 0
    with urllib.request.urlopen(f"{admin_url}/stats?filter=ext_proc.streams_started", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return sum(int(line.rpartition(": ")[2]) for line in lines if line.strip())


@dataclass
class Row:
    load: str
    stack: str
    connections: int
    result: WrkResult
    cpu: dict[str, float]
    irl_rss_max_mb: dict[int, float]
    extproc_streams: int


def measure(env: Environment, load: Load, stack: str, connections: int, seconds: float) -> Row:
    target = env.targets[stack]
    sampler = Sampler(target.components)
    streams_before = extproc_streams(target.admin_url)
    sampler.start()
    result = run_wrk(target.url, load, connections=connections, seconds=seconds, on_tick=sampler.sample)
    cpu = sampler.cpu_percent(result.seconds)
    rss = sampler.max_rss("irl") if "irl" in target.components else {}
    return Row(load.name, stack, connections, result, cpu, rss, extproc_streams(target.admin_url) - streams_before)


def soak(env: Environment, seconds: float) -> dict[str, Any]:
    """The buffered chat on Envoy + IRL for ``seconds``: RSS per server at the start and the end."""
    target = env.targets["envoy+irl"]
    sampler = Sampler({"irl": env.irl_servers})
    sampler.start()
    result = run_wrk(target.url, CHAT, connections=16, seconds=seconds, on_tick=sampler.sample)
    # The first tenth is warm-up (allocator pools, caches fill); growth is measured after it.
    per_process = {}
    for pid, samples in sampler.rss.items():
        start = samples[len(samples) // 10]
        per_process[pid] = {"start_mb": start, "end_mb": samples[-1], "max_mb": max(samples),
                            "growth_mb": samples[-1] - start}
    return {"seconds": result.seconds, "rps": result.rps, "errors": result.socket_errors + result.non_2xx,
            "processes": per_process}


def _fmt_ratio(row: Row, base: Row | None) -> tuple[str, str]:
    if base is None or row.stack == base.stack:
        return "", ""
    return f"{row.result.rps / base.result.rps:.2f}x", f"{row.result.p50_ms - base.result.p50_ms:+.3f}"


def print_table(rows: list[Row]) -> None:
    baselines = {(r.load, r.connections): r for r in rows if r.stack == BASELINE}
    header = (f"{'load':<28} {'stack':<10} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
              f"{'vs envoy':>8} {'+p50 ms':>8}  cpu% (envoy/upstream/irl)  irl rss max MB")
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio, added = _fmt_ratio(row, baselines.get((row.load, row.connections)))
        cpu = "/".join(f"{row.cpu[c]:.0f}" if c in row.cpu else "-" for c in ("envoy", "upstream", "irl"))
        rss = " ".join(f"{mb:.0f}" for mb in row.irl_rss_max_mb.values())
        r = row.result
        print(f"{row.load:<28} {row.stack:<10} {row.connections:>5} {r.rps:>8.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} "
              f"{r.socket_errors + r.non_2xx:>6} {ratio:>8} {added:>8}  {cpu:<26} {rss}")


def print_targets(rows: list[Row], soaked: dict[str, Any] | None) -> None:
    """Issue 2's floor, each line with the value it was judged on."""
    def find(load: Load, stack: str, connections: int) -> Row | None:
        return next((r for r in rows if (r.load, r.stack, r.connections) == (load.name, stack, connections)), None)

    checks = []
    chat = find(CHAT, "envoy+irl", 16)
    if chat:
        checks.append((f"buffered chat with invariants >= 2500 req/s: {chat.result.rps:.0f}", chat.result.rps >= 2500))
    for load in (CHAT, MODELS):
        irl, alone = find(load, "envoy+irl", 1), find(load, BASELINE, 1)
        if irl and alone:
            added = irl.result.p50_ms - alone.result.p50_ms
            checks.append((f"added p50 at 1 connection, {load.name} <= 1 ms: {added:.3f} ms", added <= 1.0))
    rss = [mb for r in rows for mb in r.irl_rss_max_mb.values()]
    if rss:
        checks.append((f"RSS per IRL server under load <= 200 MB: max {max(rss):.0f} MB", max(rss) <= 200))
    if soaked:
        growth = max(p["growth_mb"] for p in soaked["processes"].values())
        checks.append((f"RSS growth over a {soaked['seconds']:.0f}s soak (after warm-up) <= 5 MB: "
                       f"max {growth:+.1f} MB", growth <= 5))
    irl_rows = [r for r in rows if r.stack == "envoy+irl"]
    if irl_rows:
        bypassed = sum(max(0, r.result.requests - r.extproc_streams) for r in irl_rows)
        checks.append((f"every Envoy + IRL request opened an ext_proc stream: {bypassed} did not", bypassed == 0))
    errors = sum(r.result.socket_errors + r.result.non_2xx for r in rows)
    checks.append((f"no failed requests: {errors}", errors == 0))
    print()
    for text, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per throughput run (16 connections)")
    parser.add_argument("--latency-duration", type=float, default=5, help="seconds per 1-connection run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--irl-workers", type=int, default=2, help="irl serve --workers (ext_proc endpoints)")
    parser.add_argument("--soak", type=float, default=15, help="seconds of RSS soak on Envoy + IRL (0: none)")
    parser.add_argument("--stacks", default=",".join(STACKS), help=f"comma-separated subset of {', '.join(STACKS)}")
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "example.yaml")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    stacks = tuple(s for s in args.stacks.split(",") if s)
    if unknown := set(stacks) - set(STACKS):
        parser.error(f"unknown stacks {sorted(unknown)}; choose from {', '.join(STACKS)}")
    ensure_wrk()
    load = os.getloadavg()[0]
    print(f"load average before the run: {load:.2f} on {os.cpu_count()} cores"
          + ("  (other work is running: numbers will be noisy)" if load > 0.5 else ""), flush=True)

    rows: list[Row] = []
    soaked = None
    with tempfile.TemporaryDirectory(prefix="irl-bench-") as tmp, \
            environment(Path(tmp), stacks, args.policy, args.irl_workers) as env:
        preflight(env)
        for scenario in SCENARIOS:
            for stack in (s for s in scenario.stacks if s in env.targets):
                run_wrk(env.targets[stack].url, scenario.load, connections=args.connections, seconds=1)  # warm-up
                for connections, seconds in ((args.connections, args.duration), (1, args.latency_duration)):
                    rows.append(measure(env, scenario.load, stack, connections, seconds))
                    print(f"  measured {scenario.load.name} on {stack} at {connections} connection(s)", flush=True)
        if args.soak and "envoy+irl" in env.targets:
            print(f"  soaking Envoy + IRL for {args.soak:.0f}s ...", flush=True)
            soaked = soak(env, args.soak)
    print()
    print_table(rows)
    if soaked:
        for pid, p in soaked["processes"].items():
            print(f"soak: irl server pid {pid}: {p['start_mb']:.1f} -> {p['end_mb']:.1f} MB "
                  f"({p['growth_mb']:+.1f}), max {p['max_mb']:.1f} MB, at {soaked['rps']:.0f} req/s")
    print_targets(rows, soaked)
    if args.json:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "soak": soaked}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
