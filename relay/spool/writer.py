"""The spool's writer: the active segment's descriptor, the rotated segments that wait for
sync(), whether the directory changed, and the one path that makes all of it durable.

It does the file work the appender (relay/spool/appender.py) and the facade decide on, and
raises OSError as it comes; which segment is active and what it holds is the segment table's
(relay/spool/table.py).

Threads: sync_data() and sync_directory() run in sync()'s worker thread while the trio thread
appends, rotates and deletes. ``_lock`` guards the descriptors and the directory flag and is
held only for a few instructions, never across an fsync, so the trio thread never waits for
the disk.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from relay.spool.files import create_segment, cut_segment, seal_segment, segment_name, write_all
from relay.spool.stats import FsyncPolicy
from relay.spool.table import Segment

__all__ = ["SegmentWriter"]

_MAX_DIRTY = 64  # rotated segments waiting for sync(); more means nobody calls sync()


class SegmentWriter:
    __slots__ = ("_dir_dirty", "_dir_fd", "_directory", "_dirty", "_fsync", "_lock", "fd")

    def __init__(self, directory: Path, *, dir_fd: int, fsync: FsyncPolicy) -> None:
        self._directory = directory
        self._dir_fd = dir_fd
        self._fsync = fsync
        self._lock = threading.Lock()
        self.fd = -1
        """The active segment, opened O_APPEND; -1 while it has no file yet (the disk was full
        when it was due) or once closed."""
        self._dirty: dict[int, int] = {}  # rotated segment -> its descriptor, for sync()
        self._dir_dirty = False

    @property
    def closed(self) -> bool:
        return self._dir_fd < 0

    def path(self, segment: int) -> Path:
        return self._directory / segment_name(segment)

    def directory_changed(self) -> None:
        with self._lock:
            self._dir_dirty = True

    def open_active(self, segment: int) -> None:
        """Create the active segment's file (with its header)."""
        fd = create_segment(self.path(segment), segment)
        with self._lock:
            self.fd = fd
            self._dir_dirty = True

    def append(self, data: bytes, at: int) -> None:
        """Write frames at the end of the active segment, which ends at ``at``."""
        try:
            write_all(self.fd, data)
        except OSError:
            # Leave no partial frame behind: the next append would follow garbage.
            with contextlib.suppress(OSError):
                cut_segment(self.fd, at)
            raise

    def rotate(self, old: Segment, new: int) -> OSError | None:
        """Seal the active segment ``old`` and make segment ``new`` active. Creating the new
        file comes first, so that a failure (raised) changes nothing. Returns the error that
        kept the seal from being written, if any (unsealed is still correct: the next open
        reads the segment instead)."""
        new_fd = create_segment(self.path(new), new)
        old_fd = self.fd
        seal_error: OSError | None = None
        try:
            seal_segment(old_fd, old.id, old.lines, old.data_end)
        except OSError as exc:
            seal_error = exc
        with self._lock:
            self.fd = new_fd
            self._dir_dirty = True
            if self._fsync is FsyncPolicy.NEVER or len(self._dirty) >= _MAX_DIRTY:
                os.close(old_fd)
            else:
                self._dirty[old.id] = old_fd  # sync() makes it durable, off the trio thread
        return seal_error

    def seal_active(self, active: Segment) -> None:
        seal_segment(self.fd, active.id, active.lines, active.data_end)

    def retire_active(self) -> None:
        """The active segment's file is about to be deleted: let go of it."""
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def delete(self, segment: int) -> None:
        """Delete a segment's file (gone already is fine)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(segment))
        with self._lock:
            self._dir_dirty = True
            # A deleted file's blocks are freed when its last descriptor closes: on a full
            # disk that must be now, not at the next sync().
            fd = self._dirty.pop(segment, -1)
        if fd >= 0:
            os.close(fd)

    def sync_data(self) -> bool:
        """fdatasync the rotated segments and the active one; False if closed."""
        with self._lock:
            if self._dir_fd < 0:
                return False
            dirty, self._dirty = list(self._dirty.values()), {}
            # Rotation may close self.fd meanwhile: sync a duplicate.
            fds = [*dirty, os.dup(self.fd)] if self.fd >= 0 else dirty
        try:
            for fd in fds:
                os.fdatasync(fd)
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def sync_directory(self) -> None:
        """fsync the directory if files were created, renamed or deleted since the last one."""
        with self._lock:
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            dir_fd = self._dir_fd
        if dir_dirty and dir_fd >= 0:
            os.fsync(dir_fd)

    def discard_empty_active(self, segment: int) -> None:
        """On close: an empty active segment is noise (the cursor file says where we are)."""
        with contextlib.suppress(OSError):
            os.unlink(self.path(segment))
            os.fsync(self._dir_fd)

    def close(self) -> None:
        with self._lock:
            fds = [*self._dirty.values(), self.fd, self._dir_fd]
            self._dirty, self.fd, self._dir_fd = {}, -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
