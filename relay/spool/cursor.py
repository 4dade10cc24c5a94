"""The spool's cursor file: where the platform's acknowledgements have got to.

The cursor in memory moves on every commit; this file follows it at most every
CURSOR_INTERVAL seconds (and on sync()/close()), so a crash resends what was committed since
the last write: at-least-once, never loss.

Layout: two slots of SLOT bytes, each one cursor line in relay/spool/codec.py's format (its
own CRC) padded with NULs. Why:

- Written in place, never by temp file and rename: a write needs no new block, so the cursor
  can still be saved while the disk is full (otherwise every line delivered meanwhile is sent
  again after a restart), and no rename can become durable before the data it names (a power
  cut then left an empty cursor file). The file gets its blocks once, at open.
- Two slots, written in turn: a write torn by a power cut fails its CRC and the other slot,
  one write older, is used (resend, never skip). Both slots are written at open, and the
  cursor only moves forward while the spool is open, so the larger valid slot is always the
  last whole write.
- A durable write fdatasyncs the file itself (the sync() path, per the fsync policy).

A cursor file of the older format (one line, replaced by rename) is read as slot 0.

Threads: write() runs on the trio thread (``wait=False``: it skips a write that a sync thread
is doing, which will be redone within CURSOR_INTERVAL) and in sync()'s worker thread
(``wait=True``). The lock is held only around the file write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from relay.logs import RateLimitedLog
from relay.spool import codec
from relay.spool.table import Position

__all__ = ["CURSOR_INTERVAL", "SLOT", "CursorFile"]

logger = logging.getLogger(__name__)

CURSOR_INTERVAL = 0.15
"""Seconds between cursor file writes on commit (a crash resends at most this much)."""
SLOT = codec.CURSOR_MAX_SIZE
_SLOTS = 2


def _encode_slot(cursor: Position) -> bytes:
    return codec.encode_cursor(cursor.segment, cursor.offset, cursor.index).ljust(SLOT, b"\0")


class CursorFile:
    """The file ``cursor`` in the spool directory, and what of it is written and durable."""

    __slots__ = (
        "_durable",
        "_durable_at",
        "_fd",
        "_lock",
        "_log",
        "_path",
        "_slot",
        "_written",
        "_written_at",
    )

    def __init__(self, directory: Path, *, clock: Callable[[], float]) -> None:
        self._path = directory / "cursor"
        self._lock = threading.Lock()
        self._log = RateLimitedLog(logger, clock=clock)
        self._fd = -1
        self._slot = 0  # the slot written last
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
        """(segment, offset, index) as last saved whole, or None if there is none (or none
        of its slots is intact)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path.with_name("cursor.tmp"))  # left by the older format
        try:
            data = self._path.read_bytes()[: SLOT * _SLOTS]
        except FileNotFoundError:
            return None
        slots = [codec.decode_cursor(data[i : i + SLOT].rstrip(b"\0")) for i in (0, SLOT)]
        valid = [slot for slot in slots if slot is not None]
        if not valid:
            logger.warning(
                "spool cursor file is damaged; resending from the oldest segment",
                extra={"event": "spool_cursor_invalid", "path": str(self._path)},
            )
            return None
        if len(valid) < len(slots) and len(data) > SLOT:
            logger.warning(
                "one slot of the spool cursor file is damaged (a torn write); using the other",
                extra={"event": "spool_cursor_slot_invalid", "path": str(self._path)},
            )
        return max(valid, key=lambda slot: (slot[0], slot[1]))

    def open(self, cursor: Position) -> bool:
        """Take the file for writing and write ``cursor`` into both slots, durably (this is
        when the file gets its blocks); True if the file was created (the directory changed).

        A failure (a full disk) is logged and left for later writes to retry.
        """
        with self._lock:
            created = not self._path.exists()
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._write_slots(cursor, slots=range(_SLOTS), durable=True, now=None)
            except OSError as exc:
                self._failed(exc)
            return created

    def write(self, cursor: Position, *, durable: bool, now: float, wait: bool) -> bool:
        """Write ``cursor`` unless it is what the file holds; True if the file was created
        now (the directory changed)."""
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            done = self._durable if durable else self._written
            if done == cursor and (done is None or done.index == cursor.index):
                return False
            created = False
            if self._fd < 0:  # open could not take the file
                created = not self._path.exists()
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._write_slots(cursor, slots=range(_SLOTS), durable=durable, now=now)
            else:
                slot = self._slot ^ 1
                self._write_slots(cursor, slots=(slot,), durable=durable, now=now)
        except OSError as exc:
            self._failed(exc)
            return False
        else:
            return created
        finally:
            self._lock.release()

    def _write_slots(
        self, cursor: Position, *, slots: range | tuple[int, ...], durable: bool, now: float | None
    ) -> None:
        data = _encode_slot(cursor)
        for slot in slots:
            if os.pwrite(self._fd, data, slot * SLOT) != SLOT:
                raise OSError(f"short write to {self._path}")
            self._slot = slot
        if durable:
            os.fdatasync(self._fd)
        at = -CURSOR_INTERVAL if now is None else now
        self._written, self._written_at = cursor, at
        if durable:
            self._durable, self._durable_at = cursor, at

    def _failed(self, exc: OSError) -> None:
        # A stale cursor means resending, not losing: log (rate-limited) and carry on.
        self._log.emit(
            "write",
            f"cannot write the spool cursor {self._path}: {exc.strerror or exc}",
            event="spool_cursor_write_failed",
        )

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd = -1
