"""When the spooled lines were written, to tell the age of the oldest one not yet delivered.

Pure: the facade (store.py) tells it the head after each append and the time, and asks with
the cursor. Frames carry no timestamp (the on-disk format stays as it is), so the times are
kept here, in memory, as buckets: a bucket is the end of a run of lines (segment, line index)
and the time of the first append in it. Appends within ``resolution`` seconds of a bucket's
start extend it, so the ledger holds at most one bucket per second of backlog, and an age
reads at most ``resolution`` high; past ``max_buckets`` neighbours are merged in pairs
(keeping the older time: an age may read higher, never lower, than the bucket says).

After a restart nothing of this survives: the facade adds one bucket per recovered segment,
dated by the segment file's last modification. Every line in it was written at or before
then, so an age taken from it is a lower bound.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["Bucket", "WriteTimes"]

Key = tuple[int, int]
"""(segment, line index): ordered as the lines are in the spool."""


@dataclass(frozen=True, slots=True)
class Bucket:
    end: Key
    """Just past the last line of the run."""
    written_at: float
    """When its first line was appended (wall clock, seconds since the epoch)."""


class WriteTimes:
    """Buckets oldest first; each covers the lines after the previous bucket's end."""

    __slots__ = ("_buckets", "max_buckets", "resolution")

    def __init__(self, *, resolution: float = 1.0, max_buckets: int = 4096) -> None:
        if max_buckets < 2:
            raise ValueError("max_buckets must be at least 2")
        self.resolution = resolution
        self.max_buckets = max_buckets
        self._buckets: deque[Bucket] = deque()

    def written(self, head: Key, now: float) -> None:
        """Lines up to ``head`` were appended at ``now``."""
        buckets = self._buckets
        if buckets:
            last = buckets[-1]
            if head <= last.end:
                return  # nothing new (or a head the spool moved back: already covered)
            if now - last.written_at < self.resolution:
                buckets[-1] = Bucket(head, last.written_at)
                return
        buckets.append(Bucket(head, now))
        if len(buckets) > self.max_buckets:
            self._halve()

    def oldest_pending(self, cursor: Key) -> float | None:
        """When the line at ``cursor`` (the oldest not delivered) was written; None if no
        bucket covers it (nothing pending). Buckets wholly before the cursor are forgotten."""
        buckets = self._buckets
        while buckets and buckets[0].end <= cursor:
            buckets.popleft()
        return buckets[0].written_at if buckets else None

    def __len__(self) -> int:
        return len(self._buckets)

    def _halve(self) -> None:
        old = list(self._buckets)
        merged = [Bucket(old[i + 1].end, old[i].written_at) for i in range(0, len(old) - 1, 2)]
        if len(old) % 2:
            merged.append(old[-1])
        self._buckets = deque(merged)


def age(written_at: float | None, now: float) -> float:
    """Seconds since ``written_at``, 0 when nothing is pending (or the clock stepped back)."""
    return 0.0 if written_at is None else max(0.0, now - written_at)
