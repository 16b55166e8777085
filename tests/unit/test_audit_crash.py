"""kill -9 a process writing the audit chain under load: no acknowledged record is lost,
and the chain verifies (after the restart repairs a torn tail, if the kill left one)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from irl_extproc.telemetry.audit import AuditLog
from irl_extproc.telemetry.audit_format import decode_record, list_chain_files
from irl_extproc.telemetry.audit_verify import verify

pytestmark = pytest.mark.unit

# 32 concurrent appenders; each prints "sequence hash" only once its record is durable.
WRITER = textwrap.dedent("""
    import asyncio, sys
    from irl_extproc.telemetry.audit import AuditLog

    async def appender(log, worker):
        for i in range(1_000_000):
            receipt = await log.append({"request_id": f"{worker}-{i}", "pad": "x" * 1500})
            sys.stdout.write(f"{receipt.sequence} {receipt.hash}\\n")
            sys.stdout.flush()

    async def main():
        log = AuditLog(sys.argv[1], max_file_bytes=64 * 1024)
        log.open()
        await asyncio.gather(*(appender(log, w) for w in range(32)))

    asyncio.run(main())
""")


def kill_under_load(directory: Path, acknowledged_before_kill: int) -> dict[int, str]:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE, text=True)
    acknowledged: dict[int, str] = {}
    try:
        assert writer.stdout is not None
        deadline = time.monotonic() + 60
        while len(acknowledged) < acknowledged_before_kill:
            line = writer.stdout.readline()
            assert line, f"writer exited early with {writer.poll()}"
            assert time.monotonic() < deadline, "writer too slow"
            sequence, digest = line.split()
            acknowledged[int(sequence)] = digest
        writer.send_signal(signal.SIGKILL)
        rest, _ = writer.communicate(timeout=10)  # acknowledgements already printed before the kill count too
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    for line in rest.splitlines():
        if line.count(" ") == 1:  # the kill may cut the last printed line
            sequence, digest = line.split()
            if len(digest) == 64:
                acknowledged[int(sequence)] = digest
    assert writer.returncode == -signal.SIGKILL
    return acknowledged


def on_disk(directory: Path) -> dict[int, str]:
    records = {}
    for _, path in list_chain_files(directory)["audit"]:
        for line in path.read_bytes().splitlines(keepends=True):
            if line.endswith(b"\n"):
                record = decode_record(line)
                records[record.sequence] = record.hash
    return records


def test_kill_9_under_load_loses_no_acknowledged_record(tmp_path: Path) -> None:
    for round_number in range(2):  # the second round restarts on what the first kill left
        acknowledged = kill_under_load(tmp_path, acknowledged_before_kill=400)
        restarted = AuditLog(tmp_path, max_file_bytes=64 * 1024)
        restarted.open()  # repairs a torn tail, if any
        restarted.close()
        [report] = verify(tmp_path)
        assert report.ok, [str(p) for p in report.problems]
        stored = on_disk(tmp_path)
        missing = {s: h for s, h in acknowledged.items() if stored.get(s) != h}
        assert not missing, f"round {round_number}: acknowledged records lost: {sorted(missing)[:10]}"
        assert len(report.files) > 1  # rotation happened under load
