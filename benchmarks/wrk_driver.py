"""Closed-loop HTTP load with wrk: N keep-alive connections, results read from a Lua ``done`` hook.

wrk (Debian package ``wrk``) is a C load generator that costs far less CPU per request than
any Python client, which matters when the load generator shares 2 cores with what it measures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_MARK = "IRLBENCH "
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"socket_errors":%d,"non_2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\\n',
    "MARK", summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
""".replace("MARK", _MARK)


@dataclass(frozen=True)
class Load:
    """One kind of request, sent over and over."""

    name: str
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    socket_errors: int
    non_2xx: int


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: run `sudo apt-get install -y wrk`")
    print("installing wrk (Debian package) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def _lua_string(data: bytes) -> str:
    text = data.decode()
    level = "=" * 4
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


def _script(load: Load, delay_ms: float = 0) -> str:
    lines = [f'wrk.method = "{load.method}"']
    if delay_ms:  # each connection waits this long before each request: a paced, open-ended load
        lines.append(f"function delay() return {delay_ms:g} end")
    if load.body:
        lines.append(f"wrk.body = {_lua_string(load.body)}")
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in load.headers]
    return "\n".join(lines) + "\n" + _DONE


def run_wrk(
    base_url: str, load: Load, *, connections: int, seconds: float, threads: int = 1,
    on_tick: Callable[[], None] | None = None, delay_ms: float = 0,
) -> WrkResult:
    """Run wrk against ``base_url + load.path``; ``on_tick`` is called about twice a second;
    ``delay_ms`` paces each connection (wrk's ``delay()``) instead of sending back to back."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_script(load, delay_ms))
    argv = [ensure_wrk(), "-t", str(min(threads, connections)), "-c", str(connections),
            "-d", f"{max(1, round(seconds))}s", "--timeout", "5s", "-s", script.name, base_url + load.path]
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while process.poll() is None:
            if on_tick is not None:
                on_tick()
            time.sleep(0.5)  # sampling period while the load runs
        out, err = process.communicate()
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith(_MARK)), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.strip() or out.strip()}")
    raw = json.loads(line.removeprefix(_MARK))
    secs = raw["duration_us"] / 1e6
    return WrkResult(
        requests=raw["requests"], seconds=secs, rps=raw["requests"] / secs,
        p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000, max_ms=raw["max_us"] / 1000,
        socket_errors=raw["socket_errors"], non_2xx=raw["non_2xx"],
    )
