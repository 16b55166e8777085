"""kill -9 the real `irl serve` under load behind a real Envoy: with --audit-wait, every block a
client received has its decision record on disk, and the chain verifies after the restart
repairs whatever the kill tore."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import httpx
import pytest

from irl_extproc.policy.load import load_policy
from irl_extproc.processes import Child, envoy_argv, free_ports, grpc_serving, http_ok, irl_argv
from irl_extproc.render.envoy import render_bootstrap
from irl_extproc.telemetry.audit import AuditLog
from irl_extproc.telemetry.audit_verify import verify
from tests.conftest import REPO
from tests.envoy.test_trace_e2e import serve_has_telemetry_options

pytestmark = pytest.mark.envoy

CLIENTS = 8
BLOCKS_BEFORE_KILL = 150


def test_acknowledged_decisions_survive_kill_9_of_the_server(tmp_path: Path) -> None:
    if not serve_has_telemetry_options():
        pytest.skip("irl serve has no --audit-dir yet: the telemetry integration is not applied")
    upstream_port, listener_port, admin_port, irl_port = free_ports(4)
    policy = tmp_path / "policy.yaml"
    policy.write_text((REPO / "policies" / "example.yaml").read_text().replace("port: 18080", f"port: {upstream_port}"))
    audit_dir = tmp_path / "audit"
    children: list[Child] = []
    try:
        demo = Child("upstream", [sys.executable, "-m", "irl_extproc.demo.upstream", "--port", str(upstream_port)])
        children.append(demo)
        demo.wait_ready(http_ok(f"http://127.0.0.1:{upstream_port}/healthz"))
        irl = Child("irl", irl_argv("serve", "--policy", str(policy), "--port", str(irl_port),
                                    "--audit-dir", str(audit_dir), "--audit-wait", "--audit-max-file-mb", "1"),
                    log=tmp_path / "irl.log")
        children.append(irl)
        irl.wait_ready(grpc_serving(f"127.0.0.1:{irl_port}"))
        bootstrap = render_bootstrap(load_policy(policy), extproc_endpoints=[("127.0.0.1", irl_port)],
                                     admin_port=admin_port, listener_port=listener_port)
        (tmp_path / "envoy.json").write_text(json.dumps(bootstrap))
        envoy = Child("envoy", envoy_argv(tmp_path / "envoy.json"), log=tmp_path / "envoy.log")
        children.append(envoy)
        envoy.wait_ready(http_ok(f"http://127.0.0.1:{admin_port}/ready"))

        blocked: list[str] = []  # models whose block reached a client: their records were durable first
        enough = threading.Event()

        def client(worker: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{listener_port}", timeout=10) as http:
                for i in range(100_000):
                    model = f"kill-{worker}-{i}"  # not an allowed model: blocked by the limits invariant
                    try:
                        reply = http.post("/v1/chat/completions", json={"model": model, "messages": [
                            {"role": "user", "content": "hello"}]})
                    except httpx.HTTPError:
                        return
                    if reply.status_code == 403 and reply.headers.get("x-irl-invariant") == "limits":
                        blocked.append(model)
                        if len(blocked) >= BLOCKS_BEFORE_KILL:
                            enough.set()
                    elif enough.is_set():
                        return  # IRL is gone: Envoy fails closed

        threads = [threading.Thread(target=client, args=(w,)) for w in range(CLIENTS)]
        for thread in threads:
            thread.start()
        assert enough.wait(60), f"only {len(blocked)} blocks before the deadline"
        irl.process.send_signal(signal.SIGKILL)  # mid-load: other requests are in flight
        irl.process.wait(10)
        for thread in threads:
            thread.join(30)
    finally:
        for child in reversed(children):
            child.stop()

    restarted = AuditLog(audit_dir)  # what the server does on its next start: repair a torn tail
    restarted.open()
    restarted.close()
    [report] = verify(audit_dir, check_schema=True)
    assert report.ok, [str(p) for p in report.problems]
    recorded = {json.loads(line).get("usage", {}).get("request_model") for path in report.files
                for line in path.read_text().splitlines()}
    missing = [model for model in blocked if model not in recorded]
    assert not missing, f"{len(missing)} acknowledged blocks have no record, e.g. {missing[:5]}"
    assert len(blocked) >= BLOCKS_BEFORE_KILL
