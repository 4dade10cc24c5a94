"""What the spool reports: its policies, its counters, and the snapshot statistics() returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from relay.spool.ages import age
from relay.spool.table import SegmentTable

__all__ = ["Counters", "FsyncPolicy", "Overflow", "SpoolStats"]


class FsyncPolicy(StrEnum):
    ALWAYS = "always"  # write() returns once the lines are on disk
    INTERVAL = "interval"  # the service calls sync() every second
    NEVER = "never"  # the kernel writes back when it likes


class Overflow(StrEnum):
    DROP_OLDEST = "drop-oldest"  # delete the oldest whole segment to make room
    DROP_NEWEST = "drop-newest"  # refuse the lines that do not fit


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolStats:
    pending_lines: int
    """Lines appended and not yet committed (or dropped): exact, also after a restart."""
    pending_bytes: int
    """Sum of the lengths of those lines."""
    segments: int
    disk_bytes: int
    """Size of all segment files, headers and seals included (the cap applies to this)."""
    max_bytes: int
    lines_appended: int
    bytes_appended: int
    lines_committed: int
    lines_dropped_oldest: int
    lines_dropped_newest: int
    lines_dropped_no_space: int
    """Lines refused because the file system was full (ENOSPC, quota) before the cap."""
    lines_lost_corrupt: int
    """Lines the spool knew it held that a read found damaged and skipped, never sent (the
    intact frames after the damage are kept). A tail cut on open is not counted here: how
    many lines it held is unknown (truncated_bytes says how much)."""
    corrupt_frames: int
    """Damage found: a frame (or segment header) that failed its checks. On open an unsealed
    segment is cut there (a bad header deletes the segment); a read skips only the damaged
    stretch, resynchronising on the next intact frame. Counted once per damaged stretch."""
    torn_tails: int
    """Segments found on open ending inside a frame (a crash during a write)."""
    truncated_bytes: int
    """Bytes given up to damage: torn or corrupt tails cut on open, segments with a bad
    header, and damaged stretches a read skipped."""
    syncs: int
    segments_deleted_on_open: int
    """Segment files an open deleted (delivered, empty or damaged; each one logged)."""
    oldest_pending_written_at: float | None = None
    """When the oldest pending line was appended (wall clock, to within a second), None when
    nothing is pending. For lines found on disk at open: their segment file's mtime, a time
    at or after their writing (relay/spool/ages.py)."""

    def oldest_pending_age(self, now: float) -> float:
        """Seconds the oldest pending line has waited at ``now``; 0 when none is pending."""
        return age(self.oldest_pending_written_at, now)


@dataclass(slots=True)
class Counters:
    """The spool's running counts (SpoolStats says what each one means)."""

    lines_appended: int = 0
    bytes_appended: int = 0
    lines_committed: int = 0
    lines_dropped_oldest: int = 0
    lines_dropped_newest: int = 0
    lines_dropped_no_space: int = 0
    lines_lost_corrupt: int = 0
    corrupt_frames: int = 0
    torn_tails: int = 0
    truncated_bytes: int = 0
    syncs: int = 0
    segments_deleted_on_open: int = 0

    def snapshot(
        self, table: SegmentTable, *, max_bytes: int, oldest_pending_written_at: float | None
    ) -> SpoolStats:
        return SpoolStats(
            pending_lines=table.pending_lines,
            pending_bytes=table.pending_bytes,
            segments=len(table.segments),
            disk_bytes=table.disk_bytes,
            max_bytes=max_bytes,
            lines_appended=self.lines_appended,
            bytes_appended=self.bytes_appended,
            lines_committed=self.lines_committed,
            lines_dropped_oldest=self.lines_dropped_oldest,
            lines_dropped_newest=self.lines_dropped_newest,
            lines_dropped_no_space=self.lines_dropped_no_space,
            lines_lost_corrupt=self.lines_lost_corrupt,
            corrupt_frames=self.corrupt_frames,
            torn_tails=self.torn_tails,
            truncated_bytes=self.truncated_bytes,
            syncs=self.syncs,
            segments_deleted_on_open=self.segments_deleted_on_open,
            oldest_pending_written_at=oldest_pending_written_at,
        )
