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

from relay.errors import SpoolError
from relay.spool import codec
from relay.spool.appender import Appender
from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, Stop
from relay.spool.cursor import CURSOR_INTERVAL, CursorFile
from relay.spool.files import (
    SegmentReader,
    compact,
    cut_segment,
    lock_directory,
    salvage,
    scan,
    seal_segment,
)
from relay.spool.policy import Limits
from relay.spool.recent import RecentWrites
from relay.spool.recovery import Recovered, recover
from relay.spool.stats import Counters, FsyncPolicy, Overflow, SpoolStats
from relay.spool.table import Batch, Position, Segment, SegmentTable
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
    relay/spool/policy.py).
    """

    def __init__(
        self,
        directory: Path,
        *,
        limits: Limits,
        fsync: FsyncPolicy,
        clock: Callable[[], float],
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
        self._lock_fd = lock_fd
        self._closed = False

        self._table = table
        self._files = SegmentWriter(directory, dir_fd=dir_fd, fsync=self._fsync)
        self._reader = SegmentReader(directory)
        self._counts = Counters()
        self._readable: trio.Event | None = None
        self._recent = RecentWrites(recent_bytes)
        self._appender = Appender(
            directory,
            limits=limits,
            table=table,
            files=self._files,
            reader=self._reader,
            recent=self._recent,
            counts=self._counts,
            clock=clock,
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
        recent_bytes: int = RECENT_BYTES,
    ) -> Spool:
        """Open (creating if needed) the spool in ``directory`` and recover it after a crash."""
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

    # ----------------------------------------------------------------------------- writing

    def append(self, lines: Sequence[bytes]) -> int:
        """Write one frame per line to the page cache; return how many lines were taken.

        Raises ValueError for a line over codec.MAX_LINE, SpoolError if the disk fails.
        """
        if self._closed:
            self._check_open()
        accepted = self._appender.append(lines)
        if accepted and self._readable is not None:
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
            return self._read(start, max_bytes)
        except OSError as exc:
            raise SpoolError(f"cannot read the spool in {self._dir}: {exc}") from exc

    def _read(self, start: Position | None, max_bytes: int) -> Batch:
        # Bounded: each pass either returns or cuts a segment, which moves ``pos`` forward.
        for _ in range(len(self._table.segments) + 2):
            pos = self._table.resolve(start, self._index_of)
            seg = self._table.segments[self._table.find(pos.segment)]
            available = seg.data_end - pos.offset
            if available <= 0:
                return Batch(lines=[], start=pos, end=pos, nbytes=0)
            # Frames read at once: the payload asked for, plus room for the frame headers.
            chunk_limit = max_bytes + (max_bytes >> 4) + FRAME_HEADER_SIZE
            recent = self._recent.take(pos.segment, pos.offset, max_bytes, chunk_limit)
            if recent is not None:
                end = Position(seg.id, recent.end_offset, recent.end_index)
                return Batch(lines=recent.lines, start=pos, end=end, nbytes=recent.nbytes)
            want = min(available, chunk_limit)
            kept = self._recent.first(seg.id)
            if kept is not None and kept > pos.offset:
                want = min(want, kept - pos.offset)  # then the next read comes from memory
            fd = self._reader.fd(seg.id)
            chunk = os.pread(fd, want, pos.offset)
            decoded = codec.decode_frames(chunk, max_bytes=max_bytes)
            if decoded.count == 0 and decoded.stop is Stop.PARTIAL and decoded.need <= available:
                # One line longer than the chunk: read exactly that frame.
                chunk = os.pread(fd, decoded.need, pos.offset)
                decoded = codec.decode_frames(chunk, max_bytes=max_bytes)
            # [pos, data_end) holds only whole frames we wrote: no line where one is due, a
            # failed check, or a frame running past data_end is damage.
            damaged = (
                decoded.count == 0
                or decoded.stop is Stop.CORRUPT
                or decoded.stop is Stop.SEAL
                or (
                    decoded.stop is Stop.PARTIAL
                    and pos.offset + decoded.end + decoded.need > seg.data_end
                )
            )
            if damaged:
                self._salvage(seg, pos.offset + decoded.end, pos.index + decoded.count)
            if decoded.count:
                end = Position(seg.id, pos.offset + decoded.end, pos.index + decoded.count)
                return Batch(lines=decoded.lines, start=pos, end=end, nbytes=decoded.nbytes)
            start = pos
        raise AssertionError("spool read did not converge")  # pragma: no cover

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
            i, target = self._table.commit_target(position, self._index_of)
        except OSError as exc:
            raise SpoolError(f"cannot read the spool in {self._dir}: {exc}") from exc
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
        return self._counts.snapshot(self._table, max_bytes=self._limits.max_bytes)

    def _index_of(self, seg: Segment, offset: int) -> int:
        """Line index at ``offset`` in ``seg``; ValueError unless it is a frame boundary."""
        if offset <= FILE_HEADER_SIZE:
            return 0
        cursor = self._table.cursor
        start, count = FILE_HEADER_SIZE, 0
        if cursor.segment == seg.id and cursor.offset <= offset:
            start, count = cursor.offset, cursor.index
        end, count, _ = scan(self._reader.fd(seg.id), start, count, offset)
        if end != offset:
            raise ValueError(f"{seg.id}:{offset} is not a frame boundary in the spool")
        return count

    def _salvage(self, seg: Segment, at: int, lines_before: int) -> None:
        """A frame at ``at`` failed its checks while being read: keep every intact frame after
        it, skip (and count) only the damage.

        The frames that follow the damage are found by their own checks (files.find_frame)
        and moved down over it, so the segment holds only whole frames again and every
        position before ``at`` stays valid. The seal goes first: a crash during the move
        leaves an unsealed segment, which the next open reads and cuts at the first damage.
        Nothing corrupt is ever sent: only frames that pass their checks are kept.
        """
        path = self._files.path(seg.id)
        was_sealed = seg.sealed
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            cut_segment(fd, seg.data_end)  # the seal, if any
            runs = salvage(fd, at, seg.data_end)
            end = compact(fd, runs, at)
            kept = lines_before + sum(count for _, _, count in runs)
            skipped_bytes = seg.data_end - end
            lost = self._table.cut(seg, end, kept)
            if seg is self._table.segments[-1]:
                cut_segment(fd, end)  # appends (O_APPEND) go on at the new end
            else:
                seal_segment(fd, seg.id, kept, end)
                self._table.sealed(seg)
        finally:
            os.close(fd)
        self._counts.corrupt_frames += 1
        self._counts.lines_lost_corrupt += lost
        self._counts.truncated_bytes += skipped_bytes
        logger.error(
            "corrupt data in spool segment: %d lines skipped, the %d intact lines after it kept",
            lost,
            kept - lines_before,
            extra={
                "event": "spool_corrupt_frame",
                "path": str(path),
                "offset": at,
                "lines_lost": lost,
                "bytes": skipped_bytes,
                "sealed": was_sealed,
            },
        )
        self._recent.clear()  # offsets after ``at`` moved
        self._appender.normalize_cursor()

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
            raise SpoolError(f"cannot fsync the spool in {self._dir}: {exc}") from exc
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
        self._reader.close()
        self._cursor_file.close()
        self._files.close()
        lock_fd, self._lock_fd = self._lock_fd, -1
        if lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"the spool in {self._dir} is closed")
