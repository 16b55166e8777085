"""The audit chain: durable appends, rotation, torn-tail repair, and tamper detection."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
from pathlib import Path

import pytest

from irl_extproc.cli import main
from irl_extproc.telemetry import audit as audit_module
from irl_extproc.telemetry.audit import AuditError, AuditLog
from irl_extproc.telemetry.audit_format import GENESIS_HASH, decode_record, encode_record, list_chain_files
from irl_extproc.telemetry.audit_verify import verify
from irl_extproc.telemetry.metrics import Counter

pytestmark = pytest.mark.unit


def record(i: int) -> dict[str, object]:
    return {"request_id": f"req-{i}", "route": "chat/v1", "verdict": "VERDICT_BLOCK", "results": [{"invariant": "pii"}]}


def write_chain(directory: Path, count: int, **options: int) -> list[int]:
    log = AuditLog(directory, **options)
    log.open()
    try:
        return [log.append_blocking(record(i)).sequence for i in range(count)]
    finally:
        log.close()


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def only_file(directory: Path) -> Path:
    [(_, path)] = list_chain_files(directory)["audit"]
    return path


def problems(path: Path, **options: object) -> list[str]:
    return [p.message for report in verify(path, **options) for p in report.problems]  # type: ignore[arg-type]


# -- format ------------------------------------------------------------------------------------


def test_non_finite_numbers_become_null() -> None:
    line, _ = encode_record({"score": float("nan")}, 0, GENESIS_HASH)
    assert json.loads(line)["score"] is None


def test_line_hash_covers_every_byte_but_the_hash_member() -> None:
    line, digest = encode_record({"b": 1, "a": "x"}, 7, GENESIS_HASH)
    assert line.startswith(b'{"sequence":7,"prev_hash":"' + GENESIS_HASH.encode() + b'","b":1,"a":"x"')
    assert line.endswith(b',"hash":"' + digest.encode() + b'"}\n')
    parsed = decode_record(line)
    assert (parsed.sequence, parsed.prev_hash, parsed.hash) == (7, GENESIS_HASH, digest)
    assert json.loads(line)["a"] == "x"


@pytest.mark.parametrize("bad", [{"x": {1, 2}}, {"x": b"bytes"}, {1: "non-str key"}, {"sequence": 1}])
def test_unwritable_records_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        encode_record(bad, 0, GENESIS_HASH)


# -- writing -----------------------------------------------------------------------------------


async def test_concurrent_appends_are_acknowledged_in_chain_order(tmp_path: Path) -> None:
    records = Counter("irl.audit.records", "{record}", "", ())
    log = AuditLog(tmp_path, records_counter=records)
    log.open()
    receipts = await asyncio.gather(*(log.append(record(i)) for i in range(200)))
    await log.aclose()
    assert [r.sequence for r in receipts] == list(range(200))
    assert dict(records.snapshot())[()] == 200
    [report] = verify(tmp_path)
    assert report.ok
    assert report.records == 200
    assert report.head == (199, receipts[-1].hash)


async def test_a_bad_record_fails_alone_and_the_chain_goes_on(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.open()
    good, bad, after = log.append(record(0)), log.append({"x": {1, 2}}), log.append(record(2))
    assert (await good).sequence == 0
    with pytest.raises(AuditError, match="cannot be written"):
        await bad
    assert (await after).sequence == 1
    await log.aclose()
    assert problems(tmp_path) == []


def test_commit_delay_lets_many_records_share_one_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[int] = []
    real_sync = os.fdatasync
    monkeypatch.setattr(audit_module.os, "fdatasync", lambda fd: (syncs.append(fd), real_sync(fd))[1])
    log = AuditLog(tmp_path, commit_delay=0.2)
    log.open()
    log.append_blocking(record(0))  # the first commit: nothing to wait for
    for i in range(1, 200):
        log.submit(record(i))
    assert log.append_blocking(record(200)).sequence == 200
    log.close()
    assert len(syncs) == 2  # 201 records, two fsyncs
    assert problems(tmp_path) == []


async def test_writes_are_prompt_and_syncs_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[int] = []
    real_sync = os.fdatasync
    monkeypatch.setattr(audit_module.os, "fdatasync", lambda fd: (syncs.append(fd), real_sync(fd))[1])
    log = AuditLog(tmp_path, commit_delay=0.01, sync_interval=0.3)
    log.open()
    built: list[int] = []

    def later(i: int) -> dict[str, object]:  # a record may be a function that builds it when written
        built.append(i)
        return record(i)

    for i in range(3):
        log.submit(lambda i=i: later(i))
        await asyncio.sleep(0.05)  # each record is written within commit_delay...
    [(_, path)] = list_chain_files(tmp_path)["audit"]
    assert built == [0, 1, 2]
    assert len(lines_of(path)) == 3  # ... in a kill -9 it would survive
    assert syncs == []  # ... and none is synced yet: they share one fdatasync
    assert (await log.append(record(3))).sequence == 3  # someone waits: synced at once
    assert len(syncs) == 1
    await log.aclose()
    assert problems(tmp_path) == []


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    assert write_chain(tmp_path, 3) == [0, 1, 2]
    assert write_chain(tmp_path, 2) == [3, 4]
    [report] = verify(tmp_path)
    assert report.ok
    assert report.records == 5


def test_rotation_continues_the_chain_across_files(tmp_path: Path) -> None:
    write_chain(tmp_path, 30, max_file_bytes=1000)
    files = list_chain_files(tmp_path)["audit"]
    assert len(files) > 3
    first_of_second = decode_record(lines_of(files[1][1])[0])
    last_of_first = decode_record(lines_of(files[0][1])[-1])
    assert first_of_second.prev_hash == last_of_first.hash
    assert first_of_second.sequence == last_of_first.sequence + 1
    [report] = verify(tmp_path)
    assert report.ok
    assert report.records == 30
    assert len(report.files) == len(files)


def test_one_writer_per_chain(tmp_path: Path) -> None:
    first = AuditLog(tmp_path)
    first.open()
    try:
        with pytest.raises(AuditError, match="already being written"):
            AuditLog(tmp_path).open()
        other = AuditLog(tmp_path, chain="worker-1")  # another chain in the same directory is fine
        other.open()
        other.close()
    finally:
        first.close()


def test_a_failed_write_is_undone_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path)
    log.open()
    log.append_blocking(record(0))
    real_write = os.write

    def half_then_full_disk(fd: int, data: bytes | memoryview) -> int:
        monkeypatch.setattr(audit_module.os, "write", failing)
        return real_write(fd, bytes(data)[: len(data) // 2])  # a partial line reaches the file

    def failing(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit_module.os, "write", half_then_full_disk)
    with pytest.raises(AuditError, match="No space left"):
        log.append_blocking(record(1))
    monkeypatch.setattr(audit_module.os, "write", real_write)
    assert log.append_blocking(record(2)).sequence == 1  # the failed record took no place in the chain
    log.close()
    assert problems(tmp_path) == []


# -- recovery ----------------------------------------------------------------------------------


def test_open_truncates_a_torn_final_line_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_chain(tmp_path, 3)
    path = only_file(tmp_path)
    intact = path.stat().st_size
    with path.open("ab") as f:
        f.write(b'{"sequence":3,"prev_hash":"abc')  # a write cut short by kill -9
    [report] = verify(tmp_path)
    assert report.ok
    assert "torn final line" in report.warnings[0].message
    with caplog.at_level(logging.WARNING, logger="irl.audit"):
        assert write_chain(tmp_path, 1) == [3]
    assert "torn record (30 bytes" in caplog.text
    assert len(lines_of(path)) == 4
    assert path.stat().st_size > intact
    assert problems(tmp_path) == []


def test_open_refuses_a_complete_but_invalid_final_line(tmp_path: Path) -> None:
    write_chain(tmp_path, 2)
    path = only_file(tmp_path)
    path.write_bytes(path.read_bytes().replace(b"req-1", b"req-X"))
    with pytest.raises(AuditError, match="not a torn write"):
        AuditLog(tmp_path).open()


def test_a_file_of_only_a_torn_line_restarts_from_the_previous_file(tmp_path: Path) -> None:
    write_chain(tmp_path, 10, max_file_bytes=600)
    *_, (_index, newest) = list_chain_files(tmp_path)["audit"]
    newest.write_bytes(b'{"sequence":')  # rotated, then killed mid-way through the first line
    before = decode_record(lines_of(list_chain_files(tmp_path)["audit"][-2][1])[-1])
    [sequence] = write_chain(tmp_path, 1, max_file_bytes=600)
    assert sequence == before.sequence + 1
    assert problems(tmp_path) == []


# -- tampering ---------------------------------------------------------------------------------


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    write_chain(tmp_path, 6)
    return tmp_path


def rewrite(directory: Path, lines: list[bytes]) -> None:
    only_file(directory).write_bytes(b"".join(lines))


def test_an_edited_record_is_named(chain: Path) -> None:
    lines = lines_of(only_file(chain))
    lines[2] = lines[2].replace(b"VERDICT_BLOCK", b"VERDICT_ALLOW")
    rewrite(chain, lines)
    assert problems(chain) == ["record 2: its hash does not match its content (the record was edited)"]


def test_an_edited_record_with_a_recomputed_hash_breaks_the_next_link(chain: Path) -> None:
    lines = lines_of(only_file(chain))
    forged = json.loads(lines[2])
    forged["verdict"] = "VERDICT_ALLOW"
    fields = {k: v for k, v in forged.items() if k not in ("sequence", "prev_hash", "hash")}
    lines[2], _ = encode_record(fields, forged["sequence"], forged["prev_hash"])
    rewrite(chain, lines)
    assert problems(chain) == [
        "record 3: prev_hash does not match the previous record's hash: a record before it was replaced, "
        "edited or reordered"
    ]


def test_a_removed_record_is_named(chain: Path) -> None:
    lines = lines_of(only_file(chain))
    del lines[3]
    rewrite(chain, lines)
    assert problems(chain) == ["sequence 4 where 3 was expected: record(s) 3 removed or moved"]


def test_reordered_records_are_named(chain: Path) -> None:
    lines = lines_of(only_file(chain))
    lines[1], lines[2] = lines[2], lines[1]
    rewrite(chain, lines)
    assert problems(chain) == [
        "sequence 2 where 1 was expected: record(s) 1 removed or moved",
        "sequence 1 where 3 was expected: record out of order or duplicated",
        "sequence 3 where 2 was expected: record(s) 2 removed or moved",
    ]


def test_a_removed_first_record_and_a_removed_file_are_caught(tmp_path: Path) -> None:
    write_chain(tmp_path, 30, max_file_bytes=1000)
    files = list_chain_files(tmp_path)["audit"]
    files[1][1].unlink()
    found = problems(tmp_path)
    assert any("a file of this chain is missing" in p for p in found)
    assert any("removed or moved" in p for p in found)
    files[0][1].unlink()
    assert any("where 0 was expected" in p for p in problems(tmp_path))
    assert not any("where 0 was expected" in p for p in problems(tmp_path, allow_pruned=True))


def test_records_cut_off_the_end_are_caught_with_an_anchor(chain: Path) -> None:
    [report] = verify(chain)
    assert report.head is not None
    lines = lines_of(only_file(chain))
    rewrite(chain, lines[:-2])
    assert problems(chain) == []  # a chain alone cannot show a cut end...
    assert problems(chain, anchors={"audit": report.head}) == [  # ...its remembered head can
        "anchored record 5 is not in the chain (last record: 3): records were cut off or removed"
    ]


def test_schema_check_flags_records_that_are_not_decision_records(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.open()
    log.append_blocking({"verdict": "VERDICT_BLOCK", "route": "chat/v1"})
    log.append_blocking({"not_a_field": 1})
    log.close()
    assert problems(tmp_path) == []
    [problem] = problems(tmp_path, check_schema=True)
    assert "not an irl.v1.DecisionRecord" in problem
    assert "not_a_field" in problem


# -- the command -------------------------------------------------------------------------------


def test_irl_audit_verify_exit_codes_and_output(chain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(chain)]) == 0
    out = capsys.readouterr().out
    assert "ok: chain 'audit': 6 records (sequence 0..5) in 1 file(s)" in out
    anchor = out.split("--anchor ")[1].split()[0]
    lines = lines_of(only_file(chain))
    rewrite(chain, [*lines[:2], *lines[3:]])
    assert main(["audit", "verify", str(chain), "--anchor", anchor]) == 1
    err = capsys.readouterr().err
    assert "audit-000001.jsonl:3: sequence 3 where 2 was expected" in err
    assert main(["audit", "verify", str(chain / "missing")]) == 2
    assert main(["audit", "verify", str(chain), "--anchor", "nonsense"]) == 2
