"""The spool on a file system that is really full (a tmpfs of a few hundred KiB)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from relay.spool import Overflow, Spool

from .tmpfs import fill, tmpfs

LINE = b"x" * 200
BURST = [LINE] * 30


def drain(spool: Spool) -> int:
    """Read and commit everything pending; returns the lines read."""
    taken = 0
    for _ in range(100_000):
        batch = spool.read(max_bytes=64 << 10)
        if not batch.lines:
            return taken
        taken += len(batch.lines)
        spool.commit(batch.end)
    raise AssertionError("the spool did not drain")


def fill_spool(spool: Spool, *, bursts: int = 10_000) -> int:
    """Append bursts until the disk refuses lines; returns the lines accepted."""
    accepted = 0
    for _ in range(bursts):
        taken = spool.append(BURST)
        accepted += taken
        if taken < len(BURST):
            return accepted
    raise AssertionError("the disk never filled up")


def test_a_full_disk_is_left_once_the_backlog_is_delivered(tmp_path: Path) -> None:
    # The default segment size is larger than the disk: the active segment is the only one.
    with tmpfs(tmp_path / "disk", kib=512) as disk, Spool.open(disk / "spool") as spool:
        accepted = fill_spool(spool)
        assert spool.statistics().lines_dropped_no_space > 0
        assert drain(spool) == accepted
        assert spool.statistics().pending_lines == 0
        # Delivered lines free their space: new lines are accepted again, by the spool itself.
        assert sum(spool.append(BURST) for _ in range(50)) == 50 * len(BURST)
        assert drain(spool) == 50 * len(BURST)


def test_a_full_disk_is_left_even_when_the_spool_had_nothing_to_deliver_at_first(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", kib=512) as disk, Spool.open(disk / "spool") as spool:
        filler = disk / "filler"
        fill(filler)
        accepted = fill_spool(spool)  # what fits in the pages the spool already has
        assert spool.append(BURST) == 0
        filler.unlink()  # the operator frees space
        assert spool.append(BURST) == len(BURST)
        assert drain(spool) == accepted + len(BURST)


def test_drop_oldest_on_a_full_disk_keeps_as_much_as_fits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with (
        tmpfs(tmp_path / "disk", kib=1024) as disk,
        Spool.open(disk / "spool", segment_bytes=64 << 10, overflow=Overflow.DROP_OLDEST) as spool,
    ):
        offered = 2000 * len(BURST)  # 12 MB of lines on a 1 MiB disk
        accepted = sum(spool.append(BURST) for _ in range(2000))
        stats = spool.statistics()
        # Every burst was taken, by dropping only the oldest segments it needed.
        assert accepted == offered
        assert stats.lines_dropped_no_space == 0
        assert stats.lines_dropped_oldest == offered - stats.pending_lines
        # What is kept is most of the disk, not a fraction of it.
        usage = os.statvfs(disk)
        used = (usage.f_blocks - usage.f_bfree) * usage.f_frsize
        assert used >= 0.75 * (1024 << 10)
        assert drain(spool) == stats.pending_lines
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("disk full" in m and str(disk / "spool") in m for m in messages), messages
    assert not any("spool full" in m for m in messages), messages


def test_a_full_disk_and_a_full_spool_are_logged_under_their_own_limits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with (
        tmpfs(tmp_path / "disk", kib=512) as disk,
        Spool.open(disk / "a", max_bytes=64 << 10, overflow=Overflow.DROP_NEWEST) as capped,
    ):
        fill_spool(capped)
        with Spool.open(disk / "b", overflow=Overflow.DROP_NEWEST) as spool:
            fill_spool(spool)
    events = {getattr(r, "event", None) for r in caplog.records}
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "spool_full" in events, messages
    assert "spool_disk_full" in events, messages


def test_a_restart_on_a_full_disk_starts_with_what_fits(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", kib=512) as disk:
        directory = disk / "spool"
        with Spool.open(directory, segment_bytes=32 << 10, overflow=Overflow.DROP_NEWEST) as spool:
            fill_spool(spool)
            accepted = spool.statistics().pending_lines
        fill(disk / "filler")  # whatever room the close left, taken by someone else
        with Spool.open(directory, segment_bytes=32 << 10, overflow=Overflow.DROP_NEWEST) as spool:
            assert spool.statistics().pending_lines == accepted
            assert drain(spool) == accepted
            # The delivered segments were deleted: there is room again.
            assert spool.append(BURST) == len(BURST)
        with Spool.open(directory, segment_bytes=32 << 10, overflow=Overflow.DROP_NEWEST) as spool:
            assert drain(spool) == len(BURST)
