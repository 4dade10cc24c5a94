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
from relay.logs import RateLimitedLog
from relay.spool import codec
from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, SEAL_SIZE, Stop
from relay.spool.cursor import CURSOR_INTERVAL, CursorFile
from relay.spool.files import (
    NO_SPACE,
    SegmentReader,
    compact,
    cut_segment,
    lock_directory,
    salvage,
    scan,
    seal_segment,
)
from relay.spool.recent import RecentWrites
from relay.spool.recovery import recover
from relay.spool.stats import Counters, FsyncPolicy, Overflow, SpoolStats
from relay.spool.table import Batch, Position, Segment, SegmentTable
from relay.spool.writer import SegmentWriter

__all__ = ["Batch", "FsyncPolicy", "Overflow", "Position", "Spool", "SpoolStats"]

logger = logging.getLogger(__name__)

RECENT_BYTES = 8 << 20
"""Memory for the latest appends kept for read() (relay/spool/recent.py): payload plus a
fixed cost per line and per append."""


class Spool:
    """A durable, size-capped FIFO of syslog lines. Create with Spool.open()."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        overflow: Overflow,
        fsync: FsyncPolicy,
        clock: Callable[[], float],
        lock_fd: int,
        dir_fd: int,
        recent_bytes: int,
    ) -> None:
        self._dir = directory
        self._max_bytes = max_bytes
        # At least four segments fit under the cap, so drop-oldest frees at most a quarter.
        self._segment_limit = max(_MIN_SEGMENT, min(segment_bytes, max_bytes // 4))
        self._overflow = Overflow(overflow)
        self._fsync = FsyncPolicy(fsync)
        self._clock = clock
        self._lock_fd = lock_fd
        self._closed = False

        self._table = SegmentTable()
        self._files = SegmentWriter(directory, dir_fd=dir_fd, fsync=self._fsync)
        self._reader = SegmentReader(directory)

        self._counts = Counters()
        # One limit per kind of drop, so that one kind cannot hide another.
        self._drop_log = RateLimitedLog(logger, clock=clock)

        self._readable: trio.Event | None = None
        self._recent = RecentWrites(recent_bytes)

        # sync() runs in a worker thread (the writer guards the descriptors it fsyncs);
        # _sync_lock makes syncs run one after another, so a sync that returns has covered
        # everything appended before it started, even if another sync was in flight.
        self._sync_lock = threading.Lock()
        self._cursor_file = CursorFile(directory, clock=clock)

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
        if max_bytes < _MIN_MAX_BYTES:
            raise ValueError(f"spool max_bytes must be at least {_MIN_MAX_BYTES}")
        if segment_bytes < _MIN_SEGMENT:
            raise ValueError(f"spool segment_bytes must be at least {_MIN_SEGMENT}")
        directory = Path(directory)
        lock_fd = lock_directory(directory)
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            os.close(lock_fd)
            raise SpoolError(f"cannot open spool directory {directory}: {exc.strerror}") from exc
        spool = cls(
            directory,
            max_bytes=max_bytes,
            segment_bytes=segment_bytes,
            overflow=overflow,
            fsync=fsync,
            clock=clock,
            lock_fd=lock_fd,
            dir_fd=dir_fd,
            recent_bytes=recent_bytes,
        )
        try:
            spool._recover()
        except OSError as exc:
            spool._close_fds()
            raise SpoolError(
                f"cannot recover the spool in {directory}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            spool._close_fds()
            raise
        return spool

    def _recover(self) -> None:
        found = recover(self._dir, self._cursor_file.load())
        self._table = found.table
        self._counts.corrupt_frames += found.corrupt_frames
        self._counts.torn_tails += found.torn_tails
        self._counts.truncated_bytes += found.truncated_bytes
        self._counts.segments_deleted_on_open += found.segments_deleted
        if found.removed:
            self._files.directory_changed()
        self._start_active(found.next_segment)
        self._normalize_cursor()
        if self._overflow is Overflow.DROP_OLDEST:
            # Over the cap on open (it was lowered): make room now, counted like any drop.
            while self._table.disk_bytes > self._max_bytes and self._drop_oldest(disk_full=False):
                pass
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
        count = len(lines)
        if not count:
            return 0
        data = codec.encode_frames(lines)
        size = len(data)
        active = self._table.segments[-1]
        if (
            active.data_end + size <= self._segment_limit
            and self._table.disk_bytes + size + _RESERVE <= self._max_bytes
            and self._files.fd >= 0
        ):
            # The common case, kept short: it runs for every datagram's worth of lines.
            try:
                self._write_active(data, lines, size - FRAME_HEADER_SIZE * count)
                accepted = count
            except OSError as exc:
                if exc.errno not in NO_SPACE:
                    raise SpoolError(f"cannot write to the spool in {self._dir}: {exc}") from exc
                accepted = self._append_slow(lines)
        else:
            accepted = self._append_slow(lines)
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

    def _write_active(self, data: bytes, lines: Sequence[bytes], nbytes: int) -> None:
        """Write the frames ``data`` of ``lines`` (payload ``nbytes``) to the active segment."""
        active = self._table.segments[-1]
        count = len(lines)
        self._files.append(data, active.data_end)
        self._recent.add(
            segment=active.id,
            offset=active.data_end,
            index=active.lines,
            end=active.data_end + len(data),
            lines=list(lines),
            nbytes=nbytes,
        )
        self._table.appended(len(data), count)
        self._counts.lines_appended += count
        self._counts.bytes_appended += nbytes

    def _append_slow(self, lines: Sequence[bytes]) -> int:
        """Rotation, the cap, the overflow policy, and a full disk.

        A full disk is left as soon as something can be freed: a fully delivered active
        segment (the only one then), or with drop-oldest the oldest closed segment. After
        each freeing the rest of the lines is tried again, so a burst is refused only when
        nothing more can go, and then only what does not fit.
        """
        accepted = 0
        full: _DiskFull | None = None
        # Bounded: each pass frees a segment (there are at most that many) or ends.
        for _ in range(len(self._table.segments) + 2):
            try:
                return accepted + self._append_capped(lines[accepted:])
            except _DiskFull as exc:
                accepted += exc.written
                full = exc
            if not self._free_disk():
                break
        assert full is not None
        accepted += self._append_what_fits(lines[accepted:])
        refused = len(lines) - accepted
        if refused:
            self._counts.lines_dropped_no_space += refused
            self._drop_log.emit(
                "refused",
                f"disk full under the spool in {self._dir} ({full.error.strerror}): "
                "newest lines refused",
                event="spool_disk_full",
                lines=refused,
                dropped_total=self._counts.lines_dropped_no_space,
            )
        return accepted

    def _append_capped(self, lines: Sequence[bytes]) -> int:
        """Line by line: rotation, the cap and the overflow policy. Raises _DiskFull."""
        accepted = 0
        frames: list[bytes] = []
        frame_bytes = 0

        def flush() -> None:
            nonlocal frames, frame_bytes
            if frames:
                self._write_active(
                    b"".join(frames),
                    lines[accepted - len(frames) : accepted],
                    frame_bytes - FRAME_HEADER_SIZE * len(frames),
                )
                frames, frame_bytes = [], 0

        try:
            self._open_active()
            for line in lines:
                frame = codec.encode_frames((line,))
                while True:
                    active = self._table.segments[-1]
                    rotate = bool(active.lines or frames) and (
                        active.data_end + frame_bytes + len(frame) > self._segment_limit
                    )
                    need = len(frame) + (FILE_HEADER_SIZE + SEAL_SIZE if rotate else 0)
                    fits = self._table.disk_bytes + frame_bytes + need + _RESERVE <= self._max_bytes
                    if fits or self._overflow is not Overflow.DROP_OLDEST:
                        break
                    flush()
                    if not self._drop_oldest(disk_full=False):
                        break
                if not fits:
                    refused = len(lines) - accepted
                    self._counts.lines_dropped_newest += refused
                    self._drop_log.emit(
                        "newest",
                        f"spool full (max_bytes {self._max_bytes}): newest lines refused",
                        event="spool_full",
                        lines=refused,
                        dropped_total=self._counts.lines_dropped_newest,
                    )
                    break
                if rotate:
                    flush()
                    self._rotate()
                frames.append(frame)
                frame_bytes += len(frame)
                accepted += 1
            flush()
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise SpoolError(f"cannot write to the spool in {self._dir}: {exc}") from exc
            raise _DiskFull(written=accepted - len(frames), error=exc) from exc
        return accepted

    def _append_what_fits(self, lines: Sequence[bytes]) -> int:
        """Nothing more can be freed: keep the lines that still fit, one by one."""
        accepted = 0
        if self._files.fd < 0:
            return 0
        active = self._table.segments[-1]
        for line in lines:
            if active.data_end + FRAME_HEADER_SIZE + len(line) > self._segment_limit:
                break
            try:
                self._write_active(codec.encode_frames((line,)), (line,), len(line))
            except OSError as exc:
                if exc.errno not in NO_SPACE:
                    raise SpoolError(f"cannot write to the spool in {self._dir}: {exc}") from exc
                break
            accepted += 1
        return accepted

    def _free_disk(self) -> bool:
        """The file system is full: free what can be freed. False if nothing could be."""
        table = self._table
        active = table.active
        if active.lines and table.cursor == table.head and len(table.segments) == 1:
            self._recycle_active()
            return True
        if self._overflow is Overflow.DROP_OLDEST and len(table.segments) > 1:
            return self._drop_oldest(disk_full=True)
        return False

    def _recycle_active(self) -> None:
        """Every line of the active (and only) segment is delivered: delete it, so that its
        space is free, and go on in a new segment (created now if the disk lets us, else by
        the next append)."""
        table = self._table
        old = table.active
        self._files.retire_active()
        table.pop_oldest()
        table.add(Segment(old.id + 1, FILE_HEADER_SIZE, 0))
        table.cursor = Position(old.id + 1, FILE_HEADER_SIZE, 0)
        self._forget(old)
        logger.info(
            "disk full: the delivered spool segment was deleted to make room",
            extra={"event": "spool_segment_recycled", "segment": old.id, "lines": old.lines},
        )
        with contextlib.suppress(_DiskFull):
            self._open_active_or_full()

    def _open_active_or_full(self) -> None:
        try:
            self._open_active()
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise SpoolError(f"cannot write to the spool in {self._dir}: {exc}") from exc
            raise _DiskFull(written=0, error=exc) from exc

    def _open_active(self) -> None:
        """Create the active segment's file if it has none yet (the disk was full)."""
        if self._files.fd < 0:
            self._files.open_active(self._table.active.id)

    def _rotate(self) -> None:
        """Seal the active segment and start the next one."""
        old = self._table.segments[-1]
        seal_error = self._files.rotate(old, old.id + 1)
        if seal_error is None:
            self._table.sealed(old)
        else:
            logger.warning(
                "cannot seal spool segment",
                extra={"event": "spool_seal_failed", "segment": old.id, "error": str(seal_error)},
            )
        self._table.add(Segment(old.id + 1, FILE_HEADER_SIZE, 0))

    def _start_active(self, segment: int) -> None:
        self._table.add(Segment(segment, FILE_HEADER_SIZE, 0))
        try:
            self._open_active_or_full()
        except _DiskFull as full:
            # Start with what is there: deliveries free space, and appends retry the file.
            logger.warning(
                "disk full under the spool in %s (%s): starting without room for new lines",
                self._dir,
                full.error.strerror,
                extra={"event": "spool_disk_full", "directory": str(self._dir)},
            )

    def _drop_oldest(self, *, disk_full: bool) -> bool:
        """Delete the oldest segment, counting its untaken lines. False if nothing to drop."""
        oldest = self._table.segments[0]
        if oldest is self._table.segments[-1]:
            if not oldest.lines:
                return False
            self._rotate()  # the active segment is the oldest: seal it so it can go
        seg, dropped = self._table.drop_oldest()
        self._counts.lines_dropped_oldest += dropped
        self._forget(seg)
        self._normalize_cursor()
        if disk_full:
            message = f"disk full under the spool in {self._dir}: oldest lines dropped"
        else:
            message = f"spool full (max_bytes {self._max_bytes}): oldest lines dropped"
        self._drop_log.emit(
            ("oldest", disk_full),
            message,
            event="spool_disk_full" if disk_full else "spool_full",
            lines=dropped,
            dropped_total=self._counts.lines_dropped_oldest,
        )
        return True

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
            self._forget(self._table.pop_oldest())
        self._table.cursor = target
        self._normalize_cursor()
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
        return self._counts.snapshot(self._table, max_bytes=self._max_bytes)

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
        path = self._path(seg.id)
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
        self._normalize_cursor()

    # ----------------------------------------------------------------------------- segments

    def _path(self, segment: int) -> Path:
        return self._files.path(segment)

    def _forget(self, seg: Segment) -> None:
        """``seg`` left the table (delivered or dropped): delete its file."""
        self._recent.discard_before(seg.id, seg.data_end)
        self._reader.forget(seg.id)
        try:
            self._files.delete(seg.id)
        except OSError as exc:
            raise SpoolError(f"cannot delete spool segment {self._path(seg.id)}: {exc}") from exc

    def _normalize_cursor(self) -> None:
        """Keep the cursor in the oldest segment, deleting closed segments it has passed."""
        for seg in self._table.normalize_cursor():
            self._forget(seg)

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


class _DiskFull(Exception):  # internal signal, never leaves the spool
    """The file system refused a write (ENOSPC, quota); ``written`` lines went in first."""

    def __init__(self, *, written: int, error: OSError) -> None:
        super().__init__(error.strerror)
        self.written = written
        self.error = error


_MIN_SEGMENT = FILE_HEADER_SIZE + SEAL_SIZE + 64
# Room kept free under the cap: the active segment's seal, plus the header and seal of one
# more segment, which a restart creates (it never appends to a segment it did not create).
_RESERVE = SEAL_SIZE + FILE_HEADER_SIZE + SEAL_SIZE
_MIN_MAX_BYTES = 4 * _MIN_SEGMENT
