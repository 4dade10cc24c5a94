"""The durable spool: segment files on disk, a cursor, a size cap, recovery after a crash.

Layout of the spool directory::

    000000000007.seg   segments, oldest first (format: relay/spool/codec.py)
    cursor             what the platform has taken (two checked slots: relay/spool/cursor.py)
    lock               flock()ed while a relay has the spool open; holds its pid

Rules that make "nothing accepted is lost" true:

- append() writes every frame to the page cache before it returns, so a crash of the process
  loses nothing appended; an fsync policy decides what a power cut may lose.
- The cursor moves only on commit(); a segment is deleted only when the cursor has passed its
  last line (or drop-oldest drops it, counted). The cursor file is overwritten in place, at
  most every CURSOR_INTERVAL seconds on commit and on sync()/close(); a crash may therefore
  resend what was committed since the last write: at-least-once, never loss.
- A segment is sealed when it is closed (its line count written in a checked trailer). On open,
  sealed segments are trusted without reading them; every unsealed segment (the one being
  written when the relay died) is read, and a torn or corrupt tail is cut (truncated),
  counted and never returned.
- Damage found later, while reading (a bit flip in the middle of a segment): the frames after
  it are found again by their own checks (check byte and CRC, never by trusting the damaged
  length) and moved down over the damage; only the damaged lines are lost, counted
  (lines_lost_corrupt). Nothing that fails its checks is ever sent.
- Reading what was just appended is served from memory (relay/spool/recent.py, at most
  RECENT_BYTES of the latest appends): the lines as they were handed to append(), which are
  what the disk holds. Only reads go there; commits, drops, the cap and recovery work on the
  disk alone, so the memory copy changes nothing of the above.

The cap (max_bytes) bounds the size of all segment files together; 64 bytes of it stay free
for the seals and header a rotation or restart writes. When it is reached, drop-oldest deletes
the oldest whole segment (its untaken lines counted as dropped) and drop-newest refuses the
lines that do not fit (counted). A full file system before the cap is left as soon as
something can be freed: a fully delivered active segment is deleted (a new one started), and
drop-oldest deletes the oldest closed segments one at a time, as needed; what still does not fit
is refused and counted separately (lines_dropped_no_space). The spool also opens on a full
disk, with what is there (the active segment's file is then created by a later append).
These rules are decided in relay/spool/policy.py (pure) and carried out by
relay/spool/appender.py.

Threads: everything runs on the trio thread except sync(), which may run in a worker thread
(trio.to_thread.run_sync). The state sync() touches (dirty file descriptors, the directory
flag, the cursor file) is guarded by locks held only for a few instructions, so the trio thread
never waits for an fsync.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import trio

from relay.errors import SpoolError, SpoolTransient
from relay.spool.ages import WriteTimes
from relay.spool.appender import Appender
from relay.spool.cursor import CURSOR_INTERVAL, CursorFile
from relay.spool.files import SegmentReader, lock_directory
from relay.spool.policy import Limits
from relay.spool.reading import BatchReader
from relay.spool.recent import RecentWrites
from relay.spool.recovery import Recovered, recover
from relay.spool.stats import Counters, FsyncPolicy, Overflow, SpoolStats
from relay.spool.table import Batch, Position, SegmentTable
from relay.spool.writer import SegmentWriter

__all__ = ["Batch", "FsyncPolicy", "Overflow", "Position", "Spool", "SpoolStats"]

logger = logging.getLogger(__name__)

RECENT_BYTES = 8 << 20
"""Memory for the latest appends kept for read() (relay/spool/recent.py): payload plus a
fixed cost per line and per append."""


class Spool:
    """A durable, size-capped FIFO of syslog lines. Create with Spool.open().

    The facade: it owns the lifetimes (the directory lock, the descriptors, closing) and puts
    the parts together; the write path is the Appender's (relay/spool/appender.py, carrying out
    relay/spool/policy.py), the read path the BatchReader's (relay/spool/reading.py).
    """

    def __init__(
        self,
        directory: Path,
        *,
        limits: Limits,
        fsync: FsyncPolicy,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        lock_fd: int,
        dir_fd: int,
        recent_bytes: int,
        cursor_file: CursorFile,
        table: SegmentTable,
    ) -> None:
        self._dir = directory
        self._limits = limits
        self._fsync = FsyncPolicy(fsync)
        self._clock = clock
        self._wall_clock = wall_clock
        self._write_times = WriteTimes()
        self._lock_fd = lock_fd
        self._closed = False

        self._table = table
        self._files = SegmentWriter(directory, dir_fd=dir_fd, fsync=self._fsync)
        reader = SegmentReader(directory)
        self._counts = Counters()
        self._readable: trio.Event | None = None
        self._recent = RecentWrites(recent_bytes)
        self._appender = Appender(
            directory,
            limits=limits,
            table=table,
            files=self._files,
            reader=reader,
            recent=self._recent,
            counts=self._counts,
            clock=clock,
        )
        self._batches = BatchReader(
            table=table,
            files=reader,
            recent=self._recent,
            counts=self._counts,
            path=self._files.path,
            normalize_cursor=self._appender.normalize_cursor,
        )

        # sync() runs in a worker thread (the writer guards the descriptors it fsyncs);
        # _sync_lock makes syncs run one after another, so a sync that returns has covered
        # everything appended before it started, even if another sync was in flight.
        self._sync_lock = threading.Lock()
        self._cursor_file = cursor_file

    # ----------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 32 << 20,
        overflow: Overflow = Overflow.DROP_OLDEST,
        fsync: FsyncPolicy = FsyncPolicy.INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        recent_bytes: int = RECENT_BYTES,
    ) -> Spool:
        """Open (creating if needed) the spool in ``directory`` and recover it after a crash.

        ``wall_clock`` dates appends for the age of the oldest pending line (it is compared
        with segment files' modification times after a restart)."""
        limits = Limits.of(max_bytes=max_bytes, segment_bytes=segment_bytes, overflow=overflow)
        directory = Path(directory)
        lock_fd = lock_directory(directory)
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            os.close(lock_fd)
            raise SpoolError(f"cannot open spool directory {directory}: {exc.strerror}") from exc
        cursor_file = CursorFile(directory, clock=clock)
        spool: Spool | None = None
        try:
            found = recover(directory, cursor_file.load())
            spool = cls(
                directory,
                limits=limits,
                fsync=fsync,
                clock=clock,
                wall_clock=wall_clock,
                lock_fd=lock_fd,
                dir_fd=dir_fd,
                recent_bytes=recent_bytes,
                cursor_file=cursor_file,
                table=found.table,
            )
            spool._start(found)
        except BaseException as exc:
            if spool is not None:
                spool._close_fds()
            else:
                cursor_file.close()
                for fd in (dir_fd, lock_fd):
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if isinstance(exc, OSError):
                raise SpoolError(
                    f"cannot recover the spool in {directory}: {exc.strerror or exc}"
                ) from exc
            raise
        return spool

    def _start(self, found: Recovered) -> None:
        self._counts.corrupt_frames += found.corrupt_frames
        self._counts.torn_tails += found.torn_tails
        self._counts.truncated_bytes += found.truncated_bytes
        self._counts.segments_deleted_on_open += found.segments_deleted
        if found.removed:
            self._files.directory_changed()
        self._date_recovered()
        self._appender.start(found.next_segment)
        self._appender.normalize_cursor()
        self._appender.trim_to_cap()
        if self._cursor_file.open(self._table.cursor):
            self._files.directory_changed()
        logger.info(
            "spool opened",
            extra={
                "event": "spool_opened",
                "directory": str(self._dir),
                "segments": len(self._table.segments),
                "pending_lines": self._table.pending_lines,
                "cursor": f"{self._table.cursor.segment}:{self._table.cursor.offset}",
            },
        )

    def _date_recovered(self) -> None:
        """Recovered lines are dated by their segment file's mtime: written by then."""
        for seg in self._table.segments:
            if seg.lines:
                try:
                    written = os.stat(self._files.path(seg.id)).st_mtime
                except OSError:
                    written = self._wall_clock()
                self._write_times.written((seg.id, seg.lines), written)

    # ----------------------------------------------------------------------------- writing

    def append(self, lines: Sequence[bytes]) -> int:
        """Write one frame per line to the page cache; return how many lines were taken.

        Raises ValueError for a line over codec.MAX_LINE, SpoolError if the disk fails.
        """
        if self._closed:
            self._check_open()
        accepted = self._appender.append(lines)
        if accepted:
            active = self._table.segments[-1]
            self._write_times.written((active.id, active.lines), self._wall_clock())
            if self._readable is not None:
                self._readable.set()
                self._readable = None
        return accepted

    async def write(self, lines: Sequence[bytes]) -> int:
        """append(), then with fsync ALWAYS wait until the lines are on disk."""
        accepted = self.append(lines)
        if accepted and self._fsync is FsyncPolicy.ALWAYS:
            await trio.to_thread.run_sync(self.sync)
        return accepted

    # ----------------------------------------------------------------------------- reading

    def read(self, start: Position | None = None, max_bytes: int = 256 << 10) -> Batch:
        """Up to ``max_bytes`` of lines from ``start`` (the cursor if None); never blocks.

        At least one line is returned when any is pending after ``start``; a batch never spans
        two segments. An empty batch (start == end) means nothing is pending after ``start``.
        """
        self._check_open()
        try:
            return self._batches.read(start, max_bytes)
        except OSError as exc:
            raise SpoolTransient(f"cannot read the spool in {self._dir}: {exc}") from exc

    async def wait_readable(self, after: Position) -> None:
        """Return once a line is pending after ``after``."""
        while True:
            self._check_open()
            if self._table.has_data_after(after):
                return
            if self._readable is None:
                self._readable = trio.Event()
            await self._readable.wait()

    def commit(self, position: Position) -> None:
        """Everything before ``position`` has been delivered: move the cursor past it."""
        self._check_open()
        cursor = self._table.cursor
        if position <= cursor:
            return  # stale (already committed, or dropped by drop-oldest)
        try:
            i, target = self._table.commit_target(position, self._batches.index_of)
        except OSError as exc:
            raise SpoolTransient(f"cannot read the spool in {self._dir}: {exc}") from exc
        before = self._table.pending_lines
        for _ in range(i):
            self._appender.forget(self._table.pop_oldest())
        self._table.cursor = target
        self._appender.normalize_cursor()
        self._recent.discard_before(self._table.cursor.segment, self._table.cursor.offset)
        self._counts.lines_committed += before - self._table.pending_lines
        now = self._clock()
        if now - self._cursor_file.written_at >= CURSOR_INTERVAL:
            self._write_cursor(durable=False, now=now, wait=False)

    @property
    def cursor(self) -> Position:
        return self._table.cursor

    @property
    def head(self) -> Position:
        return self._table.head

    def statistics(self) -> SpoolStats:
        cursor = self._table.cursor
        return self._counts.snapshot(
            self._table,
            max_bytes=self._limits.max_bytes,
            oldest_pending_written_at=self._write_times.oldest_pending(
                (cursor.segment, cursor.index)
            ),
        )

    # ----------------------------------------------------------------------------- durability

    def save_cursor(self) -> None:
        """Write the cursor file if the cursor moved since it was last written (no fsync).

        ``commit`` writes it at most every CURSOR_INTERVAL, so the last commits of a burst
        stay in memory; the service calls this every second so that a relay that went idle
        does not resend its whole last burst after a crash.
        """
        if not self._closed:
            self._write_cursor(durable=False, now=self._clock(), wait=False)

    def sync(self) -> None:
        """Make everything appended so far durable, and the cursor file with it.

        Safe to run in a worker thread while the trio thread appends, reads and commits.
        """
        with self._sync_lock:
            self._sync_locked(force_cursor=False)

    def _sync_locked(self, *, force_cursor: bool) -> None:
        try:
            if not self._files.sync_data():
                return  # closed
        except OSError as exc:
            raise SpoolTransient(f"cannot fsync the spool in {self._dir}: {exc}") from exc
        now = self._clock()
        if force_cursor or now - self._cursor_file.durable_at >= CURSOR_INTERVAL:
            self._write_cursor(durable=True, now=now, wait=True)
        self._files.sync_directory()
        self._counts.syncs += 1

    def _write_cursor(self, *, durable: bool, now: float, wait: bool) -> None:
        if self._cursor_file.write(self._table.cursor, durable=durable, now=now, wait=wait):
            self._files.directory_changed()

    # ----------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Seal the active segment, sync, persist the cursor and release the directory."""
        if self._closed:
            return
        with self._sync_lock:
            active = self._table.segments[-1]
            if active.lines:
                try:
                    self._files.seal_active(active)
                    self._table.sealed(active)
                except OSError as exc:
                    logger.warning(
                        "cannot seal spool segment",
                        extra={
                            "event": "spool_seal_failed",
                            "segment": active.id,
                            "error": str(exc),
                        },
                    )
            try:
                self._sync_locked(force_cursor=True)
            finally:
                if not active.lines:
                    self._files.discard_empty_active(active.id)
                self._closed = True
                self._close_fds()
                self._recent.clear()
        if self._readable is not None:
            self._readable.set()
            self._readable = None
        logger.info(
            "spool closed",
            extra={"event": "spool_closed", "pending_lines": self._table.pending_lines},
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _close_fds(self) -> None:
        self._closed = True
        self._batches.close()
        self._cursor_file.close()
        self._files.close()
        lock_fd, self._lock_fd = self._lock_fd, -1
        if lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"the spool in {self._dir} is closed")
