"""The spool's in-memory copy of recent appends (relay/spool/recent.py), on its own.

Positions are checked against the framing arithmetic the disk uses: each line takes an
8-byte frame header plus its payload, so the disk and memory paths hand out the same
positions for the same lines.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE
from relay.spool.recent import LINE_COST, WRITE_COST, RecentWrites


class Log:
    """Appends to one segment, as the spool makes them, with the model of what they hold."""

    def __init__(self, limit: int, segment: int = 3) -> None:
        self.recent = RecentWrites(limit)
        self.segment = segment
        self.lines: list[bytes] = []
        self.offsets = [FILE_HEADER_SIZE]  # frame boundary before each line, and the end

    def append(self, lines: list[bytes]) -> None:
        start, index = self.offsets[-1], len(self.lines)
        for line in lines:
            self.lines.append(line)
            self.offsets.append(self.offsets[-1] + FRAME_HEADER_SIZE + len(line))
        self.recent.add(
            segment=self.segment,
            offset=start,
            index=index,
            end=self.offsets[-1],
            lines=list(lines),
            nbytes=sum(map(len, lines)),
        )


def lines_of(sizes: list[int], start: int = 0) -> list[bytes]:
    return [(b"%05d|" % (start + i)).ljust(size, b"x") for i, size in enumerate(sizes)]


def test_a_whole_append_comes_back_with_its_end_position() -> None:
    log = Log(1 << 20)
    log.append(lines_of([20, 30, 40]))
    taken = log.recent.take(3, FILE_HEADER_SIZE, 1 << 16, 1 << 30)
    assert taken is not None
    assert taken.lines == log.lines
    assert (taken.nbytes, taken.end_offset, taken.end_index) == (90, log.offsets[3], 3)


def test_consecutive_appends_are_joined_up_to_max_bytes() -> None:
    log = Log(1 << 20)
    for i in range(4):
        log.append(lines_of([50, 50], start=2 * i))
    taken = log.recent.take(3, FILE_HEADER_SIZE, 250, 1 << 30)
    assert taken is not None
    # 250 bytes hold five 50-byte lines: two whole appends and half of the third.
    assert taken.lines == log.lines[:5]
    assert (taken.end_offset, taken.end_index) == (log.offsets[5], 5)
    rest = log.recent.take(3, taken.end_offset, 1 << 16, 1 << 30)
    assert rest is not None
    assert rest.lines == log.lines[5:]
    assert (rest.end_offset, rest.end_index) == (log.offsets[8], 8)


def test_at_least_one_line_even_when_it_is_longer_than_max_bytes() -> None:
    log = Log(1 << 20)
    log.append(lines_of([500, 10]))
    taken = log.recent.take(3, FILE_HEADER_SIZE, 100, 1 << 30)
    assert taken is not None
    assert taken.lines == log.lines[:1]
    assert taken.end_offset == log.offsets[1]


def test_unknown_positions_are_misses() -> None:
    log = Log(1 << 20)
    log.append(lines_of([20, 20]))
    assert log.recent.take(3, log.offsets[1], 100, 1 << 30) is None  # inside an append, never split
    assert log.recent.take(4, FILE_HEADER_SIZE, 100, 1 << 30) is None  # another segment
    assert log.recent.take(3, log.offsets[2], 100, 1 << 30) is None  # the end: nothing kept there


def test_the_oldest_appends_go_first_when_over_the_limit() -> None:
    cost = 40 + LINE_COST + WRITE_COST  # an append of one 40-byte line
    log = Log(2 * cost + 10)
    log.append(lines_of([40]))
    log.append(lines_of([40], start=1))
    assert log.recent.first(3) == FILE_HEADER_SIZE
    log.append(lines_of([40], start=2))
    assert log.recent.memory == 2 * cost
    assert len(log.recent) == 2
    assert log.recent.take(3, FILE_HEADER_SIZE, 1000, 1 << 30) is None
    assert log.recent.first(3) == log.offsets[1]
    assert log.recent.first(2) is None


def test_discard_before_forgets_what_was_committed() -> None:
    log = Log(1 << 20)
    for i in range(3):
        log.append(lines_of([10, 10], start=2 * i))
    log.recent.discard_before(3, log.offsets[3])  # inside the second append: it stays
    assert log.recent.first(3) == log.offsets[2]
    log.recent.discard_before(3, log.offsets[4])
    assert log.recent.first(3) == log.offsets[4]
    log.recent.discard_before(4, FILE_HEADER_SIZE)  # a later segment: everything before goes
    assert len(log.recent) == 0
    assert log.recent.memory == 0


def test_empty_lines_count_against_the_limit() -> None:
    log = Log(100_000)
    for _ in range(10_000):
        log.append([b""])  # no payload, but memory all the same
    assert log.recent.memory <= 100_000
    assert len(log.recent) == 100_000 // (LINE_COST + WRITE_COST)


def test_a_zero_limit_keeps_nothing() -> None:
    log = Log(0)
    log.append(lines_of([10]))
    assert len(log.recent) == 0
    assert log.recent.take(3, FILE_HEADER_SIZE, 100, 1 << 30) is None


@settings(max_examples=200, deadline=None)
@given(
    appends=st.lists(st.lists(st.integers(0, 120), min_size=1, max_size=12), max_size=12),
    reads=st.lists(st.integers(1, 400), min_size=1, max_size=40),
    limit=st.integers(0, 2000),
)
def test_reads_chained_from_memory_match_the_log(
    appends: list[list[int]], reads: list[int], limit: int
) -> None:
    log = Log(limit)
    for sizes in appends:
        log.append(lines_of(sizes, start=len(log.lines)))
    assert log.recent.memory <= max(limit, 0)
    first = log.recent.first(3)
    if first is None:
        assert log.recent.take(3, FILE_HEADER_SIZE, 1000, 1 << 30) is None
        return
    # Read from the oldest kept boundary on, each read where the last one ended.
    position = log.offsets.index(first)
    for max_bytes in reads:
        frame_limit = max_bytes + (max_bytes >> 4) + FRAME_HEADER_SIZE  # as a disk read
        taken = log.recent.take(3, log.offsets[position], max_bytes, frame_limit)
        if position == len(log.lines):
            assert taken is None
            break
        assert taken is not None
        count = len(taken.lines)
        assert count >= 1
        assert taken.lines == log.lines[position : position + count]
        assert taken.nbytes == sum(map(len, taken.lines))
        frames = log.offsets[position + count] - log.offsets[position]
        assert (taken.nbytes <= max_bytes and frames <= frame_limit) or count == 1
        more = log.lines[position + count : position + count + 1]
        # It stops only when the next line would not fit (or nothing is left).
        assert (
            not more
            or taken.nbytes + len(more[0]) > max_bytes
            or frames + FRAME_HEADER_SIZE + len(more[0]) > frame_limit
        )
        position += count
        assert (taken.end_offset, taken.end_index) == (log.offsets[position], position)
