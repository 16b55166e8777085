"""The audit trail writer: an append-only, hash-chained decision log with group commit.

Appended records gather on the caller's thread (the server's event loop). At most every
``commit_delay`` seconds the loop chains and encodes what has gathered (a few µs a record,
in one tight loop) and writes it with one ``write`` (into the page cache: no disk wait),
and a sync thread makes everything written so far durable with one ``fdatasync`` (group
commit): at once when someone waits for a record (``append``, ``irl serve
--audit-wait``), else at most ``sync_interval`` seconds after the first unsynced write.
``append(record)`` returns a future that resolves once the record is durable; that is
what "acknowledged" means. The loop never waits for the disk.

Why this split, measured in the server under load: a writer thread that woke every
20 ms to chain and write cost ~0.2 ms of CPU per wake-up (the GIL going back and forth
with the busy event loop), more than the records themselves; an ``fdatasync`` costs
~0.1-0.3 ms of CPU (the journal commit). A written record already survives a crash or
``kill -9`` of the process (it is in the kernel's page cache); only a crash of the
machine needs the sync.

Without an event loop (tools, tests) ``append_blocking`` writes and syncs at once and
``submit`` leaves records for the next ``append_blocking`` or ``close``.

Crash safety: a record is acknowledged only after it is durable, so a crash or
``kill -9`` can lose only unacknowledged records. The only damage an interrupted write
can leave is a torn final line; ``open`` truncates it, with a warning naming the file
and the byte count. A complete final line that fails its hash is not a torn write, so
``open`` refuses to start rather than "repair" what may be tampering. A failed write is
cut back off the file; a failed sync cuts the files back to what was last durable.

Rotation: when a file passes ``max_file_bytes`` the next write goes to the next file;
the chain (sequence and prev_hash) continues across files. One process per chain: a
lock file enforces it (give each worker its own chain name).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irl_extproc.telemetry.audit_format import (
    GENESIS_HASH,
    ChainedRecord,
    RecordError,
    chain_file,
    check_chain_name,
    decode_record,
    encode_record,
    list_chain_files,
)
from irl_extproc.telemetry.metrics import Counter

log = logging.getLogger("irl.audit")

DEFAULT_MAX_FILE_BYTES = 64 << 20
_TAIL_WINDOW = 64 << 10


class AuditError(Exception):
    """The audit trail cannot accept or keep a record (disk error, broken chain, closed)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof a record is durable: its place in the chain."""

    chain: str
    sequence: int
    hash: str


Waiter = asyncio.Future[Receipt] | concurrent.futures.Future[Receipt]
# A record, or a function that builds it when the record is written (in a batch).
AnyRecord = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
_Gathered = tuple[AnyRecord, Waiter | None]  # a record not yet written, and who waits for it
_Pending = tuple[Waiter | None, int, str]  # a record written, not yet durable: who waits, its sequence and hash


@dataclass(frozen=True, slots=True)
class _Sync:
    """What one round of the sync thread makes durable."""

    fd: int  # the current file
    retired: tuple[int, ...]  # rotated-out files written to since their last sync (closed once synced)
    directory: bool  # a new file's name must be made durable too
    head: tuple[int, str]  # the chain head it makes durable
    size: int  # bytes of ``fd`` it makes durable
    count: int  # unsynced records it acknowledges


class AuditLog:
    """One hash chain in ``directory``, written by one process (and one event loop)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        chain: str = "audit",
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        commit_delay: float = 0.0,
        sync_interval: float = 0.0,
        records_counter: Counter | None = None,
        errors_counter: Counter | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.chain = check_chain_name(chain)
        self.max_file_bytes = max_file_bytes
        # Wait this long after a write before the next one, so more records share it; 0 writes
        # on the loop's next turn.
        self.commit_delay = commit_delay
        # Sync written records nobody waits for at most this long after their write, so several
        # writes share one fdatasync; 0 syncs after every write.
        self.sync_interval = sync_interval
        self._records_counter = records_counter
        self._errors_counter = errors_counter
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop driving writes, once one appends
        self._syncer: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock_fd = -1
        self._fd = -1
        self._index = 0
        self._size = 0  # bytes of the current file known to be durable
        self._written_size = 0  # bytes of the current file written (durable or not)
        self._retired: list[tuple[int, int]] = []  # (fd, durable size) of rotated-out files not yet synced
        self._new_file = False  # a file was created since the last sync
        # (next sequence, last hash): of the records written, and durable, so far.
        self._written_head: tuple[int, str] = (0, GENESIS_HASH)
        self._durable = self._written_head
        self._gathered: list[_Gathered] = []  # appended, not yet written
        self._unsynced: list[_Pending] = []  # written, waiting for the next sync
        self._waiting = 0  # records with a waiter among those not yet durable: sync at once
        self._last_write = 0.0
        self._flush_timer: asyncio.Handle | None = None
        self._sync_timer: asyncio.TimerHandle | None = None
        self._sync_running: asyncio.Future[None] | None = None
        self._closed = False
        self._broken = False

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the chain, recover its tail after a crash, and start the sync thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._recover()
        except BaseException:
            self._unlock()
            raise
        self._syncer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"irl-audit-{self.chain}")
        log.info("audit chain %r in %s: next sequence %d", self.chain, self.directory, self._durable[0])

    def close(self) -> None:
        """Write and sync everything appended so far, then stop (without an event loop)."""
        if self._closed:
            return
        self._closed = True
        self._cancel_timers()
        self._flush()
        self._sync_now()
        self._release()

    async def aclose(self) -> None:
        """Write and sync everything appended so far, then stop (on the loop that appended)."""
        if self._closed:
            return
        self._closed = True
        self._cancel_timers()
        self._flush()
        if self._loop is None:
            self._sync_now()  # nothing was appended from a loop
        while self._unsynced or self._sync_running is not None:
            if self._sync_running is None:
                self._start_sync()
            if self._sync_running is not None:
                await asyncio.wait([self._sync_running])  # its round settles its records first
        self._release()

    def _release(self) -> None:
        if self._syncer is not None:
            self._syncer.shutdown()
        for fd, _ in self._retired:
            os.close(fd)
        self._retired = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._unlock()

    @property
    def head(self) -> tuple[int, str]:
        """(next sequence, hash of the last durable record); read after ``close`` for a final anchor."""
        return self._durable

    # -- appending ----------------------------------------------------------------------------

    def append(self, record: AnyRecord) -> asyncio.Future[Receipt]:
        """Add ``record``; the future resolves with its ``Receipt`` once it is durable.

        Call from the event loop's thread. The future fails with ``AuditError`` if the
        record cannot be written.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        self._enqueue(record, future, loop)
        return future

    def submit(self, record: AnyRecord) -> None:
        """Add ``record`` without waiting; a failure is logged and counted, not raised."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # written by the next append_blocking or close
        self._enqueue(record, None, loop)

    @property
    def backlog(self) -> int:
        """Records added and not yet durable."""
        return len(self._gathered) + len(self._unsynced)

    def append_blocking(self, record: AnyRecord) -> Receipt:
        """``append`` for a log no event loop drives: writes and syncs before returning."""
        future: concurrent.futures.Future[Receipt] = concurrent.futures.Future()
        self._enqueue(record, future, None)
        self._flush()
        self._sync_now()
        return future.result(0)

    def _enqueue(self, record: AnyRecord, waiter: Waiter | None, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._closed or self._syncer is None:
            raise AuditError(f"audit chain {self.chain!r} is not open")
        self._gathered.append((record, waiter))
        if waiter is not None:
            self._waiting += 1
        if loop is not None and self._flush_timer is None:
            self._loop = loop
            delay = self._last_write + self.commit_delay - time.monotonic()
            self._flush_timer = loop.call_later(delay, self._flush) if delay > 0 else loop.call_soon(self._flush)

    def _refuse(self, waiter: Waiter | None, reason: str) -> None:
        log.error("audit record rejected: %s", reason)
        self._count(self._errors_counter, 1)
        if waiter is not None:
            self._waiting -= 1
            if not waiter.done():
                waiter.set_exception(AuditError(reason))

    # -- writing and syncing ------------------------------------------------------------------

    def _flush(self) -> None:
        """Chain and encode the gathered records, write them with one ``write``, and see that a
        sync follows."""
        self._flush_timer = None
        gathered, self._gathered = self._gathered, []
        if not gathered:
            return
        if self._broken:
            for _, waiter in gathered:
                self._refuse(waiter, f"audit chain {self.chain!r} is unusable after a failed repair; see the log")
            return
        lines: list[bytes] = []
        written: list[_Pending] = []
        sequence, prev_hash = self._written_head
        for record, waiter in gathered:
            try:
                line, digest = encode_record(record() if callable(record) else record, sequence, prev_hash)
            except (TypeError, ValueError) as exc:  # a caller's bug; the chain itself is unaffected
                self._refuse(waiter, f"record cannot be written: {exc}")
                continue
            lines.append(line)
            written.append((waiter, sequence, digest))
            sequence, prev_hash = sequence + 1, digest
        if not lines:
            return
        data = b"".join(lines)
        try:
            self._write_all(data)
        except OSError as exc:
            self._undo_write(AuditError(f"audit write failed: {exc.strerror}"), written)
            return
        self._last_write = time.monotonic()
        self._written_head = (sequence, prev_hash)
        self._written_size += len(data)
        first = not self._unsynced
        self._unsynced += written
        if self._written_size >= self.max_file_bytes:
            self._rotate()
        if self._loop is None:
            return  # append_blocking and close sync themselves
        if self._waiting or self.sync_interval <= 0:
            self._start_sync()
        elif first and self._sync_timer is None:
            self._sync_timer = self._loop.call_later(self.sync_interval, self._start_sync)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _undo_write(self, error: AuditError, written: list[_Pending]) -> None:
        """Cut a failed (maybe partial) write back off the file, and fail its records."""
        log.error("audit trail %s: %s; %d records not written", self._path, error, len(written))
        try:
            os.ftruncate(self._fd, self._written_size)
            os.fdatasync(self._fd)  # the cut must outlive a crash, or the chain would fork
        except OSError as again:
            log.critical("audit file %s could not be restored (%s): refusing further records", self._path, again)
            self._broken = True
        self._fail(written, error)

    def _start_sync(self) -> None:
        """Hand the next ``fdatasync`` round to the sync thread (one round at a time)."""
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._sync_running is not None or not self._unsynced or self._loop is None or self._syncer is None:
            return
        request = self._sync_request()
        running = self._sync_running = self._loop.run_in_executor(self._syncer, self._sync_files, request)
        running.add_done_callback(lambda done: self._synced(request, done.exception()))

    def _sync_now(self) -> None:
        """One ``fdatasync`` round on this thread (no event loop)."""
        if not self._unsynced:
            return
        request = self._sync_request()
        try:
            self._sync_files(request)
        except OSError as exc:
            self._synced(request, exc)
        else:
            self._synced(request, None)

    def _sync_request(self) -> _Sync:
        request = _Sync(
            self._fd,
            tuple(fd for fd, _ in self._retired),
            self._new_file,
            self._written_head,
            self._written_size,
            len(self._unsynced),
        )
        self._new_file = False
        return request

    def _sync_files(self, request: _Sync) -> None:
        """The sync thread's part: only system calls, which release the GIL."""
        for fd in request.retired:
            os.fdatasync(fd)
        if request.directory:
            _fsync_directory(self.directory)  # a new file's name must survive a crash too
        os.fdatasync(request.fd)

    def _synced(self, request: _Sync, error: BaseException | None) -> None:
        """Acknowledge what a sync round made durable, or undo what it could not."""
        self._sync_running = None
        if error is not None:
            if not isinstance(error, OSError):
                log.error("audit sync failed", exc_info=error)
            reason = error.strerror if isinstance(error, OSError) else type(error).__name__
            self._undo_unsynced(AuditError(f"audit sync failed: {reason}"))
            return
        for fd in request.retired:
            os.close(fd)
        self._retired = [(fd, size) for fd, size in self._retired if fd not in request.retired]
        synced = self._unsynced[: request.count]
        del self._unsynced[: request.count]
        self._durable = request.head
        if request.fd == self._fd:
            self._size = request.size
        self._count(self._records_counter, len(synced))
        for waiter, sequence, digest in synced:
            if waiter is not None:
                self._waiting -= 1
                if not waiter.done():  # cancelled
                    waiter.set_result(Receipt(self.chain, sequence, digest))
        if self._unsynced and self._loop is not None:
            if self._waiting or self.sync_interval <= 0:
                self._start_sync()
            elif self._sync_timer is None:
                self._sync_timer = self._loop.call_later(self.sync_interval, self._start_sync)

    def _undo_unsynced(self, error: AuditError) -> None:
        """A failed sync: the disk may hold any part of what was written since the last one. Cut
        every file back to what is durable, and fail those records."""
        failed, self._unsynced = self._unsynced, []
        log.error("audit trail %s: %s; %d records not written", self._path, error, len(failed))
        try:
            for fd, size in self._retired:
                os.ftruncate(fd, size)
                os.fdatasync(fd)
                os.close(fd)
            self._retired = []
            os.ftruncate(self._fd, self._size)
            os.fdatasync(self._fd)
        except OSError as again:
            log.critical("audit file %s could not be restored (%s): refusing further records", self._path, again)
            self._broken = True
        self._written_head = self._durable
        self._written_size = self._size
        self._fail(failed, error)

    def _fail(self, records: list[_Pending], error: AuditError) -> None:
        self._count(self._errors_counter, len(records))
        for waiter, _, _ in records:
            if waiter is not None:
                self._waiting -= 1
                if not waiter.done():
                    waiter.set_exception(error)

    def _cancel_timers(self) -> None:
        for timer in (self._flush_timer, self._sync_timer):
            if timer is not None:
                timer.cancel()
        self._flush_timer = self._sync_timer = None

    @staticmethod
    def _count(counter: Counter | None, value: int) -> None:
        if counter is not None and value:
            counter.add((), value)

    # -- files --------------------------------------------------------------------------------

    @property
    def _path(self) -> Path:
        return chain_file(self.directory, self.chain, self._index)

    def _open_file(self, index: int) -> int:
        path = chain_file(self.directory, self.chain, index)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _use_file(self, fd: int, index: int) -> None:
        self._fd, self._index = fd, index
        self._size = self._written_size = os.fstat(fd).st_size

    def _rotate(self) -> None:
        """Go on in the next file; the old one is synced (and closed) by the next sync round."""
        try:
            fd = self._open_file(self._index + 1)
        except OSError as exc:  # keep appending to the current file; try again after the next write
            log.error("audit rotation in %s failed: %s", self.directory, exc.strerror)
            return
        self._retired.append((self._fd, self._size))
        self._use_file(fd, self._index + 1)
        self._new_file = True

    def _lock(self) -> None:
        path = self.directory / f".{self.chain}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditError(
                f"audit chain {self.chain!r} in {self.directory} is already being written by another process; "
                "give each server process its own chain name"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = -1

    def _recover(self) -> None:
        """Find where the chain ends, truncating a torn final line left by a crash."""
        files = list_chain_files(self.directory).get(self.chain, [])
        if not files:
            self._use_file(self._open_file(1), 1)
            _fsync_directory(self.directory)  # the new name itself must survive a crash
            return
        index, path = files[-1]
        last = _repair_tail(path)
        for _, earlier in reversed(files[:-1]):
            if last is not None:
                break
            last = _last_record(earlier)
        if last is not None:
            self._written_head = self._durable = (last.sequence + 1, last.hash)
        self._use_file(self._open_file(index), index)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tail(path: Path) -> tuple[bytes, int]:
    """The file's end, from the start of its last complete line (or its start), and that offset."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        window = _TAIL_WINDOW
        while True:
            offset = max(0, size - window)
            f.seek(offset)
            data = f.read()
            if offset == 0 or data.count(b"\n") >= 2:
                return data, offset
            window *= 4


def _split_tail(data: bytes) -> tuple[bytes | None, bytes]:
    """(last complete line or None, torn bytes after it) of a ``_tail`` window."""
    end = data.rfind(b"\n") + 1
    torn = data[end:]
    if end == 0:
        return None, torn
    start = data.rfind(b"\n", 0, end - 1) + 1  # 0 only when the window starts the file
    return data[start:end], torn


def _repair_tail(path: Path) -> ChainedRecord | None:
    data, offset = _tail(path)
    line, torn = _split_tail(data)
    if torn:
        keep = offset + len(data) - len(torn)
        log.warning(
            "audit: %s ended with a torn record (%d bytes after byte %d) left by an interrupted write; it was "
            "never acknowledged; truncating it so the chain continues from the last complete record",
            path,
            len(torn),
            keep,
        )
        with path.open("r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return _checked(path, line)


def _last_record(path: Path) -> ChainedRecord | None:
    data, _ = _tail(path)
    line, torn = _split_tail(data)
    if torn:
        raise AuditError(f"{path} is not the newest audit file but ends with a partial line; run `irl audit verify`")
    return _checked(path, line)


def _checked(path: Path, line: bytes | None) -> ChainedRecord | None:
    if line is None:
        return None
    try:
        return decode_record(line)
    except RecordError as exc:
        raise AuditError(
            f"{path}: the last record is complete but invalid ({exc}); that is not a torn write, so it is not "
            f"repaired automatically: run `irl audit verify {path.parent}` and move the damaged file aside"
        ) from None
