"""The cursor file: saved in place (also on a full disk), torn writes survived."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from relay.spool import FsyncPolicy, Position, Spool, codec
from relay.spool.codec import FILE_HEADER_SIZE
from relay.spool.cursor import CursorFile

from .tmpfs import fill, tmpfs

LINES = [b"%05d" % i + b"-" * 100 for i in range(2000)]


def deliver_all(spool: Spool) -> int:
    taken = 0
    for _ in range(10_000):
        batch = spool.read(max_bytes=64 << 10)
        if not batch.lines:
            return taken
        taken += len(batch.lines)
        spool.commit(batch.end)
    raise AssertionError("the spool did not drain")


def test_the_cursor_is_saved_while_the_disk_is_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", kib=1024) as disk:
        directory = disk / "spool"
        spool = Spool.open(directory, fsync=FsyncPolicy.INTERVAL)
        assert spool.append(LINES) == len(LINES)
        spool.sync()
        fill(disk / "filler")
        assert deliver_all(spool) == len(LINES)
        spool.sync()  # the service does this every second
        spool._close_fds()  # then the relay dies, the disk still full
        with Spool.open(directory) as again:
            # Nothing delivered is sent again.
            assert again.statistics().pending_lines == 0


def test_the_cursor_file_is_written_in_place_never_renamed(tmp_path: Path) -> None:
    with Spool.open(tmp_path, fsync=FsyncPolicy.INTERVAL) as spool:
        spool.append(LINES)
        inode = (tmp_path / "cursor").stat().st_ino
        for i in range(0, len(LINES), 100):
            spool.commit(spool.read(max_bytes=100 * 105).end)
            spool.save_cursor()
            if i % 300 == 0:
                spool.sync()
            assert (tmp_path / "cursor").stat().st_ino == inode
            assert not (tmp_path / "cursor.tmp").exists()
    assert (tmp_path / "cursor").stat().st_ino == inode


def test_a_torn_cursor_write_falls_back_to_the_other_slot(tmp_path: Path) -> None:
    with Spool.open(tmp_path) as spool:
        spool.append(LINES)
        spool.commit(spool.read(max_bytes=10 * 105).end)
        spool.sync()
        spool.commit(spool.read(max_bytes=10 * 105).end)
        spool.sync()
        spool._close_fds()
    data = bytearray((tmp_path / "cursor").read_bytes())
    slots = []
    for i in (0, 128):
        slot = codec.decode_cursor(bytes(data[i : i + 128]).rstrip(b"\0"))
        assert slot is not None
        slots.append(slot)
    newer = 0 if slots[0][2] > slots[1][2] else 1
    data[newer * 128 + 30] ^= 0x01  # the newer slot torn
    (tmp_path / "cursor").write_bytes(bytes(data))
    with Spool.open(tmp_path) as spool:
        # One write older: lines resent, none skipped.
        assert spool.statistics().pending_lines == len(LINES) - slots[1 - newer][2]


def test_a_cursor_file_of_the_older_format_is_read(tmp_path: Path) -> None:
    with Spool.open(tmp_path) as spool:
        spool.append(LINES[:10])
        spool._close_fds()
    offset = FILE_HEADER_SIZE + 4 * (8 + len(LINES[0]))
    (tmp_path / "cursor").write_bytes(codec.encode_cursor(1, offset, 4))
    with Spool.open(tmp_path) as spool:
        assert spool.statistics().pending_lines == 6
    assert os.path.getsize(tmp_path / "cursor") == 256


def test_a_failing_cursor_write_is_logged_a_few_times_then_with_what_was_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cursor write that keeps failing (here: the path is a directory) warns the first five
    times per 10 s, then once more when the interval is over, saying how many were muted."""
    now = [0.0]
    (tmp_path / "cursor").mkdir()
    cursor_file = CursorFile(tmp_path, clock=lambda: now[0])
    caplog.set_level(logging.WARNING)

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", "") == "spool_cursor_write_failed"]

    try:
        assert not cursor_file.open(Position(1, FILE_HEADER_SIZE, 0))
        for i in range(1, 30):
            now[0] = i * 0.1  # three seconds of commits
            cursor_file.write(
                Position(1, FILE_HEADER_SIZE + i, i), durable=False, now=now[0], wait=True
            )
        assert len(warnings()) == 5
        assert all("cannot write the spool cursor" in r.getMessage() for r in warnings())
        now[0] = 10.5
        cursor_file.write(Position(2, FILE_HEADER_SIZE, 0), durable=True, now=now[0], wait=True)
        assert len(warnings()) == 6
        assert getattr(warnings()[-1], "skipped", None) == 25
    finally:
        cursor_file.close()
