"""The spool's write policy (relay/spool/policy.py): tables of decisions, and a property that
carries them out on the pure segment table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, SEAL_SIZE
from relay.spool.policy import (
    MIN_MAX_BYTES,
    MIN_SEGMENT,
    RESERVE,
    Free,
    Limits,
    Step,
    free_disk,
    place_line,
    trim_on_open,
)
from relay.spool.stats import Overflow
from relay.spool.table import Segment, SegmentTable

OLDEST = Limits.of(max_bytes=10_000, segment_bytes=1_000, overflow=Overflow.DROP_OLDEST)
NEWEST = Limits.of(max_bytes=10_000, segment_bytes=1_000, overflow=Overflow.DROP_NEWEST)
ROOM = 10_000 - RESERVE  # what the files may take


def test_limits_keep_four_segments_under_the_cap_and_a_reserve() -> None:
    small = Limits.of(max_bytes=4_000, segment_bytes=32 << 20, overflow=Overflow.DROP_OLDEST)
    assert small.segment_limit == 1_000
    assert small.disk_limit == 4_000 - RESERVE
    assert RESERVE == SEAL_SIZE + FILE_HEADER_SIZE + SEAL_SIZE
    with pytest.raises(ValueError, match="max_bytes"):
        Limits.of(max_bytes=MIN_MAX_BYTES - 1, segment_bytes=4096, overflow=Overflow.DROP_OLDEST)
    with pytest.raises(ValueError, match="segment_bytes"):
        Limits.of(max_bytes=1 << 20, segment_bytes=MIN_SEGMENT - 1, overflow=Overflow.DROP_NEWEST)


@pytest.mark.parametrize(
    ("limits", "frame", "active_end", "active_used", "disk_bytes", "segments", "step"),
    [
        # Room in the segment and under the cap.
        (OLDEST, 100, 500, True, 2_000, 2, Step.APPEND),
        (OLDEST, 100, 900, True, 2_000, 2, Step.APPEND),  # exactly fills the segment
        # The segment is full: rotate, if the new header and the old seal fit too.
        (OLDEST, 100, 901, True, 2_000, 2, Step.ROTATE),
        (NEWEST, 100, 901, True, ROOM - 100 - FILE_HEADER_SIZE - SEAL_SIZE, 2, Step.ROTATE),
        (NEWEST, 100, 901, True, ROOM - 99 - FILE_HEADER_SIZE - SEAL_SIZE, 2, Step.REFUSE),
        # An empty active segment takes a line longer than a segment rather than rotating.
        (OLDEST, 5_000, FILE_HEADER_SIZE, False, 100, 1, Step.APPEND),
        # The cap: exactly full fits; one byte more drops the oldest, or refuses.
        (OLDEST, 100, 500, True, ROOM - 100, 3, Step.APPEND),
        (OLDEST, 100, 500, True, ROOM - 99, 3, Step.DROP_OLDEST),
        (NEWEST, 100, 500, True, ROOM - 99, 3, Step.REFUSE),
        # Only the active segment, holding lines: drop-oldest seals it and drops it.
        (OLDEST, 100, 500, True, ROOM, 1, Step.DROP_OLDEST),
        # Nothing to drop (an empty active segment only): refuse.
        (OLDEST, 20_000, FILE_HEADER_SIZE, False, FILE_HEADER_SIZE, 1, Step.REFUSE),
    ],
)
def test_where_a_line_goes(
    limits: Limits,
    frame: int,
    active_end: int,
    active_used: bool,
    disk_bytes: int,
    segments: int,
    step: Step,
) -> None:
    assert (
        place_line(
            limits,
            frame=frame,
            active_end=active_end,
            active_used=active_used,
            disk_bytes=disk_bytes,
            segments=segments,
        )
        is step
    )


@pytest.mark.parametrize(
    ("limits", "segments", "active_lines", "delivered", "free"),
    [
        # Everything delivered, one segment: recycle it, whatever the overflow policy.
        (OLDEST, 1, 10, True, Free.RECYCLE_ACTIVE),
        (NEWEST, 1, 10, True, Free.RECYCLE_ACTIVE),
        # An empty active segment frees nothing by being recycled.
        (NEWEST, 1, 0, True, Free.NOTHING),
        # A backlog: drop-oldest drops a closed segment; drop-newest keeps it.
        (OLDEST, 3, 10, False, Free.DROP_OLDEST),
        (OLDEST, 2, 0, True, Free.DROP_OLDEST),
        (NEWEST, 3, 10, False, Free.NOTHING),
        # The only segment holds undelivered lines: they are what is kept.
        (OLDEST, 1, 10, False, Free.NOTHING),
    ],
)
def test_what_a_full_disk_frees(
    limits: Limits, segments: int, active_lines: int, delivered: bool, free: Free
) -> None:
    assert (
        free_disk(limits, segments=segments, active_lines=active_lines, delivered=delivered) is free
    )


@pytest.mark.parametrize(
    ("limits", "disk_bytes", "segments", "active_lines", "trim"),
    [
        (OLDEST, 10_001, 3, 0, True),
        (OLDEST, 10_000, 3, 0, False),  # at the cap is not over it
        (NEWEST, 50_000, 3, 0, False),  # drop-newest never drops what was accepted
        (OLDEST, 50_000, 1, 0, False),  # nothing left to drop
        (OLDEST, 50_000, 1, 5, True),
    ],
)
def test_what_an_open_over_the_cap_trims(
    limits: Limits, disk_bytes: int, segments: int, active_lines: int, trim: bool
) -> None:
    assert (
        trim_on_open(limits, disk_bytes=disk_bytes, segments=segments, active_lines=active_lines)
        is trim
    )


def carry_out(limits: Limits, table: SegmentTable, frame: int) -> tuple[bool, int]:
    """What the facade does with place_line's answers, on the table alone; returns (accepted,
    segments dropped)."""
    dropped = 0
    for _ in range(len(table.segments) + 2):
        active = table.active
        step = place_line(
            limits,
            frame=frame,
            active_end=active.data_end,
            active_used=active.lines > 0,
            disk_bytes=table.disk_bytes,
            segments=len(table.segments),
        )
        if step is Step.DROP_OLDEST:
            if len(table.segments) == 1:  # seal the active segment so it can go
                table.sealed(active)
                table.add(Segment(active.id + 1, FILE_HEADER_SIZE, 0))
            table.drop_oldest()
            table.normalize_cursor()
            dropped += 1
            continue
        if step is Step.REFUSE:
            return False, dropped
        if step is Step.ROTATE:
            table.sealed(active)
            table.add(Segment(active.id + 1, FILE_HEADER_SIZE, 0))
        table.appended(frame, 1)
        return True, dropped
    raise AssertionError("the policy did not decide within one pass per segment")


@settings(max_examples=300, deadline=None)
@given(
    overflow=st.sampled_from(list(Overflow)),
    max_bytes=st.integers(MIN_MAX_BYTES, 20_000),
    segment_bytes=st.integers(MIN_SEGMENT, 5_000),
    payloads=st.lists(st.integers(0, 3_000), max_size=120),
)
def test_carrying_out_the_policy_keeps_the_cap_and_drops_only_what_it_must(
    overflow: Overflow, max_bytes: int, segment_bytes: int, payloads: list[int]
) -> None:
    limits = Limits.of(max_bytes=max_bytes, segment_bytes=segment_bytes, overflow=overflow)
    table = SegmentTable()
    table.add(Segment(0, FILE_HEADER_SIZE, 0))
    for payload in payloads:
        frame = FRAME_HEADER_SIZE + payload
        before = table.disk_bytes
        accepted, dropped = carry_out(limits, table, frame)
        # The cap holds with room for the seals and header a rotation or restart writes.
        assert table.disk_bytes + RESERVE <= max_bytes
        # A segment outgrows the rotation size only with its one line.
        for seg in table.segments:
            assert seg.data_end <= limits.segment_limit or seg.lines == 1
        if overflow is Overflow.DROP_NEWEST:
            assert dropped == 0
            # Refused only when it did not fit (with a rotation's header and seal, if due).
            assert accepted or before + frame + FILE_HEADER_SIZE + SEAL_SIZE > limits.disk_limit
        elif not accepted:
            # Drop-oldest refuses only a line that cannot fit in an empty spool.
            assert FILE_HEADER_SIZE + frame > limits.disk_limit
            assert table.pending_lines == 0
        if dropped and not accepted:
            # Everything went, and the line was still too long: an empty spool is left.
            assert table.pending_lines == 0


@given(
    frame=st.integers(FRAME_HEADER_SIZE, 3_000),
    active_end=st.integers(FILE_HEADER_SIZE, 1_200),
    disk_bytes=st.integers(FILE_HEADER_SIZE, 10_100),
    segments=st.integers(1, 12),
)
def test_what_the_fast_path_takes_the_policy_would_append(
    frame: int, active_end: int, disk_bytes: int, segments: int
) -> None:
    """The facade's fast path tests Limits.fits_active inline: it must never take a line that
    place_line would rotate for, drop for or refuse."""
    for limits in (OLDEST, NEWEST):
        if limits.fits_active(active_end=active_end, disk_bytes=disk_bytes, size=frame):
            for used in (False, True):
                step = place_line(
                    limits,
                    frame=frame,
                    active_end=active_end,
                    active_used=used,
                    disk_bytes=disk_bytes,
                    segments=segments,
                )
                assert step is Step.APPEND
