"""Opening the spool: what is on disk becomes the segment table and the cursor.

Sealed segments are trusted without reading them (their seal holds the line count); every
unsealed segment (the one being written when the relay died) is read, and a torn or corrupt
tail is cut (truncated), counted and never returned. The saved cursor is trusted only where it
is plausible; otherwise it falls back, so that a doubt means resending, never skipping.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from relay.errors import SpoolError
from relay.spool import codec
from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, SEAL_SIZE, Stop
from relay.spool.files import NO_SPACE, cut_segment, list_segments, scan, seal_segment, segment_name
from relay.spool.table import Position, Segment, SegmentTable

__all__ = ["Recovered", "recover"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered:
    table: SegmentTable
    """The segments found (all sealed now) and the cursor in the oldest of them."""
    next_segment: int
    """The id for the new active segment: past every segment and cursor seen."""
    corrupt_frames: int
    torn_tails: int
    truncated_bytes: int
    removed: bool
    """Files were deleted or created: the directory needs an fsync."""
    segments_deleted: int
    """Segment files deleted (each one logged with its reason)."""


def recover(directory: Path, saved: tuple[int, int, int] | None) -> Recovered:
    """Read the spool in ``directory``, given the cursor file's content ``saved``.

    Raises OSError as it comes (the facade says which spool could not be recovered).
    """
    return _Recovery(directory).run(saved)


class _Recovery:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.table = SegmentTable()
        self.corrupt_frames = 0
        self.torn_tails = 0
        self.truncated_bytes = 0
        self.removed = False
        self.segments_deleted = 0

    def _path(self, segment: int) -> Path:
        return self.directory / segment_name(segment)

    def _delete(self, segment: int, reason: str) -> None:
        """Every deletion made on open goes through here: logged and counted."""
        path = self._path(segment)
        os.unlink(path)
        self.removed = True
        self.segments_deleted += 1
        logger.info(
            "spool segment deleted on open (%s)",
            reason,
            extra={"event": "spool_segment_deleted", "path": str(path), "reason": reason},
        )

    def _refuse_foreign(self, segment: int) -> None:
        """A segment in another format version is for that version: never delete it."""
        path = self._path(segment)
        with path.open("rb") as f:
            magic = f.read(len(codec.MAGIC))
        if magic != codec.MAGIC and magic[:-1] == codec.MAGIC[:-1]:
            raise SpoolError(
                f"the spool in {self.directory} was written by another version of flowrelay "
                f"({path.name} is in format {magic.decode('ascii', 'replace')}, this relay "
                f"reads {codec.MAGIC.decode()}): run that version to deliver it, or move "
                "the directory away"
            )

    def _check_cursor(
        self, saved: tuple[int, int, int] | None, ids: list[int]
    ) -> tuple[int, int, int] | None:
        """A cursor beyond the newest segment cannot be right (a restored backup, two spools
        mixed up): trusting it would delete every segment as delivered. The one exception is
        the start of the segment after the newest, where a close that deleted its empty
        active segment leaves the cursor."""
        if saved is None or not ids:
            return saved
        segment, offset, index = saved
        newest = ids[-1]
        if segment <= newest or (
            segment == newest + 1 and (offset, index) == (FILE_HEADER_SIZE, 0)
        ):
            return saved
        logger.warning(
            "spool cursor names segment %d, beyond the newest segment %d: damaged; "
            "resending from the oldest segment",
            segment,
            newest,
            extra={"event": "spool_cursor_invalid", "path": str(self.directory / "cursor")},
        )
        return None

    def run(self, saved: tuple[int, int, int] | None) -> Recovered:
        ids = list_segments(self.directory)
        for segment in ids:  # before anything is deleted
            self._refuse_foreign(segment)
        saved = self._check_cursor(saved, ids)
        cursor_segment = saved[0] if saved else (ids[0] if ids else 0)
        cursor_index = -1
        cursor_offset = FILE_HEADER_SIZE
        for segment in ids:
            if segment < cursor_segment:
                # Every line in it was taken; the unlink was lost in a crash.
                self._delete(segment, "delivered: before the cursor")
                continue
            want = saved[1] if saved and segment == saved[0] else None
            recovered = self.segment(segment, want)
            if recovered is None:
                continue
            seg, boundary = recovered
            self.table.add(seg)
            if saved and segment == saved[0]:
                cursor_offset, cursor_index = boundary or self.cursor_in(seg, saved)
        segments = self.table.segments
        if segments and segments[0].id == cursor_segment and cursor_index >= 0:
            self.table.cursor = Position(cursor_segment, cursor_offset, cursor_index)
        elif segments:
            # No usable cursor inside the oldest segment: resend from its start, never skip.
            self.table.cursor = Position(segments[0].id, FILE_HEADER_SIZE, 0)
        return Recovered(
            table=self.table,
            next_segment=max([cursor_segment, *ids], default=0) + 1,
            corrupt_frames=self.corrupt_frames,
            torn_tails=self.torn_tails,
            truncated_bytes=self.truncated_bytes,
            removed=self.removed,
            segments_deleted=self.segments_deleted,
        )

    def segment(
        self, segment: int, want: int | None
    ) -> tuple[Segment, tuple[int, int] | None] | None:
        """Check one segment found on open; cut and seal it if it was left unsealed.

        Returns None if the segment was unusable (deleted), else the segment and, when
        ``want`` (the saved cursor offset) is given and the segment had to be read, the last
        frame boundary at or before ``want`` with its line index.
        """
        path = self._path(segment)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if not codec.decode_file_header(os.pread(fd, FILE_HEADER_SIZE, 0), segment):
                # Created but never written (size 0) is what a crash right after a rotation
                # leaves; anything else is damage.
                if size:
                    logger.warning(
                        "spool segment has no valid header; deleted",
                        extra={"event": "spool_segment_invalid", "path": str(path), "bytes": size},
                    )
                    self.corrupt_frames += 1
                    self.truncated_bytes += size
                self._delete(segment, "no valid header" if size else "empty")
                return None
            if size >= FILE_HEADER_SIZE + SEAL_SIZE:
                seal = codec.decode_seal(os.pread(fd, SEAL_SIZE, size - SEAL_SIZE), segment)
                data_end = size - SEAL_SIZE
                if seal is not None and seal.lines * FRAME_HEADER_SIZE <= data_end:
                    if seal.lines == 0:
                        # Nothing in it: keeping it would only use space.
                        self._delete(segment, "sealed with no lines")
                        return None
                    return Segment(segment, data_end, seal.lines, sealed=True), None
            # Unsealed: read it all. When the cursor is in it, first up to the cursor, so the
            # cursor's line index is counted, not trusted.
            boundary: tuple[int, int] | None = None
            end, count, stop = FILE_HEADER_SIZE, 0, Stop.END
            if want is not None:
                end, count, stop = scan(fd, FILE_HEADER_SIZE, 0, max(FILE_HEADER_SIZE, want))
                boundary = (end, count)
            if stop is Stop.END or stop is Stop.PARTIAL:
                end, count, stop = scan(fd, end, count, size)
            if end < size:
                if stop is Stop.PARTIAL:
                    self.torn_tails += 1
                    what = "torn tail"
                else:
                    self.corrupt_frames += 1
                    what = "corrupt frame"
                self.truncated_bytes += size - end
                logger.warning(
                    "spool segment ends in a %s; cut",
                    what,
                    extra={
                        "event": "spool_tail_cut",
                        "path": str(path),
                        "offset": end,
                        "bytes": size - end,
                        "reason": what,
                    },
                )
                cut_segment(fd, end)
            if count == 0:
                # The active segment of a relay that died before writing to it (or whose
                # only lines were torn): delete it, so that restarts do not eat the cap.
                self._delete(segment, "no lines")
                return None
            sealed = self._seal(fd, segment, count, end)
            if boundary is not None and boundary[0] > end:
                boundary = (end, count)  # the cursor cannot point past the cut
            return Segment(segment, end, count, sealed=sealed), boundary
        finally:
            os.close(fd)

    def _seal(self, fd: int, segment: int, lines: int, at: int) -> bool:
        """Seal a segment that was read whole; on a full disk leave it unsealed (it is read
        again on the next open) rather than refuse to start."""
        try:
            seal_segment(fd, segment, lines, at)
            os.fdatasync(fd)
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise
            logger.warning(
                "disk full under the spool in %s: segment %d left unsealed",
                self.directory,
                segment,
                extra={"event": "spool_disk_full", "segment": segment},
            )
            return False
        return True

    def cursor_in(self, seg: Segment, saved: tuple[int, int, int]) -> tuple[int, int]:
        """The saved cursor in a sealed segment, checked by reading the segment up to it.

        A plausible offset can still lie inside a frame, and a plausible index can still be
        wrong; trusting either skips lines (the first read would find no frame there). So the
        segment is scanned from its start to the last frame boundary at or before the saved
        offset, and the cursor goes there with the index counted: resend rather than skip.
        The ends need no scan: the start is index 0, the end is the seal's count.
        """
        _, offset, _ = saved
        offset = max(FILE_HEADER_SIZE, min(offset, seg.data_end))
        if offset == FILE_HEADER_SIZE:
            return offset, 0
        if offset == seg.data_end:
            return offset, seg.lines
        fd = os.open(self._path(seg.id), os.O_RDONLY | os.O_CLOEXEC)
        try:
            end, count, _ = scan(fd, FILE_HEADER_SIZE, 0, offset)
        finally:
            os.close(fd)
        return end, count
