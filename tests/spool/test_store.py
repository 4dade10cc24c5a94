"""The spool: the pure frame codec, then the file layer on a real temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import zlib
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from relay.errors import SpoolError
from relay.spool import Batch, FsyncPolicy, Overflow, Position, Spool, SpoolStats, codec
from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, SEAL_SIZE, Stop

# ---------------------------------------------------------------------------------- codec

FRAME_TABLE = [
    # (lines, encoded) -- pins the on-disk format: a change here breaks existing spools.
    ([b"hi"], bytes.fromhex("02000058 ac2a93d8 6869")),
    ([b""], bytes.fromhex("0000005a 00000000")),
    (
        [b"hi", b""],
        bytes.fromhex("02000058 ac2a93d8 6869 0000005a 00000000"),
    ),
    ([], b""),
]


@pytest.mark.parametrize(("lines", "encoded"), FRAME_TABLE)
def test_frames_encode_to_the_documented_bytes(lines: list[bytes], encoded: bytes) -> None:
    assert codec.encode_frames(lines) == encoded
    decoded = codec.decode_frames(encoded)
    assert decoded.lines == lines
    assert decoded.stop is Stop.END
    assert decoded.end == len(encoded)


def test_seal_and_file_header_bytes() -> None:
    assert codec.encode_seal(7, 2) == bytes.fromhex(
        "100080ca 5db46753 0700000000000000 0200000000000000"
    )
    assert codec.encode_file_header(7) == b"FRSPOOL1" + (7).to_bytes(8, "little")
    assert codec.decode_file_header(codec.encode_file_header(7), 7)
    assert not codec.decode_file_header(codec.encode_file_header(7), 8)
    assert not codec.decode_file_header(b"FRSPOOL1", 7)


GOOD = codec.encode_frames([b"alpha", b"beta"])
DECODE_TABLE = [
    # (data, lines, stop, end)
    (b"", [], Stop.END, 0),
    (GOOD, [b"alpha", b"beta"], Stop.END, len(GOOD)),
    (GOOD[:-1], [b"alpha"], Stop.PARTIAL, 13),  # torn inside the second payload
    (GOOD[:16], [b"alpha"], Stop.PARTIAL, 13),  # torn inside the second header
    (GOOD + b"\0" * 8, [b"alpha", b"beta"], Stop.CORRUPT, len(GOOD)),  # zeros: power cut
    (GOOD + b"\xff" * 20, [b"alpha", b"beta"], Stop.CORRUPT, len(GOOD)),  # garbage
    (b"\x05\x00\x00\x5f" + b"\0" * 4 + b"alpha", [], Stop.CORRUPT, 0),  # right length, bad crc
    (GOOD + codec.encode_seal(1, 2), [b"alpha", b"beta"], Stop.SEAL, len(GOOD)),
]


@pytest.mark.parametrize(("data", "lines", "stop", "end"), DECODE_TABLE)
def test_decode_table(data: bytes, lines: list[bytes], stop: Stop, end: int) -> None:
    decoded = codec.decode_frames(data)
    assert (decoded.lines, decoded.stop, decoded.end) == (lines, stop, end)
    assert decoded.count == len(lines)
    counted = codec.decode_frames(memoryview(data), keep_lines=False)
    assert (counted.lines, counted.count, counted.end) == ([], len(lines), end)


def test_decode_reports_the_size_of_a_partial_frame() -> None:
    frame = codec.encode_frames([b"x" * 100])
    decoded = codec.decode_frames(frame[:50])
    assert decoded.stop is Stop.PARTIAL
    assert decoded.need == len(frame)
    assert codec.decode_frames(frame[:3]).need == FRAME_HEADER_SIZE


def test_decode_limits_return_at_least_one_line() -> None:
    data = codec.encode_frames([b"a" * 10, b"b" * 10, b"c" * 10])
    assert codec.decode_frames(data, max_bytes=25).lines == [b"a" * 10, b"b" * 10]
    assert codec.decode_frames(data, max_bytes=25).stop is Stop.LIMIT
    assert codec.decode_frames(data, max_bytes=1).lines == [b"a" * 10]
    assert codec.decode_frames(data, max_lines=2).count == 2


def test_long_lines_use_the_slow_path_and_the_limit_is_enforced() -> None:
    big = b"z" * 70_000  # past the lookup table
    assert codec.decode_frames(codec.encode_frames([b"a", big])).lines == [b"a", big]
    with pytest.raises(ValueError, match="limited to"):
        codec.encode_frames([b"y" * (codec.MAX_LINE + 1)])


line_lists = st.lists(st.binary(max_size=40), max_size=6)


@given(line_lists)
def test_frames_round_trip(lines: list[bytes]) -> None:
    data = codec.encode_frames(lines)
    assert codec.decode_frames(data).lines == lines
    scan = codec.decode_segment(codec.encode_segment(3, lines), 3)
    assert scan.lines == lines
    assert scan.sealed


def _frame_ends(lines: list[bytes]) -> list[int]:
    """Offsets in a segment file just past each line frame."""
    ends, pos = [], FILE_HEADER_SIZE
    for line in lines:
        pos += FRAME_HEADER_SIZE + len(line)
        ends.append(pos)
    return ends


@settings(max_examples=40, deadline=None)
@given(line_lists)
def test_every_truncation_of_a_segment_is_detected(lines: list[bytes]) -> None:
    data = codec.encode_segment(9, lines)
    ends = _frame_ends(lines)
    for size in range(len(data)):
        scan = codec.decode_segment(data[:size], 9)
        assert not scan.sealed, size
        intact = sum(1 for end in ends if end <= size)
        assert scan.lines == lines[:intact], size


@settings(max_examples=40, deadline=None)
@given(line_lists)
def test_every_single_bit_flip_of_a_segment_is_detected(lines: list[bytes]) -> None:
    data = codec.encode_segment(9, lines)
    ends = _frame_ends(lines)
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        scan = codec.decode_segment(bytes(damaged), 9)
        assert not scan.sealed, bit
        assert scan.stop is Stop.CORRUPT, bit
        # Only the frames wholly before the flipped byte come back.
        intact = sum(1 for end in ends if end <= bit // 8) if bit // 8 >= FILE_HEADER_SIZE else 0
        assert scan.lines == lines[:intact], bit


def test_cursor_file_round_trip_and_every_bit_flip_is_rejected() -> None:
    data = codec.encode_cursor(12, 34567, 89)
    assert codec.decode_cursor(data) == (12, 34567, 89)
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        assert codec.decode_cursor(bytes(damaged)) in (None, (12, 34567, 89)), bit
        if bit // 8 < len(data) - 1:  # all but the trailing newline carry meaning
            assert codec.decode_cursor(bytes(damaged)) is None, bit
    assert codec.decode_cursor(b"") is None
    assert codec.decode_cursor(b"flowrelay-spool-cursor 1 1 2 zz\n") is None


# ---------------------------------------------------------------------------- file layer


def make_lines(n: int, start: int = 0, size: int = 60) -> list[bytes]:
    """Distinct lines of a fixed size, numbered so order can be checked."""
    return [(b"line-%08d-" % i).ljust(size, b"x") for i in range(start, start + n)]


def read_all(spool: Spool, start: Position | None = None, max_bytes: int = 4096) -> list[bytes]:
    """Every pending line from ``start`` without committing."""
    out: list[bytes] = []
    pos = start
    for _ in range(100_000):
        batch = spool.read(pos, max_bytes)
        if not batch.lines:
            assert batch.start == batch.end
            return out
        out += batch.lines
        pos = batch.end
    raise AssertionError("read_all did not finish")


def drain(spool: Spool) -> list[bytes]:
    """Read and commit everything pending."""
    out: list[bytes] = []
    for _ in range(100_000):
        batch = spool.read()
        if not batch.lines:
            return out
        out += batch.lines
        spool.commit(batch.end)
    raise AssertionError("drain did not finish")


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def open_spool(directory: Path, **kwargs: object) -> Spool:
    options: dict[str, object] = {"max_bytes": 1 << 20, "segment_bytes": 2048} | kwargs
    return Spool.open(directory, **options)  # type: ignore[arg-type]


def test_append_read_commit_round_trip(tmp_path: Path) -> None:
    lines = make_lines(100)
    with open_spool(tmp_path) as spool:
        assert spool.append(lines[:30]) == 30
        assert spool.append(lines[30:]) == 70
        stats = spool.statistics()
        assert stats.pending_lines == 100
        assert stats.pending_bytes == sum(map(len, lines))
        assert stats.lines_appended == 100
        assert read_all(spool) == lines
        assert read_all(spool) == lines  # reading does not consume
        assert drain(spool) == lines
        stats = spool.statistics()
        assert (stats.pending_lines, stats.pending_bytes, stats.lines_committed) == (0, 0, 100)
        assert spool.read().lines == []


def test_read_respects_max_bytes_but_returns_at_least_one_line(tmp_path: Path) -> None:
    lines = make_lines(20, size=100)
    with open_spool(tmp_path, segment_bytes=1 << 16) as spool:
        spool.append(lines)
        batch = spool.read(max_bytes=350)
        assert batch.lines == lines[:3]
        assert batch.nbytes == 300
        assert spool.read(max_bytes=10).lines == lines[:1]
        assert spool.read(batch.end, max_bytes=350).lines == lines[3:6]


def test_rotation_spreads_lines_over_segments_and_commit_deletes_them(tmp_path: Path) -> None:
    lines = make_lines(200)
    with open_spool(tmp_path, segment_bytes=1024) as spool:
        spool.append(lines)
        segments = spool.statistics().segments
        assert segments >= 12  # 200 * 68 bytes in 1 KiB segments
        assert len(segment_files(tmp_path)) == segments
        for path in segment_files(tmp_path):
            assert path.stat().st_size <= 1024 + SEAL_SIZE
        assert read_all(spool, max_bytes=1 << 20) == lines  # batches stop at segment ends
        # Commit half: the segments wholly behind the cursor go, the others stay.
        for _ in range(1000):
            if spool.statistics().pending_lines <= 100:
                break
            spool.commit(spool.read(max_bytes=200).end)
        cursor = spool.cursor
        assert cursor.segment > 1
        assert int(segment_files(tmp_path)[0].stem) == cursor.segment
        pending = spool.statistics().pending_lines
        assert read_all(spool) == lines[200 - pending :]


def test_reopen_resumes_from_the_cursor_with_exact_counts(tmp_path: Path) -> None:
    lines = make_lines(150)
    with open_spool(tmp_path, segment_bytes=1024) as spool:
        spool.append(lines)
        batch = spool.read(max_bytes=1000)
        spool.commit(batch.position_after(5))
        for _ in range(3):
            batch = spool.read(max_bytes=700)
            spool.commit(batch.end)
        taken = 150 - spool.statistics().pending_lines
        cursor = spool.cursor
    with open_spool(tmp_path, segment_bytes=1024) as spool:
        assert spool.cursor == cursor
        assert spool.cursor.index == cursor.index
        stats = spool.statistics()
        assert stats.pending_lines == 150 - taken
        assert stats.pending_bytes == sum(map(len, lines[taken:]))
        assert read_all(spool) == lines[taken:]
        spool.append(make_lines(10, start=150))
        assert drain(spool) == lines[taken:] + make_lines(10, start=150)
    with open_spool(tmp_path) as spool:
        assert spool.statistics().pending_lines == 0
        assert len(segment_files(tmp_path)) == 1  # only the new, empty active segment


def test_partial_commit_with_position_after(tmp_path: Path) -> None:
    lines = make_lines(10)
    with open_spool(tmp_path) as spool:
        spool.append(lines)
        batch = spool.read()
        assert batch.position_after(0) == batch.start
        assert batch.position_after(10) == batch.end
        with pytest.raises(ValueError, match="no line 11"):
            batch.position_after(11)
        spool.commit(batch.position_after(4))
        assert spool.read().lines == lines[4:]
        assert spool.statistics().pending_lines == 6
        # Committing an older position is a no-op, not a rewind.
        spool.commit(batch.position_after(2))
        assert spool.statistics().pending_lines == 6


def test_hand_made_positions_are_checked(tmp_path: Path) -> None:
    lines = make_lines(10)
    with open_spool(tmp_path) as spool:
        spool.append(lines)
        third = spool.read().position_after(3)
        bare = Position(third.segment, third.offset)  # no index, as a caller might build
        assert bare == third
        assert spool.read(bare).lines == lines[3:]
        assert spool.read(bare).start.index == 3
        with pytest.raises(ValueError, match="not a frame boundary"):
            spool.read(Position(third.segment, third.offset + 1))
        with pytest.raises(ValueError, match="beyond the head"):
            spool.commit(Position(third.segment + 5, 16))
        spool.commit(bare)
        assert spool.statistics().pending_lines == 7
        assert spool.cursor.index == 3


def test_positions_compare_by_segment_and_offset_only() -> None:
    assert Position(1, 16, 0) == Position(1, 16)
    assert Position(1, 100) < Position(2, 16)
    assert Position(1, 16) < Position(1, 17)
    assert len({Position(1, 16, 0), Position(1, 16, 5)}) == 1


def truncate_last_segment(directory: Path, keep: int) -> Path:
    """Cut the newest non-empty segment (sealed by close) to ``keep`` bytes from its end."""
    path = [p for p in segment_files(directory) if p.stat().st_size > FILE_HEADER_SIZE][-1]
    os.truncate(path, path.stat().st_size - keep)
    return path


def test_torn_tail_mid_frame_is_cut_and_counted(tmp_path: Path) -> None:
    lines = make_lines(20)
    with open_spool(tmp_path, segment_bytes=1 << 16) as spool:
        spool.append(lines)
    # Remove the seal and half of the last frame: what a crash during a write leaves.
    truncate_last_segment(tmp_path, SEAL_SIZE + 30)
    with open_spool(tmp_path, segment_bytes=1 << 16) as spool:
        stats = spool.statistics()
        assert stats.torn_tails == 1
        assert stats.corrupt_frames == 0
        assert stats.truncated_bytes == FRAME_HEADER_SIZE + 60 - 30
        assert stats.pending_lines == 19
        assert read_all(spool) == lines[:19]
    with open_spool(tmp_path) as spool:  # the cut is permanent and not counted twice
        assert spool.statistics().torn_tails == 0
        assert read_all(spool) == lines[:19]


@pytest.mark.parametrize(
    ("garbage", "torn", "corrupt"),
    [
        (b"\0" * 4096, 0, 1),  # zero-filled blocks after a power cut
        (b"\xff" * 100, 0, 1),
        (b"\x3c\x00\x00\x66", 1, 0),  # a plausible header of a frame that never got written
    ],
)
def test_garbage_tail_is_cut_and_counted(
    tmp_path: Path, garbage: bytes, torn: int, corrupt: int
) -> None:
    lines = make_lines(20)
    with open_spool(tmp_path, segment_bytes=1 << 16) as spool:
        spool.append(lines)
    path = truncate_last_segment(tmp_path, SEAL_SIZE)
    with path.open("ab") as f:
        f.write(garbage)
    with open_spool(tmp_path) as spool:
        stats = spool.statistics()
        assert (stats.torn_tails, stats.corrupt_frames) == (torn, corrupt)
        assert stats.truncated_bytes == len(garbage)
        assert stats.pending_lines == 20
        assert read_all(spool) == lines


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


def test_bit_flip_in_a_sealed_segment_is_never_sent_and_costs_only_its_line(
    tmp_path: Path,
) -> None:
    lines = make_lines(60)  # 68-byte frames, 14 per 1 KiB segment
    with open_spool(tmp_path, segment_bytes=1024) as spool:
        spool.append(lines)
        first_segment = segment_files(tmp_path)[0]
    per_segment = (1024 - FILE_HEADER_SIZE) // 68
    # Damage the payload of the 4th line of the first segment.
    flip_byte(first_segment, FILE_HEADER_SIZE + 3 * 68 + 20)
    with open_spool(tmp_path, segment_bytes=1024) as spool:
        assert spool.statistics().pending_lines == 60  # the seal is trusted until read
        got = drain(spool)
        assert got == lines[:3] + lines[4:]  # the scan resynchronised on the 5th frame
        stats = spool.statistics()
        assert per_segment > 5
        assert stats.corrupt_frames == 1
        assert stats.lines_lost_corrupt == 1
        assert stats.lines_committed == len(got)
        assert stats.pending_lines == 0
    with open_spool(tmp_path) as spool:
        assert spool.statistics().corrupt_frames == 0
        assert spool.statistics().pending_lines == 0


def test_bit_flip_in_the_active_segment_while_running(tmp_path: Path) -> None:
    lines = make_lines(10)
    # recent_bytes=0: every read goes to the disk, where the damage is.
    with open_spool(tmp_path, segment_bytes=1 << 16, recent_bytes=0) as spool:
        spool.append(lines)
        active = segment_files(tmp_path)[-1]
        flip_byte(active, FILE_HEADER_SIZE + 5 * 68 + 2)  # the 6th line's length
        assert spool.read().lines == lines[:5]
        stats = spool.statistics()
        assert (stats.corrupt_frames, stats.lines_lost_corrupt, stats.pending_lines) == (1, 1, 9)
        # Appending goes on after the lines that were kept.
        more = make_lines(3, start=10)
        spool.append(more)
        assert drain(spool) == lines[:5] + lines[6:] + more
        assert spool.statistics().pending_lines == 0


@pytest.mark.parametrize(
    ("flips", "lost"),
    [
        ([3 * 68 + 2], [3]),  # the 4th line's length: found again by searching
        ([3 * 68 + 1], [3]),
        ([2 * 68 + 30, 7 * 68 + 2], [2, 7]),  # two damages, each costs only its line
        ([2 * 68 + 2, 2 * 68 + 70], [2, 3]),  # two neighbouring frames
    ],
)
def test_a_damaged_length_in_a_sealed_segment_is_skipped_by_resynchronising(
    tmp_path: Path, flips: list[int], lost: list[int]
) -> None:
    lines = make_lines(40)
    with open_spool(tmp_path, segment_bytes=4096) as spool:
        spool.append(lines)
    first = segment_files(tmp_path)[0]
    for flip in flips:
        flip_byte(first, FILE_HEADER_SIZE + flip)
    with open_spool(tmp_path, segment_bytes=4096) as spool:
        got = drain(spool)
        assert got == [line for i, line in enumerate(lines) if i not in lost]
        stats = spool.statistics()
        assert stats.lines_lost_corrupt == len(lost)
        assert stats.pending_lines == 0
    with open_spool(tmp_path) as spool:  # what is left on disk is whole again
        assert (spool.statistics().corrupt_frames, spool.statistics().pending_lines) == (0, 0)


def test_recent_appends_are_read_from_memory_and_the_disk_still_counts(tmp_path: Path) -> None:
    lines = make_lines(10)
    with open_spool(tmp_path, segment_bytes=1 << 16) as spool:
        spool.append(lines)
        active = segment_files(tmp_path)[-1]
        flip_byte(active, FILE_HEADER_SIZE + 5 * 68 + 2)  # the 6th line's length
        # The read is served from the lines as they were appended, not from the damaged
        # file: what goes out is still exactly what came in.
        assert spool.read().lines == lines
        assert spool.statistics().corrupt_frames == 0
        spool._close_fds()  # a crash: nothing committed, the damage on disk
    with open_spool(tmp_path, segment_bytes=1 << 16) as spool:
        # After a restart only the disk counts: the damage is found, cut and counted.
        assert drain(spool) == lines[:5]
        stats = spool.statistics()
        assert (stats.torn_tails + stats.corrupt_frames, stats.pending_lines) == (1, 0)


def test_invalid_segment_header_is_deleted_and_counted(tmp_path: Path) -> None:
    lines = make_lines(40)
    with open_spool(tmp_path, segment_bytes=1024) as spool:
        spool.append(lines)
    files = segment_files(tmp_path)
    flip_byte(files[1], 2)
    second_size = files[1].stat().st_size
    with open_spool(tmp_path, segment_bytes=1024) as spool:
        stats = spool.statistics()
        assert stats.corrupt_frames == 1
        assert stats.truncated_bytes == second_size
        per_segment = (1024 - FILE_HEADER_SIZE) // 68
        assert read_all(spool) == lines[:per_segment] + lines[2 * per_segment :]
        assert stats.pending_lines == 40 - per_segment


def test_damaged_cursor_file_resends_rather_than_skips(tmp_path: Path) -> None:
    lines = make_lines(10)
    with open_spool(tmp_path) as spool:
        spool.append(lines)
        spool.commit(spool.read().position_after(4))
    (tmp_path / "cursor").write_bytes(b"flowrelay-spool-cursor 1 1 999 4 00000000\n")
    with open_spool(tmp_path) as spool:
        assert spool.statistics().pending_lines == 10
        assert read_all(spool) == lines


def test_cursor_beyond_a_cut_is_pulled_back(tmp_path: Path) -> None:
    lines = make_lines(10)
    with open_spool(tmp_path) as spool:
        spool.append(lines)
        spool.commit(spool.read().position_after(9))
    # Lose the last two frames (and the seal): the saved cursor now points past the end.
    truncate_last_segment(tmp_path, SEAL_SIZE + 2 * 68)
    with open_spool(tmp_path) as spool:
        stats = spool.statistics()
        assert (stats.pending_lines, stats.torn_tails, stats.corrupt_frames) == (0, 0, 0)
        spool.append(make_lines(1, start=10))
        assert read_all(spool) == make_lines(1, start=10)


def fill(spool: Spool, lines: list[bytes], batch: int = 7) -> int:
    accepted = 0
    for i in range(0, len(lines), batch):
        accepted += spool.append(lines[i : i + batch])
        assert spool.statistics().disk_bytes <= spool.statistics().max_bytes
    return accepted


def test_drop_oldest_keeps_the_newest_and_counts_exactly(tmp_path: Path) -> None:
    lines = make_lines(1000)
    with open_spool(tmp_path, max_bytes=8192, segment_bytes=1024) as spool:
        # Take a few lines first, so that only untaken lines count as dropped.
        spool.append(lines[:10])
        spool.commit(spool.read().position_after(4))
        assert fill(spool, lines[10:]) == 990
        stats = spool.statistics()
        kept = read_all(spool)
        assert kept == lines[1000 - len(kept) :]  # a contiguous run of the newest lines
        assert stats.pending_lines == len(kept)
        assert stats.lines_dropped_oldest == 1000 - 4 - len(kept)
        assert stats.lines_dropped_newest == 0
        assert stats.lines_committed == 4
        assert stats.disk_bytes <= 8192
        assert len(segment_files(tmp_path)) == stats.segments
        assert sum(p.stat().st_size for p in segment_files(tmp_path)) == stats.disk_bytes


def test_drop_oldest_under_a_reader_continues_from_the_oldest_kept_line(tmp_path: Path) -> None:
    lines = make_lines(400)
    with open_spool(tmp_path, max_bytes=8192, segment_bytes=1024) as spool:
        spool.append(lines[:20])
        early = spool.read(max_bytes=200)  # a forwarder holding a batch
        fill(spool, lines[20:])
        newest = read_all(spool)
        assert spool.read(early.end).lines == spool.read().lines  # jumps to the oldest kept
        spool.commit(early.end)  # stale: already dropped, must not move the cursor
        assert read_all(spool) == newest


def test_drop_newest_refuses_what_does_not_fit_and_counts_exactly(tmp_path: Path) -> None:
    lines = make_lines(1000)
    with open_spool(
        tmp_path, max_bytes=8192, segment_bytes=1024, overflow=Overflow.DROP_NEWEST
    ) as spool:
        accepted = fill(spool, lines)
        assert 50 < accepted < 130
        stats = spool.statistics()
        assert stats.lines_dropped_newest == 1000 - accepted
        assert stats.lines_dropped_oldest == 0
        assert stats.pending_lines == accepted
        assert read_all(spool) == lines[:accepted]
        # Once the platform takes lines, there is room again.
        assert drain(spool) == lines[:accepted]
        assert spool.append(lines[:5]) == 5


def test_a_line_that_can_never_fit_is_refused(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=4096, segment_bytes=1024) as spool:
        assert spool.append([b"x" * 5000]) == 0
        assert spool.statistics().lines_dropped_newest == 1
        assert spool.append([b"y" * 2000]) == 1  # larger than a segment but under the cap
        assert read_all(spool) == [b"y" * 2000]


def test_statistics_is_a_frozen_snapshot(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        stats = spool.statistics()
        assert isinstance(stats, SpoolStats)
        spool.append(make_lines(3))
        assert stats.pending_lines == 0
        with pytest.raises(AttributeError):
            stats.pending_lines = 5  # type: ignore[misc]


def test_unusable_directory_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match=str(blocker / "spool")):
        Spool.open(blocker / "spool")


def test_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    with open_spool(tmp_path), pytest.raises(SpoolError, match="in use by another relay"):
        open_spool(tmp_path)
    with open_spool(tmp_path):  # released by close()
        pass


def test_closed_spool_refuses_work(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.close()
    spool.close()  # idempotent
    with pytest.raises(SpoolError, match="closed"):
        spool.append([b"x"])
    with pytest.raises(SpoolError, match="closed"):
        spool.read()
    spool.sync()  # harmless


async def test_wait_readable_wakes_on_append(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append(make_lines(2))
        batch = spool.read()
        with trio.fail_after(1):
            await spool.wait_readable(batch.start)  # data already there: returns at once
        with trio.move_on_after(0.05) as idle:
            await spool.wait_readable(batch.end)
        assert idle.cancelled_caught  # nothing past the end yet

        woke = trio.Event()

        async def waiter() -> None:
            await spool.wait_readable(batch.end)
            woke.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.01)
            assert not woke.is_set()
            spool.append(make_lines(1, start=2))
            with trio.fail_after(1):
                await woke.wait()
        assert spool.read(batch.end).lines == make_lines(1, start=2)


async def test_wait_readable_across_a_segment_boundary(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=1024) as spool:
        spool.append(make_lines(14))  # fills the first segment exactly
        batch = spool.read(max_bytes=1 << 20)
        with trio.move_on_after(0.05) as idle:
            await spool.wait_readable(batch.end)
        assert idle.cancelled_caught
        spool.append(make_lines(1, start=14))  # lands in the next segment
        with trio.fail_after(1):
            await spool.wait_readable(batch.end)
        assert spool.read(batch.end).lines == make_lines(1, start=14)


async def test_write_with_fsync_always_syncs_before_returning(tmp_path: Path) -> None:
    with open_spool(tmp_path, fsync=FsyncPolicy.ALWAYS) as spool:
        assert await spool.write(make_lines(3)) == 3
        assert spool.statistics().syncs == 1
        assert await spool.write([]) == 0
        assert spool.statistics().syncs == 1
    with open_spool(tmp_path, fsync=FsyncPolicy.INTERVAL) as spool:
        assert await spool.write(make_lines(3, start=3)) == 3
        assert spool.statistics().syncs == 0
        assert read_all(spool) == make_lines(6)


def test_sync_in_a_thread_while_appending_reading_and_rotating(tmp_path: Path) -> None:
    lines = make_lines(3000)
    errors: list[Exception] = []
    stop = threading.Event()
    with open_spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024) as spool:

        def syncer() -> None:
            try:
                for _ in range(10_000):
                    if stop.is_set():
                        return
                    spool.sync()
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=syncer)
        thread.start()
        try:
            got: list[bytes] = []
            for i in range(0, 3000, 30):
                assert spool.append(lines[i : i + 30]) == 30
                batch = spool.read(max_bytes=1500)
                got += batch.lines
                spool.commit(batch.end)
            got += drain(spool)
        finally:
            stop.set()
            thread.join(timeout=10)
        assert not errors
        assert got == lines
        stats = spool.statistics()
        assert stats.syncs > 0
        assert stats.lines_dropped_oldest == 0


def test_no_space_left_is_counted_not_fatal(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes writes past a size fail with EFBIG, like a full file system would;
    # run in a child so the limit does not touch the test process.
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from relay.spool import Spool, Overflow
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        spool = Spool.open(Path({str(tmp_path)!r}), max_bytes=1 << 20, segment_bytes=1 << 18,
                           overflow=Overflow.DROP_NEWEST)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
        accepted = sum(spool.append([b"%05d" % i + b"x" * 95 for i in range(j, j + 5)])
                       for j in range(0, 100, 5))
        s = spool.statistics()
        print(accepted, s.lines_dropped_no_space, s.pending_lines)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        timeout=30,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    accepted, no_space, pending = map(int, result.stdout.split())
    # As many lines as fit are kept, not whole calls: 16 + 18 x 108 bytes fit in 2000.
    assert accepted == 18
    assert no_space == 100 - accepted
    assert pending == accepted
    with open_spool(tmp_path) as spool:
        assert spool.statistics().torn_tails == 0  # no partial frame was left behind
        assert len(read_all(spool)) == accepted


def test_batch_is_a_value(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append([b"one"])
        batch = spool.read()
        assert isinstance(batch, Batch)
        assert (batch.nbytes, batch.start.index, batch.end.index) == (3, 0, 1)
        with pytest.raises(AttributeError):
            batch.nbytes = 4  # type: ignore[misc]


def test_file_bytes_on_disk_match_the_codec(tmp_path: Path) -> None:
    lines = make_lines(5)
    with open_spool(tmp_path) as spool:
        spool.append(lines)
    data = segment_files(tmp_path)[0].read_bytes()
    assert data == codec.encode_segment(1, lines)
    assert zlib.crc32(lines[0]) == int.from_bytes(data[20:24], "little")


async def test_close_wakes_a_waiting_reader_with_an_error(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)

    async def closer() -> None:
        await trio.sleep(0.02)
        spool.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(closer)
        with trio.fail_after(2), pytest.raises(SpoolError, match="closed"):
            await spool.wait_readable(spool.head)


def test_sizes_too_small_to_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Spool.open(tmp_path, max_bytes=100)
    with pytest.raises(ValueError, match="segment_bytes"):
        Spool.open(tmp_path, segment_bytes=10)


class SpoolModel(RuleBasedStateMachine):
    """Random appends, reads, commits, reopens and crashes against a list of lines.

    The model is every accepted line in order and how many of them are behind the cursor
    (committed or dropped). After every step the spool must hold exactly the rest, in order,
    and its statistics must say so.
    """

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.options: dict[str, object] = {}
        self.spool: Spool | None = None
        self.accepted: list[bytes] = []
        self.taken = 0
        self.serial = 0
        self.dropped_seen = 0  # lines_dropped_oldest of the current spool object

    @initialize(
        overflow=st.sampled_from(list(Overflow)),
        max_bytes=st.integers(4096, 16384),
        segment_bytes=st.integers(512, 2048),
        # Reads from disk only, from a few recent appends in memory, or from memory mostly.
        recent_bytes=st.sampled_from([0, 300, 1 << 20]),
    )
    def open(
        self, overflow: Overflow, max_bytes: int, segment_bytes: int, recent_bytes: int
    ) -> None:
        self.options = {
            "overflow": overflow,
            "max_bytes": max_bytes,
            "segment_bytes": segment_bytes,
            "recent_bytes": recent_bytes,
        }
        self.spool = Spool.open(self.directory, **self.options)  # type: ignore[arg-type]

    @property
    def live(self) -> Spool:
        assert self.spool is not None
        return self.spool

    @rule(count=st.integers(1, 25), size=st.integers(0, 150))
    def append(self, count: int, size: int) -> None:
        lines = [(b"%07d|" % (self.serial + i)).ljust(size, b".") for i in range(count)]
        self.serial += count
        accepted = self.live.append(lines)
        if self.options["overflow"] is Overflow.DROP_OLDEST:
            assert accepted == count
        self.accepted += lines[:accepted]
        dropped = self.live.statistics().lines_dropped_oldest
        self.taken += dropped - self.dropped_seen
        self.dropped_seen = dropped

    @rule(count=st.integers(0, 60), max_bytes=st.integers(1, 3000))
    def read_and_commit(self, count: int, max_bytes: int) -> None:
        count = min(count, len(self.accepted) - self.taken)
        position = self.live.cursor
        left = count
        for _ in range(1000):
            if not left:
                break
            batch = self.live.read(position, max_bytes)
            take = min(left, len(batch.lines))
            assert batch.lines[:take] == self.accepted[self.taken + count - left :][:take]
            position = batch.position_after(take)
            left -= take
        self.live.commit(position)
        self.taken += count

    def _reopen(self) -> int:
        """Open again; the lines dropped on open (only if over the cap) count as taken."""
        self.spool = Spool.open(self.directory, **self.options)  # type: ignore[arg-type]
        self.dropped_seen = self.live.statistics().lines_dropped_oldest
        return self.dropped_seen

    @rule()
    def reopen(self) -> None:
        self.live.close()
        self.taken += self._reopen()

    @rule()
    def crash(self) -> None:
        """Die without closing: no seal, the cursor file as it was last written."""
        self.live._close_fds()
        dropped = self._reopen()
        # At least once: the cursor may fall back (resend), never forward (loss).
        pending = self.live.statistics().pending_lines
        assert len(self.accepted) - pending - dropped <= self.taken
        self.taken = len(self.accepted) - pending

    @rule()
    def sync(self) -> None:
        self.live.sync()

    @invariant()
    def holds_exactly_the_untaken_lines(self) -> None:
        if self.spool is None:
            return
        stats = self.spool.statistics()
        expected = self.accepted[self.taken :]
        assert read_all(self.spool, max_bytes=2048) == expected
        assert stats.pending_lines == len(expected)
        assert stats.pending_bytes == sum(map(len, expected))
        assert stats.disk_bytes <= stats.max_bytes
        assert (stats.corrupt_frames, stats.torn_tails, stats.lines_lost_corrupt) == (0, 0, 0)

    def teardown(self) -> None:
        if self.spool is not None:
            self.spool.close()
        shutil.rmtree(self.directory, ignore_errors=True)


SpoolModel.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_spool_against_a_model = SpoolModel.TestCase
