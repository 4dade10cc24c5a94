"""The age of the oldest pending line: the pure ledger of write times, then the spool's use of
it with a fixed wall clock (appends, deliveries, a drop, a restart dated by file mtimes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.spool import Overflow, Spool
from relay.spool.ages import WriteTimes, age

# ---- the ledger -----------------------------------------------------------------------------

# (appends as (head, time), cursor, oldest pending written at)
LEDGER_TABLE = [
    ([], (0, 0), None),
    ([((0, 5), 100.0)], (0, 0), 100.0),
    ([((0, 5), 100.0)], (0, 4), 100.0),
    ([((0, 5), 100.0)], (0, 5), None),  # all delivered
    ([((0, 5), 100.0), ((0, 9), 103.0)], (0, 5), 103.0),
    # Within the resolution (1 s) of a bucket's start: the same bucket, dated by its first.
    ([((0, 5), 100.0), ((0, 9), 100.9)], (0, 5), 100.0),
    ([((0, 5), 100.0), ((0, 9), 100.9), ((0, 12), 101.0)], (0, 9), 101.0),
    # A rotation inside one append: the lines left in segment 0 belong to the next bucket.
    ([((0, 5), 100.0), ((1, 3), 105.0)], (0, 6), 105.0),
    ([((0, 5), 100.0), ((1, 3), 105.0)], (1, 0), 105.0),
    ([((0, 5), 100.0), ((1, 3), 105.0)], (1, 3), None),
    # A cursor moved past the head by a drop of whole segments.
    ([((0, 5), 100.0), ((1, 3), 105.0), ((2, 1), 110.0)], (2, 0), 110.0),
    # A head that did not move (an append refused) adds nothing.
    ([((0, 5), 100.0), ((0, 5), 107.0)], (0, 4), 100.0),
]


@pytest.mark.parametrize(("appends", "cursor", "expected"), LEDGER_TABLE)
def test_the_oldest_pending_line_is_dated_by_its_bucket(
    appends: list[tuple[tuple[int, int], float]], cursor: tuple[int, int], expected: float | None
) -> None:
    times = WriteTimes()
    for head, now in appends:
        times.written(head, now)
    assert times.oldest_pending(cursor) == expected


def test_delivered_buckets_are_forgotten() -> None:
    times = WriteTimes()
    for i in range(1, 11):
        times.written((0, i), float(i * 10))
    assert times.oldest_pending((0, 7)) == 80.0
    assert len(times) == 3
    assert times.oldest_pending((0, 3)) == 80.0  # a cursor never moves back


def test_past_the_bound_buckets_merge_and_the_age_reads_high_not_low() -> None:
    times = WriteTimes(max_buckets=4)
    for i in range(1, 6):
        times.written((0, i * 10), float(i * 100))
    assert len(times) <= 4
    # Line 15 was written at 200 s; after the merge it is dated by the older neighbour.
    assert times.oldest_pending((0, 15)) == 100.0
    assert times.oldest_pending((0, 45)) == 500.0


@given(
    st.lists(st.tuples(st.integers(1, 50), st.floats(0, 5)), min_size=1, max_size=200),
    st.data(),
)
def test_no_line_is_dated_after_it_was_written_nor_more_than_a_second_before(
    appends: list[tuple[int, float]], data: st.DataObject
) -> None:
    times = WriteTimes(max_buckets=10_000)
    written: list[float] = []  # the write time of each line
    now = 1000.0
    for count, pause in appends:
        now += pause
        written += [now] * count
        times.written((0, len(written)), now)
    cursor = data.draw(st.integers(0, len(written)))
    got = times.oldest_pending((0, cursor))
    if cursor == len(written):
        assert got is None
    else:
        assert got is not None
        assert written[cursor] - 1.0 < got <= written[cursor]


@pytest.mark.parametrize(
    ("written_at", "now", "expected"), [(None, 50.0, 0.0), (40.0, 50.0, 10.0), (60.0, 50.0, 0.0)]
)
def test_age_is_zero_when_nothing_is_pending_or_the_clock_stepped_back(
    written_at: float | None, now: float, expected: float
) -> None:
    assert age(written_at, now) == expected


# ---- in the spool ---------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_spool(directory: Path, wall: Clock, **kwargs: object) -> Spool:
    return Spool.open(directory, wall_clock=wall, **kwargs)  # type: ignore[arg-type]


def line(i: int) -> bytes:
    return b"line %06d " % i + b"x" * 80


def test_the_spool_reports_when_its_oldest_pending_line_was_written(tmp_path: Path) -> None:
    wall = Clock(1_700_000_000.0)
    with open_spool(tmp_path, wall) as spool:
        assert spool.statistics().oldest_pending_written_at is None
        assert spool.statistics().oldest_pending_age(wall.now) == 0
        spool.append([line(0), line(1)])
        wall.now += 30
        spool.append([line(2)])
        wall.now += 30
        assert spool.statistics().oldest_pending_age(wall.now) == 60
        batch = spool.read()
        spool.commit(batch.position_after(2))
        assert spool.statistics().oldest_pending_age(wall.now) == 30
        spool.commit(batch.end)
        assert spool.statistics().oldest_pending_written_at is None


def test_lines_dropped_for_the_cap_no_longer_count(tmp_path: Path) -> None:
    wall = Clock(1_700_000_000.0)
    with open_spool(
        tmp_path, wall, max_bytes=64 << 10, segment_bytes=8 << 10, overflow=Overflow.DROP_OLDEST
    ) as spool:
        for i in range(2000):
            spool.append([line(i)])
            wall.now += 1
        stats = spool.statistics()
        assert stats.lines_dropped_oldest > 0
        # The oldest line kept is the one after the last dropped, written one second apart.
        assert stats.oldest_pending_age(wall.now) == stats.pending_lines


def test_after_a_restart_recovered_lines_are_dated_by_their_segment_file(tmp_path: Path) -> None:
    wall = Clock(1_700_000_000.0)
    with open_spool(tmp_path, wall, segment_bytes=8 << 10) as spool:
        spool.append([line(i) for i in range(200)])  # several segments
    segments = sorted(p for p in tmp_path.iterdir() if p.suffix == ".seg")
    assert len(segments) > 1, sorted(tmp_path.iterdir())
    for n, path in enumerate(segments):
        os.utime(path, (1_600_000_000 + n, 1_600_000_000 + n))
    wall.now = 1_600_000_100.0
    with open_spool(tmp_path, wall, segment_bytes=8 << 10) as spool:
        assert spool.statistics().oldest_pending_age(wall.now) == 100
        batch = spool.read()  # the whole first segment
        spool.commit(batch.end)
        assert spool.statistics().oldest_pending_age(wall.now) == 99
