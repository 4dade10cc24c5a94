"""flow_sequence loss accounting (SPEC "Decoding": gaps counted as lost flows; resets and
reordering not miscounted). Time is injected, so every case runs in microseconds."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sequence import SequenceTracker

KEY = ("192.0.2.1", 5, 0, 1)
HOLD = 2.0
WRAP = 1 << 32


def tracker(**kwargs: float) -> SequenceTracker:
    return SequenceTracker(hold=HOLD, **kwargs)  # type: ignore[arg-type]


def test_first_datagram_only_sets_the_baseline() -> None:
    t = tracker()
    # Whatever the first sequence number, nothing before it is known, so nothing is lost.
    assert t.observe(KEY, 123_456, 30, 0.0) == 0
    assert t.flush() == 0


def test_consecutive_datagrams_lose_nothing() -> None:
    t = tracker()
    seq = 1000
    for i in range(50):
        assert t.observe(KEY, seq, 30, float(i)) == 0
        seq += 30
    assert t.open_gaps() == 0
    assert t.expire(1000.0) == 0
    assert t.flush() == 0


def test_gap_is_held_then_counted_once() -> None:
    t = tracker()
    t.observe(KEY, 0, 30, 0.0)
    # Datagram 30..59 is missing: the next one starts at 60.
    assert t.observe(KEY, 60, 30, 1.0) == 0
    assert t.open_gaps() == 1
    assert t.expire(1.0 + HOLD - 0.001) == 0  # still within the hold time
    assert t.expire(1.0 + HOLD) == 30
    assert t.open_gaps() == 0
    # Counted once: later ticks and the final flush do not count it again.
    assert t.expire(100.0) == 0
    assert t.flush() == 0


def test_gap_counted_by_a_later_datagram_of_the_same_stream() -> None:
    t = tracker()
    t.observe(KEY, 0, 10, 0.0)
    t.observe(KEY, 20, 10, 0.5)  # gap 10..19
    assert t.observe(KEY, 30, 10, 0.5 + HOLD) == 10


def test_late_datagram_fills_the_gap() -> None:
    t = tracker()
    t.observe(KEY, 0, 30, 0.0)
    t.observe(KEY, 60, 30, 0.1)
    assert t.observe(KEY, 30, 30, 0.2) == 0  # the reordered one arrives
    assert t.open_gaps() == 0
    assert t.expire(10.0) == 0
    assert t.flush() == 0


def test_late_datagram_filling_part_of_a_gap_leaves_the_rest_lost() -> None:
    t = tracker()
    t.observe(KEY, 0, 10, 0.0)
    t.observe(KEY, 100, 10, 0.0)  # gap 10..99 (90 flows, e.g. three datagrams of 30)
    t.observe(KEY, 40, 30, 0.1)  # the middle one of the three arrives late
    assert t.open_gaps() == 2  # 10..39 and 70..99
    assert t.expire(HOLD) == 60


def test_late_datagram_after_the_hold_cannot_uncount() -> None:
    t = tracker()
    t.observe(KEY, 0, 10, 0.0)
    t.observe(KEY, 20, 10, 0.0)
    assert t.expire(HOLD) == 10
    # Too late: it is neither counted again nor subtracted (counters only go up).
    assert t.observe(KEY, 10, 10, HOLD + 1) == 0
    assert t.flush() == 0


def test_duplicates_are_not_counted() -> None:
    t = tracker()
    t.observe(KEY, 0, 30, 0.0)
    t.observe(KEY, 30, 30, 0.0)
    for _ in range(5):
        assert t.observe(KEY, 0, 30, 0.1) == 0
        assert t.observe(KEY, 30, 30, 0.1) == 0
    # The stream carries on where it was: a duplicate did not move the expectation back.
    assert t.observe(KEY, 60, 30, 0.2) == 0
    assert t.open_gaps() == 0
    assert t.flush() == 0


def test_duplicate_of_the_datagram_after_a_gap_does_not_fill_the_gap() -> None:
    t = tracker()
    t.observe(KEY, 0, 10, 0.0)
    t.observe(KEY, 20, 10, 0.0)  # gap 10..19
    t.observe(KEY, 20, 10, 0.1)  # the same datagram again
    assert t.flush() == 10


def test_big_jump_forward_is_a_reset_not_loss() -> None:
    t = SequenceTracker(hold=HOLD, reset_window=1 << 20)
    t.observe(KEY, 5_000, 30, 0.0)
    assert t.observe(KEY, 5_030 + (1 << 20), 30, 0.1) == 0
    assert t.open_gaps() == 0
    # And the new stream is tracked from there.
    assert t.observe(KEY, 5_060 + (1 << 20), 30, 0.2) == 0
    assert t.flush() == 0


def test_exporter_restart_to_zero_is_not_loss() -> None:
    t = tracker()
    t.observe(KEY, 50_000_000, 30, 0.0)
    assert t.observe(KEY, 0, 30, 1.0) == 0  # the router rebooted
    assert t.observe(KEY, 30, 30, 1.1) == 0
    assert t.open_gaps() == 0
    # A real gap after the restart is counted against the new stream.
    t.observe(KEY, 90, 30, 1.2)
    assert t.flush() == 30


def test_jump_just_below_the_reset_window_is_loss() -> None:
    t = SequenceTracker(hold=HOLD, reset_window=1000)
    t.observe(KEY, 0, 10, 0.0)
    t.observe(KEY, 10 + 999, 10, 0.0)
    assert t.flush() == 999


def test_sequence_wraps_at_32_bits_without_loss() -> None:
    t = tracker()
    seq = WRAP - 45
    for i in range(5):
        assert t.observe(KEY, seq, 30, float(i) / 10) == 0
        seq = (seq + 30) % WRAP
    assert seq == 105
    assert t.open_gaps() == 0
    assert t.flush() == 0


def test_gap_across_the_wrap_is_counted_exactly() -> None:
    t = tracker()
    t.observe(KEY, WRAP - 40, 30, 0.0)  # expects WRAP - 10 next
    assert t.observe(KEY, 20, 30, 0.0) == 0  # WRAP-10 .. 19 missing: 30 flows
    assert t.expire(HOLD) == 30


def test_late_datagram_across_the_wrap_fills_the_gap() -> None:
    t = tracker()
    t.observe(KEY, WRAP - 40, 30, 0.0)
    t.observe(KEY, 20, 30, 0.0)
    assert t.observe(KEY, WRAP - 10, 30, 0.1) == 0  # straddles the wrap: 2**32-10 .. 19
    assert t.open_gaps() == 0
    assert t.flush() == 0


def test_streams_are_separate_per_exporter_version_and_engine() -> None:
    t = tracker()
    keys = [
        ("192.0.2.1", 5, 0, 1),
        ("192.0.2.1", 5, 0, 2),  # another engine id
        ("192.0.2.1", 5, 1, 1),  # another engine type
        ("192.0.2.1", 7, 0, 1),  # another version
        ("192.0.2.2", 5, 0, 1),  # another exporter
    ]
    # Interleaved consecutive streams with unrelated sequence numbers lose nothing...
    bases = [0, 1_000, 50_000, 7, 123]
    for step in range(10):
        for key, base in zip(keys, bases, strict=True):
            assert t.observe(key, base + 30 * step, 30, 0.0) == 0
    assert t.flush() == 0
    # ... and a gap in one stream is charged to that stream only.
    t.observe(keys[1], 1_000 + 30 * 10 + 30, 30, 1.0)
    for key, base in zip(keys, bases, strict=True):
        if key != keys[1]:
            t.observe(key, base + 30 * 10, 30, 1.0)
    assert t.open_gaps() == 1
    assert t.flush() == 30


def test_expire_settles_quiet_streams() -> None:
    t = tracker()
    t.observe(KEY, 0, 10, 0.0)
    t.observe(KEY, 15, 10, 0.0)  # 5 lost, then the exporter goes quiet
    assert t.expire(HOLD / 2) == 0
    assert t.expire(HOLD) == 5


def test_too_many_open_gaps_count_the_oldest_at_once() -> None:
    t = SequenceTracker(hold=3600.0, max_gaps=4)
    seq = 0
    t.observe(KEY, seq, 1, 0.0)
    lost = 0
    for _ in range(10):  # every other datagram lost: a new 1-flow gap each time
        seq += 2
        lost += t.observe(KEY, seq, 1, 0.0)
    assert t.open_gaps() == 4
    assert lost == 6
    assert t.flush() == 4


def test_reset_counts_what_was_still_open() -> None:
    # Gaps opened before a restart were real loss of the old stream (documented behaviour).
    t = tracker()
    t.observe(KEY, 0, 10, 0.0)
    t.observe(KEY, 20, 10, 0.0)
    assert t.observe(KEY, 900_000_000, 10, 0.1) == 10
    assert t.flush() == 0


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], set[int], list[int]]:
    """A contiguous stream (start, [(sequence, count)]), which of them are lost, and the
    order the rest arrive in (the first datagram first, the last one kept)."""
    start = draw(st.one_of(st.integers(0, WRAP - 1), st.integers(WRAP - 200, WRAP - 1)))
    counts = draw(st.lists(st.integers(1, 30), min_size=2, max_size=40))
    datagrams = []
    seq = start
    for count in counts:
        datagrams.append((seq, count))
        seq = (seq + count) % WRAP
    middle = range(1, len(datagrams) - 1)
    lost = set(draw(st.lists(st.sampled_from(middle), unique=True))) if middle else set()
    rest = [i for i in range(1, len(datagrams)) if i not in lost]
    order = [0, *draw(st.permutations(rest))]
    return start, datagrams, lost, order


@settings(max_examples=150, deadline=None)
@given(streams(), st.randoms(use_true_random=False), st.booleans())
def test_reordered_stream_counts_exactly_the_missing_flows(
    stream: tuple[int, list[tuple[int, int]], set[int], list[int]],
    rng: random.Random,
    duplicate: bool,
) -> None:
    _, datagrams, lost, order = stream
    t = tracker()
    arrivals = list(order)
    if duplicate:  # re-send a few already-seen datagrams at random points
        for _ in range(3):
            pos = rng.randrange(1, len(arrivals) + 1)
            arrivals.insert(pos, rng.choice(arrivals[:pos]))
    counted = 0
    for index in arrivals:
        seq, count = datagrams[index]
        counted += t.observe(KEY, seq, count, 0.0)  # all within the hold time
    counted += t.flush()
    assert counted == sum(datagrams[i][1] for i in lost)


# --- datagrams whose step is unknown (IPFIX with a set held for its template) ------------


def test_a_datagram_of_unknown_step_makes_the_next_sequence_ahead_the_expectation() -> None:
    t = SequenceTracker(hold=0.0)
    assert t.observe(KEY, 100, 5, 0.0) == 0
    assert t.observe(KEY, 105, None, 1.0) == 0  # in order; how many records it held is unknown
    assert t.observe(KEY, 180, 3, 2.0) == 0  # wherever it ended: no gap counted
    assert t.observe(KEY, 183, 3, 3.0) == 0
    assert t.observe(KEY, 190, 1, 4.0) == 4  # the step is known again: 186..189 are lost
    assert t.expire(10.0) == 0


def test_the_gap_before_a_datagram_of_unknown_step_is_still_counted() -> None:
    t = SequenceTracker(hold=0.0)
    t.observe(KEY, 100, 5, 0.0)
    assert t.observe(KEY, 110, None, 1.0) == 5


def test_a_late_datagram_does_not_end_an_unknown_step() -> None:
    t = SequenceTracker(hold=5.0)
    t.observe(KEY, 100, 5, 0.0)
    t.observe(KEY, 110, 5, 1.0)  # 105..109 open
    t.observe(KEY, 115, None, 2.0)
    t.observe(KEY, 105, 5, 3.0)  # fills the gap; the unknown step is still pending
    assert t.observe(KEY, 140, 1, 4.0) == 0
    assert t.flush() == 0
