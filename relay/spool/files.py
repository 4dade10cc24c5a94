"""The spool's file operations: segment files, the one seal writer, scans, the directory lock.

Each function does one system-level thing to one file and raises OSError as it comes: the
facade (relay/spool/store.py) decides what an error means (ENOSPC is a full disk, counted;
anything else is a SpoolError). Formats are relay/spool/codec.py's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from pathlib import Path

from relay.errors import SpoolError
from relay.spool import codec
from relay.spool.codec import Stop

__all__ = [
    "NO_SPACE",
    "SegmentReader",
    "compact",
    "create_segment",
    "cut_segment",
    "find_frame",
    "list_segments",
    "lock_directory",
    "salvage",
    "scan",
    "seal_segment",
    "segment_name",
    "write_all",
]

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""errno values that mean the file system (or the user's quota) is full."""

_SEGMENT_RE = re.compile(r"(\d{1,19})\.seg")
_SCAN_CHUNK = 1 << 20


def segment_name(segment: int) -> str:
    return f"{segment:012d}.seg"


def list_segments(directory: Path) -> list[int]:
    """The ids of the segment files in ``directory``, oldest first."""
    return sorted(int(m[1]) for name in os.listdir(directory) if (m := _SEGMENT_RE.fullmatch(name)))


def write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # rare for regular files: a signal, or the disk filling up
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def create_segment(path: Path, segment: int) -> int:
    """Create a segment file with its header; returns its descriptor, opened O_APPEND."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, codec.encode_file_header(segment))
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return fd


def cut_segment(fd: int, at: int) -> None:
    """Cut a segment at the frame boundary ``at``: what follows (damage, a seal) is gone."""
    os.ftruncate(fd, at)


def seal_segment(fd: int, segment: int, lines: int, at: int) -> None:
    """Seal a segment whose last line frame ends at ``at``: its line count, in a checked
    trailer, so that an open trusts the count without reading the segment.

    Whatever lay after ``at`` is replaced. If the seal cannot be written the segment is left
    cut at ``at``, unsealed: still correct, the next open reads it instead.
    """
    seal = codec.encode_seal(segment, lines)
    try:
        os.ftruncate(fd, at)
        # On a descriptor opened O_APPEND pwrite appends: at the end, which is ``at`` now.
        written = os.pwrite(fd, seal, at)
        while written < len(seal):
            written += os.pwrite(fd, seal[written:], at + written)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, at)
        raise


def scan(fd: int, start: int, count: int, stop: int) -> tuple[int, int, Stop]:
    """Count the intact frames in [start, stop) of a file, reading it in chunks.

    Returns (end, count, why): ``end`` is the boundary after the last intact frame. A frame
    running past ``stop`` ends the scan with PARTIAL.
    """
    pos = start
    while pos < stop:
        chunk = os.pread(fd, min(stop - pos, _SCAN_CHUNK), pos)
        decoded = codec.decode_frames(chunk, keep_lines=False)
        count += decoded.count
        pos += decoded.end
        if decoded.stop is Stop.PARTIAL and pos + decoded.need <= stop:
            if decoded.count == 0:
                # A frame larger than the chunk: decode just that frame.
                chunk = os.pread(fd, decoded.need, pos)
                one = codec.decode_frames(chunk, keep_lines=False)
                if one.count == 0:
                    return pos, count, one.stop
                count += 1
                pos += one.end
            continue
        if decoded.stop is not Stop.END:
            return pos, count, decoded.stop
        if not chunk:
            break
    return pos, count, Stop.END


def find_frame(fd: int, start: int, stop: int) -> int | None:
    """The first offset in [start, stop) where an intact line frame begins, or None.

    For resynchronising after damage: a frame's check byte and CRC make a false match
    vanishingly rare (1 in 2**40 per offset), so what is found is a frame that was written.
    Rarely needed, so plain: one candidate offset at a time, the check byte first.
    """
    pos = start
    while pos + codec.FRAME_HEADER_SIZE <= stop:
        chunk = os.pread(fd, min(stop - pos, _SCAN_CHUNK), pos)
        limit = len(chunk) - codec.FRAME_HEADER_SIZE
        for i in range(limit + 1):
            word = int.from_bytes(chunk[i : i + 4], "little")
            if (word ^ (word >> 8) ^ (word >> 16) ^ 0x5A) & 0xFF != word >> 24:
                continue
            size = codec.FRAME_HEADER_SIZE + (word & codec.MAX_LINE)
            if pos + i + size > stop:
                continue
            frame = chunk[i : i + size] if i + size <= len(chunk) else os.pread(fd, size, pos + i)
            # A seal is not a line: decoding stops before it, with no line.
            if codec.decode_frames(frame, max_lines=1, keep_lines=False).count == 1:
                return pos + i
        pos += limit + 1
    return None


def salvage(fd: int, start: int, stop: int) -> list[tuple[int, int, int]]:
    """The runs of intact frames in [start, stop) of a damaged segment, as (begin, end,
    lines): what a resynchronising read keeps after the damage at ``start``."""
    runs: list[tuple[int, int, int]] = []
    pos = start
    while pos < stop:
        begin = find_frame(fd, pos + 1 if pos == start else pos, stop)
        if begin is None:
            break
        end, count, _ = scan(fd, begin, 0, stop)
        runs.append((begin, end, count))
        pos = end + 1 if end < stop else end
    return runs


def compact(fd: int, runs: list[tuple[int, int, int]], to: int) -> int:
    """Move ``runs`` (ascending, all after ``to``) down to ``to``, back to back; returns the
    end of what was moved. Copies go front to back, so a run never overwrites its own
    unread part."""
    out = to
    for begin, end, _ in runs:
        pos = begin
        while pos < end:
            chunk = os.pread(fd, min(end - pos, _SCAN_CHUNK), pos)
            if not chunk:
                raise OSError(f"segment shorter than expected at {pos}")
            written = os.pwrite(fd, chunk, out)
            pos += written
            out += written
    return out


class SegmentReader:
    """One read-only descriptor, for the segment being read (reads go segment by segment)."""

    __slots__ = ("_directory", "_fd", "_segment")

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._fd = -1
        self._segment = -1

    def fd(self, segment: int) -> int:
        if self._segment != segment:
            self.close()
            self._fd = os.open(self._directory / segment_name(segment), os.O_RDONLY | os.O_CLOEXEC)
            self._segment = segment
        return self._fd

    def forget(self, segment: int) -> None:
        """``segment`` is being deleted: let go of it, so its blocks are freed."""
        if self._segment == segment:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._segment = -1, -1


def lock_directory(directory: Path) -> int:
    """Create the directory if needed and take its lock; SpoolError names what is wrong."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SpoolError(
            f"cannot use spool directory {directory}: {exc.strerror or exc}; "
            "create it writable for the relay's user or set spool.directory"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise SpoolError(
            f"spool directory {directory} is in use by another relay process (pid {holder}); "
            "give each relay its own spool directory"
        ) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        # The pid is for the operator's message above; a full disk must not stop a start.
        if exc.errno not in NO_SPACE:
            os.close(fd)
            raise SpoolError(f"cannot use spool directory {directory}: {exc.strerror}") from exc
    return fd
