"""The spool's cursor file: where the platform's acknowledgements have got to.

The cursor in memory moves on every commit; this file follows it at most every
CURSOR_INTERVAL seconds (and on sync()/close()), so a crash resends what was committed since
the last write: at-least-once, never loss. Its format (one text line with a CRC) is
relay/spool/codec.py's.

Threads: write() runs on the trio thread (``wait=False``: it skips a write that a sync thread
is doing, which will be redone within CURSOR_INTERVAL) and in sync()'s worker thread
(``wait=True``). The lock is held only around the file write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from relay.spool import codec
from relay.spool.files import write_all
from relay.spool.table import Position

__all__ = ["CURSOR_INTERVAL", "CursorFile"]

logger = logging.getLogger(__name__.rpartition(".")[0] + ".store")

CURSOR_INTERVAL = 0.15
"""Seconds between cursor file writes on commit (a crash resends at most this much)."""


class CursorFile:
    """The file ``cursor`` in the spool directory, and what of it is written and durable."""

    __slots__ = ("_durable", "_durable_at", "_lock", "_path", "_written", "_written_at")

    def __init__(self, directory: Path) -> None:
        self._path = directory / "cursor"
        self._lock = threading.Lock()
        self._written: Position | None = None
        self._written_at = -CURSOR_INTERVAL
        self._durable: Position | None = None
        self._durable_at = -CURSOR_INTERVAL

    @property
    def written_at(self) -> float:
        return self._written_at

    @property
    def durable_at(self) -> float:
        return self._durable_at

    def load(self) -> tuple[int, int, int] | None:
        """(segment, offset, index) as saved, or None if there is none or it is damaged."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path.with_name("cursor.tmp"))
        try:
            data = self._path.read_bytes()[: codec.CURSOR_MAX_SIZE]
        except FileNotFoundError:
            return None
        saved = codec.decode_cursor(data)
        if saved is None:
            logger.warning(
                "spool cursor file is damaged; resending from the oldest segment",
                extra={"event": "spool_cursor_invalid", "path": str(self._path)},
            )
        else:
            self._written = self._durable = Position(*saved)
        return saved

    def write(self, cursor: Position, *, durable: bool, now: float, wait: bool) -> bool:
        """Write ``cursor`` unless it is what the file holds; True if the directory changed
        (a rename, which the next directory fsync makes durable)."""
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            done = self._durable if durable else self._written
            if done == cursor and (done is None or done.index == cursor.index):
                return False
            tmp = self._path.with_name("cursor.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                write_all(fd, codec.encode_cursor(cursor.segment, cursor.offset, cursor.index))
                if durable:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
            self._written, self._written_at = cursor, now
            if durable:
                self._durable, self._durable_at = cursor, now
        except OSError as exc:
            # A stale cursor means resending, not losing: log and carry on.
            logger.warning(
                "cannot write the spool cursor",
                extra={"event": "spool_cursor_write_failed", "error": str(exc)},
            )
            return False
        else:
            return True
        finally:
            self._lock.release()
