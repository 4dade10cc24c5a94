"""The spool's segment table: which segments exist, what they hold, where the cursor is.

Pure: no file is opened here. The facade and its parts (store.py, appender.py, reading.py,
recovery.py) do the I/O and tell the table what happened (a segment added, frames appended, a
segment sealed, or cut to what a repair kept); the table keeps the totals that statistics()
reports in O(1) and answers the position arithmetic (find, resolve, commit, normalise). What
a position means, and why a hand-made position is checked by reading, is said on Position.

Every segment the table gives up (normalise_cursor, pop_oldest) is returned to the caller,
which deletes its file: the table never decides alone that data is gone without the caller
seeing it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, SEAL_SIZE

__all__ = ["Batch", "Position", "Segment", "SegmentTable"]


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A frame boundary in the spool. Ordered by (segment, offset).

    ``index`` is how many lines of the segment lie before ``offset``. Positions handed out by
    the spool carry it so commit() and read() stay O(1); it takes no part in comparisons, and
    a hand-made position (index -1) is checked by reading the segment up to ``offset``.
    """

    segment: int
    offset: int
    index: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    lines: list[bytes]
    """Syslog lines without framing, in order."""
    start: Position
    """Where the first line starts."""
    end: Position
    """Just after the last line: read(end) for the next batch, commit(end) once delivered."""
    nbytes: int
    """Sum of len(line)."""

    def position_after(self, count: int) -> Position:
        """The position just after the first ``count`` lines (to commit part of a batch)."""
        if not 0 <= count <= len(self.lines):
            raise ValueError(f"a batch of {len(self.lines)} lines has no line {count}")
        if count == len(self.lines):
            return self.end
        # A batch never spans segments, so lines follow each other at fixed overhead.
        offset = self.start.offset + FRAME_HEADER_SIZE * count + sum(map(len, self.lines[:count]))
        index = self.start.index + count if self.start.index >= 0 else -1
        return Position(self.start.segment, offset, index)


@dataclass(slots=True)
class Segment:
    id: int
    data_end: int
    """Offset just past the last line frame."""
    lines: int
    sealed: bool = False

    @property
    def size(self) -> int:
        return self.data_end + (SEAL_SIZE if self.sealed else 0)


IndexOf = Callable[[Segment, int], int]
"""Line index at an offset of a segment, by reading it (BatchReader.index_of); ValueError
unless the offset is a frame boundary."""


