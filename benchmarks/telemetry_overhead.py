"""What tracing, the audit trail and metrics cost: Envoy + IRL with telemetry off vs on, one run.

Identical stacks (demo upstream, ``irl serve --workers N``, Envoy rendered from the policy)
run side by side: "off", "on" with the chosen telemetry, and "control", a second "off" that
shows the noise. Each round wrk drives the buffered ~2 KB chat request at one stack at a time
(16 connections, the machine saturated; the others idle), in an order that rotates every
round. The cost is ``1 - rps_on / rps_off`` within a round, reported as the median over
rounds with the range. CPU per request of each component (from /proc) shows where it goes.

Why one stack at a time: loading all three at once (this benchmark until 2026-11) overstated
the cost. The slower stack got a smaller share of the machine, ran less busy, and an
ext_proc server amortises less per wake-up when less busy: IRL's CPU per request is ~35 %
higher at 1 connection than at 64. Short rotating rounds keep drift from favouring a stack.

What counts: IRL (every worker, all threads: event loop, audit sync thread, exporters),
Envoy (its tracer and the OTLP export of its spans included) and the upstream. The collector
is a sink in this process that accepts OTLP without parsing it; a real one runs elsewhere.
Envoy's tracer runs as rendered (``irl render --otlp``), with only the sampling set here.

    .venv/bin/python -m benchmarks.telemetry_overhead                      # everything, 100 % sampled
    .venv/bin/python -m benchmarks.telemetry_overhead --sampling 10
    .venv/bin/python -m benchmarks.telemetry_overhead --parts audit,metrics
    .venv/bin/python -m benchmarks.telemetry_overhead --parts none         # on = off: two controls
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

from benchmarks.proc_stats import children, cpu_seconds
from benchmarks.run_extproc import CHAT, REPO
from benchmarks.wrk_driver import ensure_wrk, run_wrk
from irl_extproc.policy.load import load_policy
from irl_extproc.processes import free_port_block, grpc_serving, irl_argv
from irl_extproc.render.envoy import render_bootstrap
from tests.stack import Stack

PARTS = ("trace", "audit", "metrics", "envoy")


class OtlpSink:
    """Accepts OTLP trace and metric exports without decoding them."""

    def __init__(self) -> None:
        def export(request: bytes, _: Any) -> bytes:
            return b""

        handlers = [
            grpc.method_handlers_generic_handler(
                f"opentelemetry.proto.collector.{kind}.v1.{service}",
                {"Export": grpc.unary_unary_rpc_method_handler(export)},
            )
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
            traced = render_bootstrap(
                load_policy(self.policy),
                admin_port=self.admin_port,
                listener_port=self.listener_port,
                otlp_endpoint=("127.0.0.1", otlp_port),
                extproc_endpoints=[("127.0.0.1", self.irl_port + i) for i in range(self.workers)],
            )
            [listener] = traced["static_resources"]["listeners"]
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["tracing"]["random_sampling"] = {"value": sampling}
            bootstrap.clear()
            bootstrap.update(traced)

        self.patch_bootstrap = patch


def components(stack: Stack) -> dict[str, list[int]]:
    pids = {child.name: child.process.pid for child in stack.children}
    irl = children(pids["irl"]) if stack.workers > 1 else [pids["irl"]]
    return {"irl": irl, "envoy": [pids["envoy"]], "upstream": [pids["demo"]]}


Measured = tuple[float, dict[str, float]]  # req/s, and CPU µs per request by component


def load(stacks: dict[str, Stack], seconds: float, delay_ms: float = 0) -> dict[str, Measured]:
    """wrk on ``stacks`` at once (16 connections each, paced by ``delay_ms``): per stack, req/s and
    the CPU µs per request of each component."""
    pids = {name: components(stack) for name, stack in stacks.items()}
    before = {name: {part: sum(map(cpu_seconds, g)) for part, g in parts.items()} for name, parts in pids.items()}
    with futures.ThreadPoolExecutor(len(stacks)) as pool:
        runs = {
            name: pool.submit(run_wrk, stack.url, CHAT, connections=16, seconds=seconds, delay_ms=delay_ms)
            for name, stack in stacks.items()
        }
        results = {name: run.result() for name, run in runs.items()}
    return {
        name: (
            result.rps,
            {
                part: (sum(map(cpu_seconds, group)) - before[name][part]) / result.requests * 1e6
                for part, group in pids[name].items()
            },
        )
        for name, result in results.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"what is on: {', '.join(PARTS)}, or none")
    parser.add_argument("--sampling", type=float, default=100, help="Envoy's random_sampling percent")
    parser.add_argument("--seconds", type=float, default=2, help="per stack and round (wrk, 16 connections)")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument(
        "--paced", type=float, default=0, metavar="MS",
        help="load the stacks together instead, each connection waiting MS ms before each request: the cost "
        "then comes from CPU per request at equal load",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "example.yaml")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p in PARTS]
    ensure_wrk()
    load_before = os.getloadavg()
    sink = OtlpSink()
    names = ("off", "on", "control")
    with tempfile.TemporaryDirectory() as tmp:
        stacks = {name: TelemetryStack(Path(tmp) / name, Path(), workers=args.workers) for name in names}
        for stack in stacks.values():
            stack.directory.mkdir()
        on = stacks["on"]
        options = {
            "trace": ["--otlp-endpoint", f"127.0.0.1:{sink.port}"],
            "audit": ["--audit-dir", str(Path(tmp) / "audit")],
            "metrics": ["--metrics-port", str(free_port_block(args.workers)), "--metrics-address", "127.0.0.1"],
        }
        on.irl_args = [arg for part in parts for arg in options.get(part, [])]
        if "envoy" in parts:
            on.traced_by_envoy(sink.port, args.sampling)
        try:
            for stack in stacks.values():
                stack.start(args.policy)
            for name in names:
                load({name: stacks[name]}, 1)  # warm up: connections, caches, files
            rps: dict[str, list[float]] = {name: [] for name in names}
            cpu: dict[str, list[dict[str, float]]] = {name: [] for name in names}
            for round_ in range(args.rounds):
                if args.paced:  # together, each at the same paced rate
                    measured = load(stacks, args.seconds, args.paced)
                else:  # one at a time, saturated, in an order that rotates
                    measured = {}
                    for name in names[round_ % 3 :] + names[: round_ % 3]:
                        measured |= load({name: stacks[name]}, args.seconds)
                for name, (rate, used) in measured.items():
                    rps[name].append(rate)
                    cpu[name].append(used)
        finally:
            for stack in stacks.values():
                stack.stop()
            sink.server.stop(None)
    load_after = os.getloadavg()
    print(
        f"telemetry on: {', '.join(parts) or 'nothing (control)'}; Envoy sampling {args.sampling:g} %; "
        f"{args.rounds} rounds of {args.seconds:g} s"
    )
    print(
        f"load average (1/5/15 min): before {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.2f}' for x in load_after)}"
    )
    print("req/s (median): " + ", ".join(f"{name} {statistics.median(rps[name]):.0f}" for name in names))
    for component in cpu["off"][0]:
        off, on_, control = (statistics.median(run[component] for run in cpu[name]) for name in names)
        print(
            f"CPU per request  {component:<9} off {off:6.0f} µs  on {on_:6.0f} µs ({100 * (on_ / off - 1):+5.1f} %)"
            f"  control {control:6.0f} µs ({100 * (control / off - 1):+5.1f} %)"
        )
    medians = {name: sum(statistics.median(run[part] for run in cpu[name]) for part in cpu[name][0]) for name in names}
    for name in ("on", "control"):
        if args.paced:  # equal rates: when CPU-bound, throughput goes as 1 / CPU per request
            totals = [(sum(off.values()), sum(x.values())) for off, x in zip(cpu["off"], cpu[name], strict=True)]
            costs, how = sorted(100 * (1 - off / other) for off, other in totals), "from CPU per request"
        else:
            costs, how = sorted(100 * (1 - x / off) for off, x in zip(rps["off"], rps[name], strict=True)), "of req/s"
        print(
            f"throughput cost, {name:>7} vs off: {statistics.median(costs):5.1f} % {how} "
            f"(median of {len(costs)} rounds; range {costs[0]:.1f} … {costs[-1]:.1f}; "
            f"from the median CPU per request: {100 * (1 - medians['off'] / medians[name]):.1f} %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
