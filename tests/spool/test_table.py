"""The spool's segment table: position arithmetic and totals, without a file."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, SEAL_SIZE
from relay.spool.table import Position, Segment, SegmentTable

H = FILE_HEADER_SIZE
F = FRAME_HEADER_SIZE


def table_of(*segments: list[int], sealed_all_but_last: bool = True) -> SegmentTable:
    """A table of segments 1, 2, ... holding lines of the given payload lengths."""
    table = SegmentTable()
    for n, lengths in enumerate(segments, start=1):
        seg = Segment(n, H + sum(F + length for length in lengths), len(lengths))
        seg.sealed = sealed_all_but_last and n < len(segments)
        table.add(seg)
    table.cursor = Position(1, H, 0)
    return table


def no_scan(seg: Segment, offset: int) -> int:
    raise AssertionError(f"the table read segment {seg.id} at {offset}")


def test_totals_count_headers_seals_and_frames() -> None:
    table = table_of([10, 20], [5])
    assert table.total_lines == 3
    assert table.data_bytes == (F + 10 + F + 20) + (F + 5)
    assert table.disk_bytes == H + F + 10 + F + 20 + SEAL_SIZE + H + F + 5
    assert table.pending_lines == 3
    assert table.pending_bytes == 35
    assert table.head == Position(2, H + F + 5, 1)


@pytest.mark.parametrize(
    ("segment", "expected"),
    [(0, 0), (1, 0), (2, 1), (3, 1), (5, 2), (6, -1)],
)
def test_find_names_the_segment_or_the_next_one(segment: int, expected: int) -> None:
    table = SegmentTable()
    for n in (1, 3, 5):  # recovery can leave gaps
        table.add(Segment(n, H, 0))
    assert table.find(segment) == expected


RESOLVE_TABLE = [
    # (start, expected): the cursor is at the start of segment 1 (lines of 10 bytes).
    (None, Position(1, H, 0)),
    (Position(0, 0), Position(1, H, 0)),  # before the cursor: the cursor
    (Position(1, H + F + 10, 1), Position(1, H + F + 10, 1)),  # carries its index: trusted
    (Position(1, H + 2 * (F + 10), 2), Position(2, H, 0)),  # end of a closed segment: next
    (Position(1, 10_000), Position(2, H, 0)),  # past the end of segment 1
]


@pytest.mark.parametrize(("start", "expected"), RESOLVE_TABLE)
def test_resolve_gives_a_readable_position(start: Position | None, expected: Position) -> None:
    table = table_of([10, 10], [10])
    assert table.resolve(start, no_scan) == expected


def test_resolve_asks_for_the_index_of_a_hand_made_position() -> None:
    table = table_of([10, 10], [10])
    asked: list[tuple[int, int]] = []

    def index_of(seg: Segment, offset: int) -> int:
        asked.append((seg.id, offset))
        return 1

    assert table.resolve(Position(1, H + F + 10), index_of) == Position(1, H + F + 10, 1)
    assert asked == [(1, H + F + 10)]


def test_resolve_refuses_a_position_beyond_the_head() -> None:
    table = table_of([10])
    with pytest.raises(ValueError, match="beyond the head"):
        table.resolve(Position(2, H), no_scan)


def test_commit_target_clamps_into_a_cut_segment_and_counts_whole_segments() -> None:
    table = table_of([10, 10], [10], [10])
    assert table.commit_target(Position(2, H + F + 10, 1), no_scan) == (1, Position(2, H + 18, 1))
    assert table.commit_target(Position(1, 10_000, 9), no_scan) == (0, Position(1, H + 36, 2))
    with pytest.raises(ValueError, match="beyond the head"):
        table.commit_target(Position(9, H, 0), no_scan)


def test_normalize_cursor_returns_the_segments_it_passed() -> None:
    table = table_of([10], [10], [10])
    table.cursor = Position(1, H + F + 10, 1)
    gone = table.normalize_cursor()
    assert [seg.id for seg in gone] == [1]
    assert table.cursor == Position(2, H, 0)
    assert table.total_lines == 2


def test_the_active_segment_is_never_given_up_by_the_cursor() -> None:
    table = table_of([10])
    table.cursor = Position(1, H + F + 10, 1)
    assert table.normalize_cursor() == []
    assert table.pending_lines == 0


def test_drop_oldest_counts_only_the_untaken_lines() -> None:
    table = table_of([10, 10, 10], [10])
    table.cursor = Position(1, H + F + 10, 1)
    seg, dropped = table.drop_oldest()
    assert (seg.id, dropped) == (1, 2)
    assert table.cursor == Position(2, H, 0)


def test_cut_removes_the_lines_after_the_cut_and_the_seal() -> None:
    table = table_of([10, 10, 10], [10])
    lost = table.cut(table.segments[0], H + F + 10, 1)
    assert lost == 2
    assert table.total_lines == 2
    assert table.disk_bytes == (H + F + 10) + (H + F + 10)
    assert not table.segments[0].sealed


class TableModel(RuleBasedStateMachine):
    """Random appends, rotations, commits, drops and cuts against lists of line lengths.

    After every step the table's totals must equal what the model recomputes, and the cursor
    must be inside the oldest segment.
    """

    def __init__(self) -> None:
        super().__init__()
        self.table = SegmentTable()
        self.table.add(Segment(1, H, 0))
        self.table.cursor = Position(1, H, 0)
        self.model: list[list[int]] = [[]]  # line lengths per segment
        self.taken = 0  # lines of the oldest segment behind the cursor
        self.next_id = 2

    def _offset(self, seg: int, lines: int) -> int:
        return H + sum(F + n for n in self.model[seg][:lines])

    @rule(lengths=st.lists(st.integers(0, 50), min_size=1, max_size=5))
    def append(self, lengths: list[int]) -> None:
        self.table.appended(sum(F + n for n in lengths), len(lengths))
        self.model[-1] += lengths

    @precondition(lambda self: self.model[-1])
    @rule()
    def rotate(self) -> None:
        self.table.sealed(self.table.active)
        self.table.add(Segment(self.next_id, H, 0))
        self.next_id += 1
        self.model.append([])

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        seg = data.draw(st.integers(0, len(self.model) - 1))
        lines = data.draw(st.integers(0, len(self.model[seg])))
        if seg == 0 and lines < self.taken:
            return  # behind the cursor: the facade ignores it
        position = Position(self.table.segments[seg].id, self._offset(seg, lines), lines)
        skipped, target = self.table.commit_target(position, no_scan)
        assert skipped == seg
        for _ in range(skipped):
            self.table.pop_oldest()
        self.table.cursor = target
        gone = self.table.normalize_cursor()
        del self.model[:skipped]
        self.taken = lines
        if gone:
            assert len(gone) == 1
            assert lines == len(self.model[0])
            del self.model[0]
            self.taken = 0

    @precondition(lambda self: len(self.model) > 1)
    @rule()
    def drop_oldest(self) -> None:
        _, dropped = self.table.drop_oldest()
        assert dropped == len(self.model[0]) - self.taken
        del self.model[0]
        self.taken = 0
        self.table.normalize_cursor()

    @invariant()
    def totals_match_the_model(self) -> None:
        table = self.table
        lines = sum(map(len, self.model))
        assert table.total_lines == lines
        assert table.data_bytes == sum(F + n for seg in self.model for n in seg)
        sealed = len(self.model) - 1
        assert table.disk_bytes == H * len(self.model) + table.data_bytes + SEAL_SIZE * sealed
        assert table.pending_lines == lines - self.taken
        assert table.pending_bytes == sum(map(sum, self.model)) - sum(self.model[0][: self.taken])
        assert table.cursor.segment == table.segments[0].id
        assert table.cursor.offset == self._offset(0, self.taken)
        assert table.has_data_after(table.cursor) == (table.pending_lines > 0)


TableModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_table_against_a_model = TableModel.TestCase
