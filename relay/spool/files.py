"""The spool's file operations: segment files, the one seal writer, scans, the directory lock.

Each function does one system-level thing to one file and raises OSError as it comes: the
callers (the appender, the reader, recovery, the facade) decide what an error means (ENOSPC
is a full disk, counted; anything else is a SpoolError). Formats are relay/spool/codec.py's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from pathlib import Path

from relay.errors import SpoolDiskFull, SpoolError
from relay.spool import codec
from relay.spool.codec import Stop

__all__ = [
    "NO_SPACE",
    "SegmentReader",
    "check_mismatches",
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
_SEAL_FLAG = codec.MAX_LINE + 1  # bit 23 of a frame word (codec.py)
_RESYNC_BUDGET = 16 << 20
"""CRC bytes one find_frame() spends on candidates that no run of frame headers follows:
about 10 ms, and far more than a real frame closely followed by more damage needs."""
_LOOKAHEAD = 3
"""Frame headers that must follow a candidate for it to be checked beyond the budget: a false
candidate passes with odds of about 1 in 2**32 (each check byte 1 in 256)."""


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

    It runs on the trio thread, inside a read(), so a long damaged stretch must not cost
    seconds. The check byte is tested at every offset of a chunk at once (check_mismatches)
    and bytes.find jumps between the offsets that pass: a zeroed or garbage stretch is
    crossed at C speed. A candidate's CRC covers the length its header claims (up to 8 MiB
    of garbage), so CRCs are rationed: a candidate whose claimed end is followed by more
    plausible frame headers (or the end of the data) is always checked, as a real frame
    followed by real frames is; the others, at most _RESYNC_BUDGET bytes of CRC per search.
    Beyond that budget, only an intact frame closely followed by more damage is skipped
    (counted with the damage).
    """
    budget = _RESYNC_BUDGET
    pos = start
    while pos + codec.FRAME_HEADER_SIZE <= stop:
        chunk = os.pread(fd, min(stop - pos, _SCAN_CHUNK), pos)
        limit = len(chunk) - codec.FRAME_HEADER_SIZE  # last offset with a whole header
        if limit < 0:
            break
        mismatches = check_mismatches(chunk)
        i = mismatches.find(0, 0, limit + 1)
        while i >= 0:
            word = int.from_bytes(chunk[i : i + 4], "little")
            size = codec.FRAME_HEADER_SIZE + (word & codec.MAX_LINE)
            at = pos + i
            # A seal is not a line (and decoding would stop before it, with no line).
            if not word & _SEAL_FLAG and at + size <= stop:
                likely = _headers_follow(fd, chunk, pos, at + size, stop)
                if likely or budget > 0:
                    if not likely:
                        budget -= size
                    if _intact(chunk, i, fd, at, size):
                        return at
            i = mismatches.find(0, i + 1, limit + 1)
        pos += limit + 1
    return None


def check_mismatches(data: bytes) -> bytes:
    """Byte i is 0 exactly where data[i:i+4] is a frame word with a valid check byte.

    The check byte is b[i+3] == b[i] ^ b[i+1] ^ b[i+2] ^ 0x5A (codec.py); XORing the whole
    buffer, as one integer, with itself shifted by one, two and three bytes computes
    b[i] ^ b[i+1] ^ b[i+2] ^ b[i+3] ^ 0x5A for every i in a few passes in C. (The last three
    bytes lack a whole word; callers look only at offsets with a whole frame header.)
    """
    n = int.from_bytes(data, "little")
    x = n ^ (n >> 8) ^ (n >> 16) ^ (n >> 24)
    return (x ^ int.from_bytes(b"\x5a" * len(data), "little")).to_bytes(len(data), "little")


def _intact(chunk: bytes, i: int, fd: int, at: int, size: int) -> bool:
    """The ``size`` bytes at ``at`` (``chunk[i:]`` if it holds them) are one intact line."""
    frame = chunk[i : i + size] if i + size <= len(chunk) else os.pread(fd, size, at)
    return codec.decode_frames(frame, max_lines=1, keep_lines=False).count == 1


def _headers_follow(fd: int, chunk: bytes, base: int, at: int, stop: int) -> bool:
    """The data ends at ``at``, or _LOOKAHEAD frame headers with valid check bytes follow
    it, back to back within ``stop`` (``chunk`` holds the file from ``base``)."""
    for _ in range(_LOOKAHEAD):
        if at == stop:
            return True
        if at + codec.FRAME_HEADER_SIZE > stop:
            return False
        off = at - base
        head = chunk[off : off + 4] if off + 4 <= len(chunk) else os.pread(fd, 4, at)
        word = int.from_bytes(head, "little")
        if (word ^ (word >> 8) ^ (word >> 16) ^ 0x5A) & 0xFF != word >> 24:
            return False
        at += codec.FRAME_HEADER_SIZE + (word & codec.MAX_LINE)  # a seal's too
        if at > stop:
            return False
    return True


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
        if exc.errno in NO_SPACE:
            # Transient: an existing spool opens on a full disk, but a new one cannot be made
            # until space (or an inode) is free; exit 75 so that systemd tries again.
            raise SpoolDiskFull(
                f"cannot create the spool directory {directory}: {exc.strerror}; "
                "the relay starts once its file system has room"
            ) from exc
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
