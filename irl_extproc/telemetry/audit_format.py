"""The audit trail's on-disk format, shared by the writer and ``irl audit verify``.

A chain is a series of files ``<chain>-<index:06d>.jsonl`` in one directory. Each line
is one JSON object: ``{"sequence":N,"prev_hash":"…",<record fields>,"hash":"…"}``.
``hash`` is the SHA-256 (hex) of the line's bytes up to, not including, the final
``,"hash":"…"}`` member. Hashing the bytes as written (not a re-serialisation) means
any edit, even of whitespace or key order, changes the hash, and a verifier in any
language needs no JSON canonicalisation: strip the suffix and hash. ``prev_hash`` is
the previous record's ``hash`` (64 zeros for sequence 0), so removing, reordering or
editing a record breaks the chain at that point.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

GENESIS_HASH = "0" * 64
CHAIN_FIELDS = frozenset(("sequence", "prev_hash", "hash"))
_CHAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FILE_NAME = re.compile(r"^(?P<chain>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})-(?P<index>\d{6,})\.jsonl$")
_HASH_SUFFIX = re.compile(rb',"hash":"(?P<hash>[0-9a-f]{64})"\}\n?$')


class RecordError(ValueError):
    """A line that is not a valid chained record (edited, truncated or not ours)."""


@dataclass(frozen=True, slots=True)
class ChainedRecord:
    sequence: int
    prev_hash: str
    hash: str
    fields: dict[str, Any]  # the whole parsed line


def check_chain_name(name: str) -> str:
    if not _CHAIN_NAME.match(name):
        raise ValueError(f"audit chain name {name!r}: use letters, digits, '.', '_' or '-' (e.g. 'worker-0')")
    return name


def chain_file(directory: Path, chain: str, index: int) -> Path:
    return directory / f"{chain}-{index:06d}.jsonl"


def list_chain_files(directory: Path) -> dict[str, list[tuple[int, Path]]]:
    """Every chain's files in ``directory``, by chain name, in index order."""
    chains: dict[str, list[tuple[int, Path]]] = {}
    for path in directory.iterdir():
        match = _FILE_NAME.match(path.name)
        if match and path.is_file():
            chains.setdefault(match["chain"], []).append((int(match["index"]), path))
    return {name: sorted(files) for name, files in sorted(chains.items())}


def parse_file_name(path: Path) -> tuple[str, int] | None:
    match = _FILE_NAME.match(path.name)
    return (match["chain"], int(match["index"])) if match else None


def encode_record(record: Mapping[str, Any], sequence: int, prev_hash: str) -> tuple[bytes, str]:
    """The line (with its newline) for ``record`` at ``sequence``, and the line's hash.

    Compact UTF-8 JSON via orjson (~0.7 µs a record here, against ~12 µs for ``json``).
    Raises TypeError for what JSON cannot represent (bytes, sets, non-str keys); NaN and
    infinities become null.
    """
    if not isinstance(record, dict):
        raise TypeError("a record must be a dict")
    if not CHAIN_FIELDS.isdisjoint(record):
        raise ValueError("a record must not set sequence/prev_hash/hash: the audit writer does")
    rest = orjson.dumps(record)
    body = b'{"sequence":%d,"prev_hash":"%s"%s%s' % (
        sequence,
        prev_hash.encode("ascii"),
        b"," if len(rest) > 2 else b"",
        rest[1:-1],
    )
    digest = hashlib.sha256(body).hexdigest()
    return b'%s,"hash":"%s"}\n' % (body, digest.encode("ascii")), digest


def decode_record(line: bytes) -> ChainedRecord:
    """Check one line's own integrity and return its chain fields; RecordError if broken."""
    match = _HASH_SUFFIX.search(line)
    if match is None:
        raise RecordError('no trailing "hash" member: not a complete audit record')
    digest = hashlib.sha256(line[: match.start()]).hexdigest()
    if digest != match["hash"].decode():
        raise RecordError("its hash does not match its content (the record was edited)")
    try:
        fields = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(fields, dict):
        raise RecordError("not a JSON object")
    sequence, prev_hash = fields.get("sequence"), fields.get("prev_hash")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
        raise RecordError("no valid 'sequence'")
    if not isinstance(prev_hash, str) or len(prev_hash) != 64:
        raise RecordError("no valid 'prev_hash'")
    return ChainedRecord(sequence, prev_hash, match["hash"].decode(), fields)
