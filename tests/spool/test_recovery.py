"""Opening a spool whose state on disk is damaged or foreign: resend, refuse, never lose."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from relay.errors import SpoolError
from relay.spool import FsyncPolicy, Spool, codec
from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE

LINES = [b"%05d" % i + b"-" * 60 for i in range(3000)]


def read_all(spool: Spool) -> list[bytes]:
    got: list[bytes] = []
    position = spool.cursor
    for _ in range(10_000):
        batch = spool.read(position, 64 << 10)
        if not batch.lines:
            return got
        got += batch.lines
        position = batch.end
    raise AssertionError("read did not end")


def spool_with(directory: Path, lines: list[bytes], *, segment_bytes: int = 32 << 20) -> None:
    with Spool.open(directory, segment_bytes=segment_bytes, fsync=FsyncPolicy.NEVER) as spool:
        for i in range(0, len(lines), 100):
            assert spool.append(lines[i : i + 100]) == len(lines[i : i + 100])


def write_cursor(directory: Path, segment: int, offset: int, index: int) -> None:
    (directory / "cursor").write_bytes(codec.encode_cursor(segment, offset, index))


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


@pytest.mark.parametrize("offset", [FILE_HEADER_SIZE, 1234])
def test_a_cursor_past_the_last_segment_is_damage_and_everything_is_resent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, offset: int
) -> None:
    spool_with(tmp_path, LINES)
    write_cursor(tmp_path, 999_999_999, offset, 5)  # a well-formed file from elsewhere
    with caplog.at_level(logging.INFO), Spool.open(tmp_path) as spool:
        assert spool.statistics().pending_lines == len(LINES)
        assert read_all(spool) == LINES
        assert spool.head.segment < 1000  # the next segment follows the spool, not the cursor
    assert events(caplog, "spool_cursor_invalid")


def test_a_cursor_just_past_an_empty_active_segment_is_where_a_close_left_it(
    tmp_path: Path,
) -> None:
    spool_with(tmp_path, LINES[:10])
    with Spool.open(tmp_path) as spool:
        spool.commit(spool.read().end)  # everything delivered; the empty active is deleted
    with Spool.open(tmp_path) as spool:
        assert spool.statistics().pending_lines == 0
        assert spool.statistics().segments_deleted_on_open == 0


def test_every_segment_deleted_on_open_is_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_with(tmp_path, LINES, segment_bytes=64 << 10)
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) > 3
    # The cursor in the third segment, the deletion of the first two lost in a crash.
    third = int(segments[2].stem)
    write_cursor(tmp_path, third, FILE_HEADER_SIZE, 0)
    with caplog.at_level(logging.INFO), Spool.open(tmp_path) as spool:
        stats = spool.statistics()
        assert stats.segments_deleted_on_open == 2
    deleted = events(caplog, "spool_segment_deleted")
    assert sorted(r.__dict__["path"] for r in deleted) == [str(p) for p in segments[:2]]


def test_a_cursor_inside_a_frame_resends_from_that_frame_and_cuts_nothing(tmp_path: Path) -> None:
    spool_with(tmp_path, LINES)
    # Plausible: offset and index within range, but inside the second frame.
    inside = FILE_HEADER_SIZE + (FRAME_HEADER_SIZE + len(LINES[0])) + 7
    write_cursor(tmp_path, 1, inside, 1)
    with Spool.open(tmp_path) as spool:
        assert read_all(spool) == LINES[1:]
        stats = spool.statistics()
        assert stats.pending_lines == len(LINES) - 1
        assert (stats.corrupt_frames, stats.truncated_bytes, stats.lines_lost_corrupt) == (0, 0, 0)


def test_a_cursor_on_a_boundary_with_a_wrong_index_is_recounted(tmp_path: Path) -> None:
    spool_with(tmp_path, LINES)
    boundary = FILE_HEADER_SIZE + 10 * (FRAME_HEADER_SIZE + len(LINES[0]))
    write_cursor(tmp_path, 1, boundary, 3)  # the line index says 3, the offset says 10
    with Spool.open(tmp_path) as spool:
        assert spool.statistics().pending_lines == len(LINES) - 10
        assert read_all(spool) == LINES[10:]


def test_a_segment_of_another_format_version_refuses_the_start_and_is_kept(
    tmp_path: Path,
) -> None:
    spool_with(tmp_path, LINES[:100])
    foreign = tmp_path / "000000000009.seg"
    data = b"FRSPOOL2" + (9).to_bytes(8, "little") + b"future frames"
    foreign.write_bytes(data)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.seg")}
    with pytest.raises(SpoolError, match="another version") as raised:
        Spool.open(tmp_path)
    assert "\n" not in str(raised.value)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.seg")} == before
    assert foreign.read_bytes() == data
