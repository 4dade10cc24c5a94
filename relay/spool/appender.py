"""The spool's write path: lines in, frames on disk, and the segments it gives up.

The fast path (the active segment has room, under the cap) writes a whole append at once. The
rest goes line by line through the write policy (relay/spool/policy.py), which decides; this
module carries the decisions out: rotations, drop-oldest, refusals, and on a full file system
freeing what can be freed and retrying. Every drop and refusal is counted, and logged under its
own rate limit, so that one kind cannot hide another.

Every segment that leaves the table (delivered, dropped, recycled) goes through forget(), which
deletes its file; the facade's commit and the reader's salvage use it too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from relay.errors import SpoolTransient
from relay.logs import RateLimitedLog
from relay.spool import codec
from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE
from relay.spool.files import NO_SPACE, SegmentReader
from relay.spool.policy import Free, Limits, Step, free_disk, place_line, trim_on_open
from relay.spool.recent import RecentWrites
from relay.spool.stats import Counters
from relay.spool.table import Position, Segment, SegmentTable
from relay.spool.writer import SegmentWriter

__all__ = ["Appender"]

logger = logging.getLogger(__name__)


class Appender:
    """Appends to the active segment under the write policy; deletes what leaves the table."""

    __slots__ = ("_counts", "_dir", "_drop_log", "_files", "_limits", "_reader", "_recent", "table")

    def __init__(
        self,
        directory: Path,
        *,
        limits: Limits,
        table: SegmentTable,
        files: SegmentWriter,
        reader: SegmentReader,
        recent: RecentWrites,
        counts: Counters,
        clock: Callable[[], float],
    ) -> None:
        self._dir = directory
        self._limits = limits
        self.table = table
        self._files = files
        self._reader = reader
        self._recent = recent
        self._counts = counts
        # One limit per kind of drop, so that one kind cannot hide another.
        self._drop_log = RateLimitedLog(logger, clock=clock)

    # ----------------------------------------------------------------------------- appending

    def append(self, lines: Sequence[bytes]) -> int:
        """Write one frame per line to the page cache; return how many lines were taken."""
        count = len(lines)
        if not count:
            return 0
        data = codec.encode_frames(lines)
        size = len(data)
        table = self.table
        active = table.segments[-1]
        limits = self._limits
        if (
            active.data_end + size <= limits.segment_limit
            and table.disk_bytes + size <= limits.disk_limit
            and self._files.fd >= 0
        ):
            # The common case, kept short (Limits.fits_active inline): it runs for every
            # datagram's worth of lines.
            try:
                self._write_active(data, lines, size - FRAME_HEADER_SIZE * count)
                return count
            except OSError as exc:
                if exc.errno not in NO_SPACE:
                    raise SpoolTransient(
                        f"cannot write to the spool in {self._dir}: {exc}"
                    ) from exc
        return self._append_slow(lines)

    def _write_active(self, data: bytes, lines: Sequence[bytes], nbytes: int) -> None:
        """Write the frames ``data`` of ``lines`` (payload ``nbytes``) to the active segment."""
        active = self.table.segments[-1]
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
        self.table.appended(len(data), count)
        self._counts.lines_appended += count
        self._counts.bytes_appended += nbytes

    def _append_slow(self, lines: Sequence[bytes]) -> int:
        """Rotation, the cap, the overflow policy, and a full disk.

        A full disk is left as soon as something can be freed (policy.free_disk). After each
        freeing the rest of the lines is tried again, so a burst is refused only when nothing
        more can go, and then only what does not fit.
        """
        accepted = 0
        full: _DiskFull | None = None
        # Bounded: each pass frees a segment (there are at most that many) or ends.
        for _ in range(len(self.table.segments) + 2):
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
        """Line by line, as policy.place_line decides. Raises _DiskFull.

        Lines decided on are gathered and written together (flush), before any rotation or
        drop and at the end, so a burst costs a few writes, not one per line.
        """
        accepted = 0
        frames: list[bytes] = []
        frame_bytes = 0
        table = self.table

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
                    active = table.segments[-1]
                    step = place_line(
                        self._limits,
                        frame=len(frame),
                        active_end=active.data_end + frame_bytes,
                        active_used=bool(active.lines or frames),
                        disk_bytes=table.disk_bytes + frame_bytes,
                        segments=len(table.segments),
                    )
                    if step is not Step.DROP_OLDEST:
                        break
                    flush()
                    self.drop_oldest(disk_full=False)
                if step is Step.REFUSE:
                    refused = len(lines) - accepted
                    self._counts.lines_dropped_newest += refused
                    self._drop_log.emit(
                        "newest",
                        f"spool full (max_bytes {self._limits.max_bytes}): newest lines refused",
                        event="spool_full",
                        lines=refused,
                        dropped_total=self._counts.lines_dropped_newest,
                    )
                    break
                if step is Step.ROTATE:
                    flush()
                    self._rotate()
                frames.append(frame)
                frame_bytes += len(frame)
                accepted += 1
            flush()
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise SpoolTransient(f"cannot write to the spool in {self._dir}: {exc}") from exc
            raise _DiskFull(written=accepted - len(frames), error=exc) from exc
        return accepted

    def _append_what_fits(self, lines: Sequence[bytes]) -> int:
        """Nothing more can be freed: keep the lines that still fit, one by one."""
        accepted = 0
        if self._files.fd < 0:
            return 0
        active = self.table.segments[-1]
        for line in lines:
            if not self._limits.fits_segment(active_end=active.data_end, line=len(line)):
                break
            try:
                self._write_active(codec.encode_frames((line,)), (line,), len(line))
            except OSError as exc:
                if exc.errno not in NO_SPACE:
                    raise SpoolTransient(
                        f"cannot write to the spool in {self._dir}: {exc}"
                    ) from exc
                break
            accepted += 1
        return accepted

    # ----------------------------------------------------------------------------- freeing

    def _free_disk(self) -> bool:
        """The file system is full: free what can be freed. False if nothing could be."""
        table = self.table
        decision = free_disk(
            self._limits,
            segments=len(table.segments),
            active_lines=table.active.lines,
            delivered=table.cursor == table.head,
        )
        if decision is Free.RECYCLE_ACTIVE:
            self._recycle_active()
            return True
        if decision is Free.DROP_OLDEST:
            return self.drop_oldest(disk_full=True)
        return False

    def _recycle_active(self) -> None:
        """Every line of the active (and only) segment is delivered: delete it, so that its
        space is free, and go on in a new segment (created now if the disk lets us, else by
        the next append)."""
        table = self.table
        old = table.active
        self._files.retire_active()
        table.pop_oldest()
        table.add(Segment(old.id + 1, FILE_HEADER_SIZE, 0))
        table.cursor = Position(old.id + 1, FILE_HEADER_SIZE, 0)
        self.forget(old)
        logger.info(
            "disk full: the delivered spool segment was deleted to make room",
            extra={"event": "spool_segment_recycled", "segment": old.id, "lines": old.lines},
        )
        with contextlib.suppress(_DiskFull):
            self._open_active_or_full()

    def trim_to_cap(self) -> None:
        """On open: over the cap (it was lowered), make room now, counted like any drop."""
        table = self.table
        while trim_on_open(
            self._limits,
            disk_bytes=table.disk_bytes,
            segments=len(table.segments),
            active_lines=table.active.lines,
        ):
            self.drop_oldest(disk_full=False)

    def drop_oldest(self, *, disk_full: bool) -> bool:
        """Delete the oldest segment, counting its untaken lines. False if nothing to drop."""
        oldest = self.table.segments[0]
        if oldest is self.table.segments[-1]:
            if not oldest.lines:
                return False
            self._rotate()  # the active segment is the oldest: seal it so it can go
        seg, dropped = self.table.drop_oldest()
        self._counts.lines_dropped_oldest += dropped
        self.forget(seg)
        self.normalize_cursor()
        if disk_full:
            message = f"disk full under the spool in {self._dir}: oldest lines dropped"
        else:
            message = f"spool full (max_bytes {self._limits.max_bytes}): oldest lines dropped"
        self._drop_log.emit(
            ("oldest", disk_full),
            message,
            event="spool_disk_full" if disk_full else "spool_full",
            lines=dropped,
            dropped_total=self._counts.lines_dropped_oldest,
        )
        return True

    # ----------------------------------------------------------------------------- segments

    def start(self, segment: int) -> None:
        """Make ``segment`` the (new, empty) active segment; on a full disk its file is
        created by a later append."""
        self.table.add(Segment(segment, FILE_HEADER_SIZE, 0))
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

    def _open_active_or_full(self) -> None:
        try:
            self._open_active()
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise SpoolTransient(f"cannot write to the spool in {self._dir}: {exc}") from exc
            raise _DiskFull(written=0, error=exc) from exc

    def _open_active(self) -> None:
        """Create the active segment's file if it has none yet (the disk was full)."""
        if self._files.fd < 0:
            self._files.open_active(self.table.active.id)

    def _rotate(self) -> None:
        """Seal the active segment and start the next one."""
        old = self.table.segments[-1]
        seal_error = self._files.rotate(old, old.id + 1)
        if seal_error is None:
            self.table.sealed(old)
        else:
            logger.warning(
                "cannot seal spool segment",
                extra={"event": "spool_seal_failed", "segment": old.id, "error": str(seal_error)},
            )
        self.table.add(Segment(old.id + 1, FILE_HEADER_SIZE, 0))

    def forget(self, seg: Segment) -> None:
        """``seg`` left the table (delivered or dropped): delete its file."""
        self._recent.discard_before(seg.id, seg.data_end)
        self._reader.forget(seg.id)
        try:
            self._files.delete(seg.id)
        except OSError as exc:
            raise SpoolTransient(
                f"cannot delete spool segment {self._files.path(seg.id)}: {exc}"
            ) from exc

    def normalize_cursor(self) -> None:
        """Keep the cursor in the oldest segment, deleting closed segments it has passed."""
        for seg in self.table.normalize_cursor():
            self.forget(seg)


class _DiskFull(Exception):  # internal signal, never leaves the spool
    """The file system refused a write (ENOSPC, quota); ``written`` lines went in first."""

    def __init__(self, *, written: int, error: OSError) -> None:
        super().__init__(error.strerror)
        self.written = written
        self.error = error