class SegmentTable:
    """Segments oldest first (the last one is the active segment), the cursor, the totals."""

    __slots__ = ("cursor", "data_bytes", "disk_bytes", "segments", "total_lines")

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.cursor = Position(0, FILE_HEADER_SIZE, 0)
        # Totals over self.segments, kept as they change so statistics() is O(1).
        self.total_lines = 0
        self.data_bytes = 0  # sum of data_end - FILE_HEADER_SIZE
        self.disk_bytes = 0

    # ----------------------------------------------------------------------------- changes

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    def add(self, seg: Segment) -> None:
        self.segments.append(seg)
        self.total_lines += seg.lines
        self.data_bytes += seg.data_end - FILE_HEADER_SIZE
        self.disk_bytes += seg.size

    def appended(self, nbytes: int, lines: int) -> None:
        """``lines`` frames of ``nbytes`` bytes in all were written to the active segment."""
        active = self.segments[-1]
        active.data_end += nbytes
        active.lines += lines
        self.total_lines += lines
        self.data_bytes += nbytes
        self.disk_bytes += nbytes

    def sealed(self, seg: Segment) -> None:
        seg.sealed = True
        self.disk_bytes += SEAL_SIZE

    def cut(self, seg: Segment, at: int, lines_kept: int) -> int:
        """``seg`` was truncated at ``at`` (its seal, if any, gone too); returns lines lost."""
        lost = seg.lines - lines_kept
        self.total_lines -= lost
        self.data_bytes -= seg.data_end - at
        self.disk_bytes -= seg.size - at
        seg.data_end, seg.lines, seg.sealed = at, lines_kept, False
        return lost

    def pop_oldest(self) -> Segment:
        seg = self.segments.pop(0)
        self.total_lines -= seg.lines
        self.data_bytes -= seg.data_end - FILE_HEADER_SIZE
        self.disk_bytes -= seg.size
        return seg

    def normalize_cursor(self) -> list[Segment]:
        """Keep the cursor in the oldest segment; returns the closed segments it has passed
        (removed from the table: the caller deletes their files)."""
        gone: list[Segment] = []
        while len(self.segments) > 1 and self.cursor.offset >= self.segments[0].data_end:
            gone.append(self.pop_oldest())
            self.cursor = Position(self.segments[0].id, FILE_HEADER_SIZE, 0)
        first = self.segments[0]
        if self.cursor.segment != first.id:
            self.cursor = Position(first.id, FILE_HEADER_SIZE, 0)
        return gone

    def drop_oldest(self) -> tuple[Segment, int]:
        """Give up the oldest (closed) segment: returns it and its untaken lines."""
        oldest = self.segments[0]
        dropped = oldest.lines - self.cursor.index
        self.pop_oldest()
        self.cursor = Position(self.segments[0].id, FILE_HEADER_SIZE, 0)
        return oldest, dropped

    # ----------------------------------------------------------------------------- queries

    @property
    def head(self) -> Position:
        active = self.segments[-1]
        return Position(active.id, active.data_end, active.lines)

    @property
    def pending_lines(self) -> int:
        return self.total_lines - self.cursor.index

    @property
    def pending_bytes(self) -> int:
        pending_frame_bytes = self.data_bytes - (self.cursor.offset - FILE_HEADER_SIZE)
        return pending_frame_bytes - FRAME_HEADER_SIZE * self.pending_lines

    def find(self, segment: int) -> int:
        """Index in self.segments of the segment holding ``segment`` (the next one if it is
        gone; -1 if beyond the last)."""
        i = bisect.bisect_left(self.segments, segment, key=lambda s: s.id)
        return i if i < len(self.segments) else -1

    def resolve(self, start: Position | None, index_of: IndexOf) -> Position:
        """A readable position with its line index: at or after the cursor, never before."""
        cursor = self.cursor
        if start is None or start <= cursor:
            pos = cursor
        else:
            head = self.head
            if start > head:
                raise ValueError(f"cannot read from {start}: beyond the head of the spool {head}")
            seg = self.segments[self.find(start.segment)]
            if seg.id != start.segment:
                pos = Position(seg.id, FILE_HEADER_SIZE, 0)
            elif start.offset >= seg.data_end:
                pos = Position(seg.id, seg.data_end, seg.lines)
            elif start.index >= 0:
                pos = start
            else:
                pos = Position(seg.id, start.offset, index_of(seg, start.offset))
        # Past the end of a closed segment means the start of the next one.
        i = self.find(pos.segment)
        while pos.offset >= self.segments[i].data_end and i + 1 < len(self.segments):
            i += 1
            pos = Position(self.segments[i].id, FILE_HEADER_SIZE, 0)
        return pos

    def commit_target(self, position: Position, index_of: IndexOf) -> tuple[int, Position]:
        """Where commit(``position``) moves the cursor, and how many whole segments before it
        go. ``position`` must lie after the cursor."""
        head = self.head
        if position > head:
            raise ValueError(f"cannot commit {position}: beyond the head of the spool {head}")
        i = self.find(position.segment)
        seg = self.segments[i]
        if seg.id != position.segment:
            offset, index = FILE_HEADER_SIZE, 0  # a gap left by recovery: all before seg
        elif position.offset >= seg.data_end:
            offset, index = seg.data_end, seg.lines  # clamp: the segment was cut under us
        elif position.index >= 0:
            offset, index = position.offset, position.index
        else:
            offset, index = position.offset, index_of(seg, position.offset)
        return i, Position(seg.id, offset, index)

    def has_data_after(self, after: Position) -> bool:
        pos = self.cursor if after <= self.cursor else after
        i = self.find(pos.segment)
        if i < 0:
            return False  # beyond the head
        seg = self.segments[i]
        if seg.id == pos.segment and pos.offset >= seg.data_end:
            i += 1
        return any(seg.lines for seg in self.segments[i:])
