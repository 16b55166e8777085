"""Verify audit chains: every record intact, in order, none missing, links unbroken.

Problems name the file, the line and the sequence numbers involved, so an auditor can
see *which* record was edited, removed or moved. Verifying needs no key and no IRL
state: only the files. What a chain alone cannot show is records cut off its end;
compare the reported head with one recorded elsewhere (``--anchor``) for that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format

from irl_extproc._gen.irl.v1 import decision_pb2
from irl_extproc.telemetry.audit_format import (
    CHAIN_FIELDS,
    GENESIS_HASH,
    RecordError,
    decode_record,
    list_chain_files,
    parse_file_name,
)


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ChainReport:
    chain: str
    files: list[Path] = field(default_factory=list)
    records: int = 0
    first_sequence: int | None = None
    head: tuple[int, str] | None = None  # (sequence, hash) of the last valid record
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    anchor: tuple[int, str] | None = None  # (sequence, hash) recorded elsewhere that must be in the chain
    anchor_seen: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Cursor:
    """Where the chain should continue: the next sequence and the hash it must link to."""

    sequence: int | None  # None: take whatever the first record says (a partial chain)
    prev_hash: str | None


def verify(path: Path, *, allow_pruned: bool = False, check_schema: bool = False,
           anchors: dict[str, tuple[int, str]] | None = None) -> list[ChainReport]:
    """Verify a chain file, or every chain in a directory.

    A directory's chains must start at sequence 0 unless ``allow_pruned`` (old files
    deleted by retention). A single file may start anywhere: its predecessor is not
    checked. ``anchors`` maps chain name → (sequence, hash) that must be in the chain.
    """
    if path.is_dir():
        groups = list_chain_files(path)
        if not groups:
            raise FileNotFoundError(f"no audit files (<chain>-<index>.jsonl) in {path}")
    else:
        parsed = parse_file_name(path)
        name, index = parsed if parsed else (path.stem, 0)
        groups = {name: [(index, path)]}
    anchors = anchors or {}
    return [
        _verify_chain(ChainReport(name, anchor=anchors.get(name)), files,
                      require_genesis=path.is_dir() and not allow_pruned, check_schema=check_schema)
        for name, files in groups.items()
    ]


def _verify_chain(report: ChainReport, files: list[tuple[int, Path]], *, require_genesis: bool,
                  check_schema: bool) -> ChainReport:
    cursor = _Cursor(0, GENESIS_HASH) if require_genesis else _Cursor(None, None)
    previous_index: int | None = None
    for position, (index, path) in enumerate(files):
        report.files.append(path)
        if previous_index is not None and index != previous_index + 1:
            report.problems.append(Problem(path, 0, f"file index jumps from {previous_index} to {index}: "
                                                    "a file of this chain is missing"))
        previous_index = index
        _verify_file(path, report, cursor, last_file=position == len(files) - 1, check_schema=check_schema)
    if report.records == 0 and not report.warnings:
        report.warnings.append(Problem(files[-1][1], 0, "the chain has no records yet"))
    if report.anchor is not None and not report.anchor_seen:
        head = report.head[0] if report.head else "none"
        report.problems.append(Problem(files[-1][1], 0, f"anchored record {report.anchor[0]} is not in the chain "
                                                        f"(last record: {head}): records were cut off or removed"))
    return report


def _verify_file(path: Path, report: ChainReport, cursor: _Cursor, *, last_file: bool, check_schema: bool) -> None:
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    for number, line in enumerate(lines, start=1):
        _verify_line(path, number, line, report, cursor, check_schema=check_schema)
    if torn:
        where = Problem(path, len(lines) + 1, f"torn final line ({len(torn)} bytes): a write interrupted by a crash; "
                                              "never acknowledged, and the writer truncates it when it next starts")
        (report.warnings if last_file else report.problems).append(where)


def _verify_line(path: Path, number: int, line: bytes, report: ChainReport, cursor: _Cursor, *,
                 check_schema: bool) -> None:
    try:
        record = decode_record(line)
    except RecordError as exc:
        report.problems.append(Problem(path, number, f"record {_expected(cursor)}: {exc}"))
        _skip(line, cursor)
        return
    problems = report.problems
    if report.first_sequence is None:
        report.first_sequence = record.sequence
    if cursor.sequence is not None and record.sequence != cursor.sequence:
        if record.sequence > cursor.sequence:
            missing = f"{cursor.sequence}" if record.sequence == cursor.sequence + 1 else \
                f"{cursor.sequence}..{record.sequence - 1}"
            problems.append(Problem(path, number, f"sequence {record.sequence} where {cursor.sequence} was expected: "
                                                  f"record(s) {missing} removed or moved"))
        else:
            problems.append(Problem(path, number, f"sequence {record.sequence} where {cursor.sequence} was expected: "
                                                  "record out of order or duplicated"))
    elif cursor.prev_hash is not None and record.prev_hash != cursor.prev_hash:
        problems.append(Problem(path, number, f"record {record.sequence}: prev_hash does not match the previous "
                                              "record's hash: a record before it was replaced, edited or reordered"))
    if report.anchor is not None and record.sequence == report.anchor[0]:
        report.anchor_seen = True
        if record.hash != report.anchor[1]:
            problems.append(Problem(path, number, f"record {record.sequence}: hash differs from the anchored hash"))
    if check_schema:
        _check_schema(path, number, record.fields, problems)
    report.records += 1
    report.head = (record.sequence, record.hash)
    cursor.sequence, cursor.prev_hash = record.sequence + 1, record.hash


def _expected(cursor: _Cursor) -> str:
    return str(cursor.sequence) if cursor.sequence is not None else "(first)"


def _skip(line: bytes, cursor: _Cursor) -> None:
    """Move past a damaged line so one edit is reported once, not at every later record."""
    claimed = _claims(line)
    if claimed is not None:
        cursor.sequence, cursor.prev_hash = claimed[0] + 1, claimed[1]
    elif cursor.sequence is not None:
        cursor.sequence, cursor.prev_hash = cursor.sequence + 1, None


def _claims(line: bytes) -> tuple[int, str] | None:
    """(sequence, hash) a damaged line claims, when it still parses as JSON."""
    try:
        fields = json.loads(line)
    except ValueError:
        return None
    if isinstance(fields, dict) and isinstance(fields.get("sequence"), int) and isinstance(fields.get("hash"), str):
        return int(fields["sequence"]), str(fields["hash"])
    return None


def _check_schema(path: Path, number: int, fields: dict[str, object], problems: list[Problem]) -> None:
    record = {k: v for k, v in fields.items() if k not in CHAIN_FIELDS}
    try:
        json_format.ParseDict(record, decision_pb2.DecisionRecord())
    except json_format.ParseError as exc:
        problems.append(Problem(path, number, f"not an irl.v1.DecisionRecord: {exc}"))
