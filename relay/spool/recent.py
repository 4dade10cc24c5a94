"""The spool's most recent appends, kept in memory for the reader (pure: no files, no clock).

In steady state the forwarder reads lines a few milliseconds after they were appended.
Reading them back from the page cache and checking every frame again cost about 1.2 µs a line,
more than the rest of the forwarder together. So the spool also keeps the lines of its latest
appends here, up to a byte limit, and serves a read from memory when it starts exactly where
a kept append (or an earlier read of one) starts. The disk copy stays the only one that
counts: nothing is committed, dropped or recovered from here, and a reader that falls behind
the kept region, or a spool that was just opened, reads the disk as before.

Every position handed out from here is a frame boundary with its line index, like the ones a
disk read hands out, so a reader can move between the two freely.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate

from relay.spool.codec import FRAME_HEADER_SIZE

# What the limit counts besides the payload: a bytes object and its list slot per line, the
# bookkeeping per append (CPython, 64-bit; rounded up). Empty lines cost memory too.
LINE_COST = 48
WRITE_COST = 512


@dataclass(slots=True, eq=False)
class _Write:
    """One append's lines: frames from ``offset`` to ``end`` in ``segment``."""

    segment: int
    offset: int
    index: int  # line index (within the segment) of the first line
    end: int
    lines: list[bytes]
    nbytes: int
    cost: int  # what it counts against the limit
    # Keys of RecentWrites._at that point into this write (its start and any split points).
    keys: list[tuple[int, int]] = field(default_factory=list)
    # Payload bytes before each line, computed on the first read that stops inside the write.
    before: list[int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Taken:
    lines: list[bytes]
    nbytes: int
    end_offset: int
    end_index: int


class RecentWrites:
    """Bounded FIFO of appended lines, looked up by the frame boundary a read starts at.

    ``limit_bytes`` bounds the payload plus LINE_COST per line and WRITE_COST per append."""

    __slots__ = ("_at", "_limit", "_memory", "_writes")

    def __init__(self, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self._writes: deque[_Write] = deque()
        self._at: dict[tuple[int, int], tuple[_Write, int]] = {}
        self._memory = 0

    @property
    def memory(self) -> int:
        """What the kept appends count against the limit."""
        return self._memory

    def __len__(self) -> int:
        return len(self._writes)

    def add(
        self, *, segment: int, offset: int, index: int, end: int, lines: list[bytes], nbytes: int
    ) -> None:
        """Remember an append of ``lines`` (payload ``nbytes``) written at [offset, end)."""
        if self._limit <= 0 or not lines:
            return
        cost = nbytes + LINE_COST * len(lines) + WRITE_COST
        write = _Write(segment, offset, index, end, lines, nbytes, cost)
        self._writes.append(write)
        self._key(write, offset, 0)
        self._memory += cost
        while self._memory > self._limit:
            self._pop_oldest()

    def take(self, segment: int, offset: int, max_bytes: int, max_frame_bytes: int) -> Taken | None:
        """The lines from the boundary ``segment``:``offset`` on, never past the end of
        ``segment``; None when not kept here. At least one line; beyond it, at most
        ``max_bytes`` of payload in at most ``max_frame_bytes`` of frames (the limits of a
        read from disk, so that both hand out the same batches)."""
        hit = self._at.get((segment, offset))
        if hit is None:
            return None
        write, k = hit
        lines: list[bytes] = []
        nbytes = frame_bytes = 0
        end_offset, end_index = offset, -1
        while True:
            count = len(write.lines)
            skip = write.before[k] if write.before and k else 0  # k > 0: a split point
            start = write.offset + FRAME_HEADER_SIZE * k + skip
            rest, frames_rest = write.nbytes - skip, write.end - start
            if nbytes + rest <= max_bytes and frame_bytes + frames_rest <= max_frame_bytes:
                j = count
            else:
                before = self._before(write)
                by_payload = bisect_right(before, skip + max_bytes - nbytes) - 1
                by_frames = (
                    bisect_right(
                        range(count + 1),
                        start - write.offset + max_frame_bytes - frame_bytes,
                        key=lambda i: FRAME_HEADER_SIZE * i + before[i],
                    )
                    - 1
                )
                j = min(by_payload, by_frames)
                if not lines:
                    j = max(j, k + 1)  # at least one line
            if j <= k:
                break
            lines += write.lines[k:j]
            if j == count:
                nbytes += rest
                frame_bytes += frames_rest
                end_offset, end_index = write.end, write.index + count
                following = self._at.get((segment, write.end))
                if following is None or nbytes >= max_bytes:
                    break
                write, k = following
                continue
            # Only part of this write fits: stop inside it, and remember where.
            before = self._before(write)
            nbytes += before[j] - skip
            end_offset = write.offset + FRAME_HEADER_SIZE * j + before[j]
            end_index = write.index + j
            self._key(write, end_offset, j)
            break
        return Taken(lines=lines, nbytes=nbytes, end_offset=end_offset, end_index=end_index)

    def first(self, segment: int) -> int | None:
        """Where the oldest kept write starts, if it is in ``segment``: a disk read of
        ``segment`` that stops there lets the next read come from memory."""
        if self._writes and self._writes[0].segment == segment:
            return self._writes[0].offset
        return None

    def discard_before(self, segment: int, offset: int) -> None:
        """Forget writes that end at or before ``segment``:``offset`` (committed, or dropped)."""
        writes = self._writes
        while writes and (writes[0].segment, writes[0].end) <= (segment, offset):
            self._pop_oldest()

    def clear(self) -> None:
        self._writes.clear()
        self._at.clear()
        self._memory = 0

    @staticmethod
    def _before(write: _Write) -> list[int]:
        if write.before is None:
            write.before = [0, *accumulate(map(len, write.lines))]
        return write.before

    def _key(self, write: _Write, offset: int, k: int) -> None:
        key = (write.segment, offset)
        if key not in self._at:
            write.keys.append(key)
        self._at[key] = (write, k)

    def _pop_oldest(self) -> None:
        write = self._writes.popleft()
        self._memory -= write.cost
        for key in write.keys:
            if self._at.get(key, (None,))[0] is write:
                del self._at[key]
