"""What tracing, the audit trail and metrics cost: Envoy + IRL with telemetry off vs on, one run.

Two identical stacks (demo upstream, ``irl serve --workers N``, Envoy rendered from the policy)
run side by side; one has the chosen telemetry on. wrk drives the buffered ~2 KB chat request
at each in turn, alternating which goes first. Besides req/s it reads the CPU seconds every
component spent from /proc and divides by the requests served: on a shared 2-core machine the
CPU per request is steadier than throughput, and when CPU-bound the throughput cost is
``1 - cpu_off / cpu_on``. Run ``--parts none`` first: the two identical stacks show the noise.

The collector is a sink that accepts OTLP without parsing it, so it costs the machine little
(a real collector runs elsewhere); Envoy batches 100 spans per export, as in production.

    .venv/bin/python -m benchmarks.telemetry_overhead                      # everything, 100 % sampled
    .venv/bin/python -m benchmarks.telemetry_overhead --sampling 10
    .venv/bin/python -m benchmarks.telemetry_overhead --parts audit,metrics
    .venv/bin/python -m benchmarks.telemetry_overhead --parts none         # the noise floor
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from benchmarks.proc_stats import children
from benchmarks.run_extproc import CHAT, REPO
from benchmarks.wrk_driver import ensure_wrk, run_wrk
from irl_extproc.policy.load import load_policy
from irl_extproc.processes import free_ports, grpc_serving, irl_argv
from irl_extproc.render.envoy import render_bootstrap
from tests.stack import Stack

PARTS = ("trace", "audit", "metrics", "envoy")


class OtlpSink:
    """Accepts OTLP trace and metric exports without decoding them."""

    def __init__(self) -> None:
        def export(request: bytes, _: Any) -> bytes:
            return b""

        handlers = [
            grpc.method_handlers_generic_handler(f"opentelemetry.proto.collector.{kind}.v1.{service}", {
                "Export": grpc.unary_unary_rpc_method_handler(export)})
            for kind, service in (("trace", "TraceService"), ("metrics", "MetricsService"))
        ]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=handlers)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


@dataclass
class TelemetryStack(Stack):
    irl_args: list[str] = field(default_factory=list)

    def start_irl(self) -> None:
        argv = irl_argv("serve", "--policy", str(self.policy), "--port", str(self.irl_port), *self.irl_args)
        self.irl = self._spawn("irl", [*argv, "--workers", str(self.workers)])
        for i in range(self.workers):
            self.irl.wait_ready(grpc_serving(f"127.0.0.1:{self.irl_port + i}"))

    def traced_by_envoy(self, otlp_port: int, sampling: float) -> None:
        """Render Envoy with its OpenTelemetry tracer on (the ``irl render --otlp`` config)."""
        def patch(bootstrap: dict[str, Any]) -> None:
            traced = render_bootstrap(load_policy(self.policy), admin_port=self.admin_port,
                                      listener_port=self.listener_port, otlp_endpoint=("127.0.0.1", otlp_port),
                                      extproc_endpoints=[("127.0.0.1", self.irl_port + i) for i in range(self.workers)])
            [listener] = traced["static_resources"]["listeners"]
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["tracing"]["random_sampling"] = {"value": sampling}
            traced["layered_runtime"] = {"layers": [{"name": "bench", "static_layer": {
                "tracing.opentelemetry.min_flush_spans": 100}}]}
            bootstrap.clear()
            bootstrap.update(traced)
        self.patch_bootstrap = patch


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime + stime of the process (all threads)
    return ticks / os.sysconf("SC_CLK_TCK")


def components(stack: Stack) -> dict[str, list[int]]:
    pids = {child.name: child.process.pid for child in stack.children}
    irl = children(pids["irl"]) if stack.workers > 1 else [pids["irl"]]
    return {"irl": irl, "envoy": [pids["envoy"]], "upstream": [pids["demo"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"what is on: {', '.join(PARTS)}, or none")
    parser.add_argument("--sampling", type=float, default=100, help="Envoy's random_sampling percent")
    parser.add_argument("--seconds", type=float, default=4, help="per wrk run (16 connections)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "example.yaml")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p in PARTS]
    ensure_wrk()
    sink = OtlpSink()
    with tempfile.TemporaryDirectory() as tmp:
        stacks = {name: TelemetryStack(Path(tmp) / name, Path(), workers=args.workers) for name in ("off", "on")}
        for stack in stacks.values():
            stack.directory.mkdir()
        on = stacks["on"]
        options = {"trace": ["--otlp-endpoint", f"127.0.0.1:{sink.port}"],
                   "audit": ["--audit-dir", str(Path(tmp) / "audit")],
                   "metrics": ["--metrics-port", str(free_ports(1)[0]), "--metrics-address", "127.0.0.1"]}
        on.irl_args = [arg for part in parts for arg in options.get(part, [])]
        if "envoy" in parts:
            on.traced_by_envoy(sink.port, args.sampling)
        try:
            for stack in stacks.values():
                stack.start(args.policy)
            rps: dict[str, list[float]] = {"off": [], "on": []}
            cpu: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
            for round_number in range(args.rounds):
                order = ("off", "on") if round_number % 2 == 0 else ("on", "off")
                for name in order:
                    pids = components(stacks[name])
                    before = {k: cpu_seconds(v) for k, v in pids.items()}
                    result = run_wrk(stacks[name].url, CHAT, connections=16, seconds=args.seconds)
                    rps[name].append(result.rps)
                    for k, v in pids.items():
                        cpu[name].setdefault(k, []).append((cpu_seconds(v) - before[k]) / result.requests * 1e6)
        finally:
            for stack in stacks.values():
                stack.stop()
            sink.server.stop(None)
    print(f"telemetry on: {', '.join(parts) or 'nothing (control)'}; Envoy sampling {args.sampling:g} %")
    print(f"req/s (mean): off {statistics.mean(rps['off']):.0f}, on {statistics.mean(rps['on']):.0f}")
    totals = {"off": 0.0, "on": 0.0}
    for component in cpu["off"]:
        off, on_ = (statistics.median(cpu[name][component]) for name in ("off", "on"))
        totals["off"] += off
        totals["on"] += on_
        print(f"CPU per request  {component:<9} off {off:7.0f} µs  on {on_:7.0f} µs  {100 * (on_ / off - 1):+6.1f} %")
    cost = 100 * (1 - totals["off"] / totals["on"])
    print(f"CPU per request, all components: off {totals['off']:.0f} µs, on {totals['on']:.0f} µs "
          f"-> throughput cost when CPU-bound: {cost:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
