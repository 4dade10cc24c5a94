"""The spool's write policy, as pure decisions: sizes in, what to do out.

The cap (max_bytes) bounds the size of all segment files together; RESERVE bytes of it stay
free for the seals and header a rotation or restart writes. The write path
(relay/spool/appender.py) asks here before each line that does not take the fast path, and on
a full file system, and carries out the answer (files, counters, logs): this module opens no
file and keeps no state, so every rule of the cap, the overflow policy and a full disk can be
tested by tables.

- place_line(): where the next line goes. It fits: APPEND it, or ROTATE first when the active
  segment is full. It does not fit under the cap: with drop-oldest, DROP_OLDEST (the oldest
  whole segment, its untaken lines counted as dropped) and ask again; with drop-newest, or
  when nothing is left to drop, REFUSE it and the rest of the append (counted).
- free_disk(): the file system refused a write before the cap was reached. A fully delivered
  active segment (the only one then) is RECYCLED (deleted, a new one started); with
  drop-oldest the oldest closed segment is dropped, one at a time, as needed; otherwise
  NOTHING can be freed and what does not fit is refused, counted as no_space.
- trim_on_open(): the cap was lowered since the spool was written: with drop-oldest, drop the
  oldest segments until it holds again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, SEAL_SIZE
from relay.spool.stats import Overflow

__all__ = [
    "MIN_MAX_BYTES",
    "MIN_SEGMENT",
    "RESERVE",
    "Free",
    "Limits",
    "Step",
    "free_disk",
    "place_line",
    "trim_on_open",
]

MIN_SEGMENT = FILE_HEADER_SIZE + SEAL_SIZE + 64
RESERVE = SEAL_SIZE + FILE_HEADER_SIZE + SEAL_SIZE
"""Room kept free under the cap: the active segment's seal, plus the header and seal of one
more segment, which a restart creates (it never appends to a segment it did not create)."""
MIN_MAX_BYTES = 4 * MIN_SEGMENT


class Step(StrEnum):
    APPEND = "append"  # write the line to the active segment
    ROTATE = "rotate"  # seal the active segment, start the next one, write the line there
    DROP_OLDEST = "drop-oldest"  # drop the oldest segment (counted), then ask again
    REFUSE = "refuse"  # refuse this line and the rest of the append (counted)


class Free(StrEnum):
    RECYCLE_ACTIVE = "recycle-active"  # delete the delivered active segment, start a new one
    DROP_OLDEST = "drop-oldest"  # drop the oldest closed segment (counted)
    NOTHING = "nothing"  # nothing can be freed: refuse what does not fit (counted)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The sizes and the overflow policy the spool was opened with."""

    max_bytes: int
    segment_limit: int
    """Where the active segment is rotated: segment_bytes, but at least four segments fit
    under the cap, so that drop-oldest frees at most a quarter of it at a time."""
    overflow: Overflow
    disk_limit: int
    """max_bytes - RESERVE: what the segment files may take before the next line."""

    @classmethod
    def of(cls, *, max_bytes: int, segment_bytes: int, overflow: Overflow) -> Limits:
        """Raises ValueError for sizes too small to hold a line."""
        if max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"spool max_bytes must be at least {MIN_MAX_BYTES}")
        if segment_bytes < MIN_SEGMENT:
            raise ValueError(f"spool segment_bytes must be at least {MIN_SEGMENT}")
        return cls(
            max_bytes=max_bytes,
            segment_limit=max(MIN_SEGMENT, min(segment_bytes, max_bytes // 4)),
            overflow=Overflow(overflow),
            disk_limit=max_bytes - RESERVE,
        )

    def fits_active(self, *, active_end: int, disk_bytes: int, size: int) -> bool:
        """``size`` bytes of frames go into the active segment without a rotation or a drop.
        (The facade's fast path tests the same inline: it runs for every datagram.)"""
        return active_end + size <= self.segment_limit and disk_bytes + size <= self.disk_limit

    def fits_segment(self, *, active_end: int, line: int) -> bool:
        """A line of ``line`` bytes still fits in the active segment (on a full disk, once
        nothing more can be freed, only what fits there is tried)."""
        return active_end + FRAME_HEADER_SIZE + line <= self.segment_limit


def place_line(
    limits: Limits,
    *,
    frame: int,
    active_end: int,
    active_used: bool,
    disk_bytes: int,
    segments: int,
) -> Step:
    """Where a frame of ``frame`` bytes goes.

    ``active_end`` and ``disk_bytes`` include the frames already decided on in this append;
    ``active_used`` is whether the active segment holds (or is about to hold) a line; an
    empty active segment takes any line, however long, rather than rotating for nothing.
    """
    rotate = active_used and active_end + frame > limits.segment_limit
    need = frame + (FILE_HEADER_SIZE + SEAL_SIZE if rotate else 0)
    if disk_bytes + need <= limits.disk_limit:
        return Step.ROTATE if rotate else Step.APPEND
    # Something to drop: a closed segment, or the active one if it holds lines (sealed first).
    if limits.overflow is Overflow.DROP_OLDEST and (segments > 1 or active_used):
        return Step.DROP_OLDEST
    return Step.REFUSE


def free_disk(limits: Limits, *, segments: int, active_lines: int, delivered: bool) -> Free:
    """What to free when the file system is full; ``delivered``: the cursor is at the head."""
    if active_lines and delivered and segments == 1:
        return Free.RECYCLE_ACTIVE
    if limits.overflow is Overflow.DROP_OLDEST and segments > 1:
        return Free.DROP_OLDEST
    return Free.NOTHING


def trim_on_open(limits: Limits, *, disk_bytes: int, segments: int, active_lines: int) -> bool:
    """Drop the oldest segment now: the spool on disk is over the cap (it was lowered)."""
    return (
        limits.overflow is Overflow.DROP_OLDEST
        and disk_bytes > limits.max_bytes
        and (segments > 1 or active_lines > 0)
    )
