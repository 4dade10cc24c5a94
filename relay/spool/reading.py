"""The spool's read path: batches from memory or disk, and resynchronising past damage.

A read starts at a frame boundary. It is served from memory when it starts where a recent
append starts (relay/spool/recent.py), else from the segment file, whose frames are checked
again. [cursor, data_end) of a segment holds only whole frames the spool wrote, so a frame that
fails its checks there is damage (a bit flip, a bad block): the frames after it are found again
by their own checks and moved down over it, and only the damaged lines are lost, counted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from relay.spool import codec
from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, Stop
from relay.spool.files import SegmentReader, compact, cut_segment, salvage, scan, seal_segment
from relay.spool.recent import RecentWrites
from relay.spool.stats import Counters
from relay.spool.table import Batch, Position, Segment, SegmentTable

__all__ = ["BatchReader"]

logger = logging.getLogger(__name__)


class BatchReader:
    """read() and index_of() over the segment table; repairs damage it meets."""

    __slots__ = ("_counts", "_files", "_normalize_cursor", "_path", "_recent", "_table")

    def __init__(
        self,
        *,
        table: SegmentTable,
        files: SegmentReader,
        recent: RecentWrites,
        counts: Counters,
        path: Callable[[int], Path],
        normalize_cursor: Callable[[], None],
    ) -> None:
        self._table = table
        self._files = files
        self._recent = recent
        self._counts = counts
        self._path = path
        self._normalize_cursor = normalize_cursor

    def read(self, start: Position | None, max_bytes: int) -> Batch:
        """Spool.read(); raises OSError as it comes."""
        # Bounded: each pass either returns or repairs the damage at ``pos`` (salvage), after
        # which an intact frame or the end of the segment is there.
        for _ in range(len(self._table.segments) + 2):
            pos = self._table.resolve(start, self.index_of)
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
            fd = self._files.fd(seg.id)
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

    def index_of(self, seg: Segment, offset: int) -> int:
        """Line index at ``offset`` in ``seg``; ValueError unless it is a frame boundary."""
        if offset <= FILE_HEADER_SIZE:
            return 0
        cursor = self._table.cursor
        start, count = FILE_HEADER_SIZE, 0
        if cursor.segment == seg.id and cursor.offset <= offset:
            start, count = cursor.offset, cursor.index
        end, count, _ = scan(self._files.fd(seg.id), start, count, offset)
        if end != offset:
            raise ValueError(f"{seg.id}:{offset} is not a frame boundary in the spool")
        return count

    def close(self) -> None:
        self._files.close()

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
