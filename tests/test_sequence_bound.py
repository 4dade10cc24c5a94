"""The bound on sequence streams (issue 10, item 3): at most ``max_streams`` kept, the least
recently seen evicted, idle ones expired, each forgotten stream's gaps settled by the hold
rule (past the hold: lost; younger: unsettled, never guessed) and counted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sequence import SequenceStatistics, SequenceTracker, StreamKey

HOLD = 2.0
A: StreamKey = ("192.0.2.1", 5, 0, 0)
B: StreamKey = ("192.0.2.2", 5, 0, 0)
C: StreamKey = ("192.0.2.3", 5, 0, 0)
D: StreamKey = ("192.0.2.4", 5, 0, 0)


def bounded(max_streams: int = 3, idle_timeout: float = 60.0) -> SequenceTracker:
    return SequenceTracker(hold=HOLD, max_streams=max_streams, idle_timeout=idle_timeout)


def stats(
    *, streams: int, evicted: int = 0, expired: int = 0, unsettled: int = 0
) -> SequenceStatistics:
    return SequenceStatistics(
        streams=streams,
        streams_evicted=evicted,
        streams_expired=expired,
        flows_unsettled=unsettled,
    )


def test_a_new_stream_beyond_the_cap_evicts_the_least_recently_seen() -> None:
    t = bounded()
    for key in (A, B, C):
        t.observe(key, 0, 10, 0.0)
    t.observe(A, 10, 10, 1.0)  # A is seen again: B is now the least recently seen
    assert t.observe(D, 0, 10, 2.0) == 0
    assert [key in t for key in (A, B, C, D)] == [True, False, True, True]
    assert t.statistics() == stats(streams=3, evicted=1)


def test_the_cap_holds_whatever_the_number_of_keys() -> None:
    t = bounded(max_streams=100)
    for i in range(10_000):
        t.observe((f"10.0.{i >> 8}.{i & 0xFF}", 5, 0, 0), 0, 1, float(i) / 1000)
        assert len(t) <= 100
    assert t.statistics() == stats(streams=100, evicted=9_900)


def test_seeing_a_tracked_stream_evicts_nothing() -> None:
    t = bounded(max_streams=2)
    t.observe(A, 0, 10, 0.0)
    t.observe(B, 0, 10, 0.0)
    for i in range(1, 20):
        t.observe(A if i % 2 else B, 10 * (i // 2 + 1), 10, float(i))
    assert t.statistics().streams_evicted == 0


def test_an_evicted_stream_with_a_gap_past_the_hold_counts_it_as_lost() -> None:
    t = bounded(max_streams=1)
    t.observe(A, 0, 10, 0.0)
    t.observe(A, 20, 10, 0.0)  # 10..19 missing, and no expire() ran since
    # The eviction settles A as the hold rule would: 10 flows lost, counted once.
    assert t.observe(B, 0, 10, HOLD) == 10
    assert t.statistics() == stats(streams=1, evicted=1)
    assert t.flush() == 0


def test_an_evicted_stream_with_a_young_gap_counts_it_unsettled_not_lost() -> None:
    t = bounded(max_streams=1)
    t.observe(A, 0, 10, 0.0)
    t.observe(A, 20, 10, 0.0)
    # The late datagram might still come, but could no longer be matched: not lost, not
    # delivered, said as such.
    assert t.observe(B, 0, 10, HOLD / 2) == 0
    assert t.statistics() == stats(streams=1, evicted=1, unsettled=10)
    assert t.expire(100.0) == 0
    assert t.flush() == 0


def test_an_evicted_stream_that_comes_back_starts_from_its_next_datagram() -> None:
    t = bounded(max_streams=1)
    t.observe(A, 0, 10, 0.0)
    t.observe(B, 0, 10, 1.0)  # evicts A
    # What A sent meanwhile is unknown: its next datagram is a new baseline, not a gap.
    assert t.observe(A, 5_000, 10, 2.0) == 0  # evicts B
    assert t.observe(A, 5_010, 10, 3.0) == 0
    assert t.open_gaps() == 0
    assert t.statistics() == stats(streams=1, evicted=2)


def test_expire_forgets_streams_idle_for_the_idle_timeout() -> None:
    t = bounded(idle_timeout=60.0)
    t.observe(A, 0, 10, 0.0)
    t.observe(B, 0, 10, 30.0)
    assert t.expire(59.9) == 0
    assert A in t
    assert t.expire(60.0) == 0
    assert [A in t, B in t] == [False, True]
    assert t.statistics() == stats(streams=1, expired=1)
    assert t.expire(90.0) == 0
    assert t.statistics() == stats(streams=0, expired=2)


def test_a_stream_seen_again_is_not_idle() -> None:
    t = bounded(idle_timeout=60.0)
    t.observe(A, 0, 10, 0.0)
    t.observe(B, 0, 10, 1.0)
    t.observe(A, 10, 10, 50.0)  # A is now the most recently seen, B the oldest
    assert t.expire(61.0) == 0
    assert [A in t, B in t] == [True, False]


def test_an_idle_stream_with_an_open_gap_counts_it_as_lost_when_expired() -> None:
    t = bounded(idle_timeout=60.0)
    t.observe(A, 0, 10, 0.0)
    t.observe(A, 25, 10, 0.0)  # 10..24 missing, then the exporter goes silent
    # Nobody called expire() within the hold; the idle expiry settles the gap exactly once.
    assert t.expire(60.0) == 15
    assert t.statistics() == stats(streams=0, expired=1)
    assert t.flush() == 0


def test_an_idle_timeout_shorter_than_the_hold_leaves_young_gaps_unsettled() -> None:
    t = SequenceTracker(hold=10.0, idle_timeout=5.0)
    t.observe(A, 0, 10, 0.0)
    t.observe(A, 20, 10, 1.0)
    assert t.expire(6.0) == 0
    assert t.statistics() == stats(streams=0, expired=1, unsettled=10)


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_streams"):
        SequenceTracker(max_streams=0)


def test_pending_reports_the_open_flows_of_one_stream() -> None:
    t = bounded()
    t.observe(A, 0, 10, 0.0)
    t.observe(A, 30, 10, 0.0)
    t.observe(A, 15, 5, 0.0)  # fills 15..19 of 10..29
    assert t.pending(A) == 15
    assert t.pending(B) == 0


# ---- the property: bounded memory, and no change for streams never forgotten --------------

KEYS = [(f"192.0.2.{i}", 5, 0, 0) for i in range(8)]
Event = tuple[str, int, int, int, float]  # op, key index, shift, count, time step


events = st.lists(
    st.tuples(
        st.sampled_from(["observe"] * 6 + ["expire"]),
        st.integers(0, len(KEYS) - 1),
        # Where the datagram starts against the stream's furthest end so far: in order
        # (0), past a gap (> 0), or late and duplicate (< 0).
        st.one_of(st.just(0), st.integers(-60, 60)),
        st.integers(1, 30),
        st.sampled_from([0.0, 0.1, 0.5, 1.5, 3.0, 20.0]),
    ),
    min_size=10,
    max_size=120,
)


def run(
    t: SequenceTracker, script: list[Event], cap: int
) -> tuple[dict[StreamKey, int], set[StreamKey]]:
    """Loss counted per stream, and the streams that were forgotten at some point; checks
    the cap after every step and that each forgetting was counted.

    observe() returns its own stream's loss plus what an eviction settled; expire() returns
    a total. Both are split per stream from ``pending`` (which only the settling of that
    stream lowers) and ``flows_unsettled``, so the comparison is stream by stream.
    """
    lost = dict.fromkeys(KEYS, 0)
    forgotten: set[StreamKey] = set()
    forgettings = 0
    now = 0.0
    furthest = dict.fromkeys(KEYS, 1_000)
    for op, index, shift, count, step in script:
        now += step
        key = KEYS[index]
        sequence = furthest[key] + shift
        furthest[key] = max(furthest[key], sequence + count)
        pending = {k: t.pending(k) for k in KEYS if k in t}
        unsettled = t.statistics().flows_unsettled
        total = t.observe(key, sequence, count, now) if op == "observe" else t.expire(now)
        gone = {k for k in pending if k not in t}
        forgotten |= gone
        forgettings += len(gone)
        assert len(gone) <= 1 or op == "expire"
        settled_by_forgetting = sum(pending[k] for k in gone) - (
            t.statistics().flows_unsettled - unsettled
        )
        if op == "observe":
            lost[key] += total - settled_by_forgetting
        else:
            settled = {k: before - t.pending(k) for k, before in pending.items() if k not in gone}
            for k, flows in settled.items():
                lost[k] += flows
            assert sum(settled.values()) == total - settled_by_forgetting
        assert len(t) <= cap
    final = t.statistics()
    assert final.streams_evicted + final.streams_expired == forgettings
    for k in KEYS:
        lost[k] += t.pending(k)
    return lost, forgotten


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, len(KEYS) // 2), st.sampled_from([5.0, 30.0, 1e9]))
def test_bounded_streams_never_exceed_the_cap_and_count_as_unbounded_ones(
    script: list[Event], cap: int, idle: float
) -> None:
    big = 10**9
    limited, forgotten = run(
        SequenceTracker(hold=HOLD, max_streams=cap, idle_timeout=idle), script, cap
    )
    unlimited, never = run(
        SequenceTracker(hold=HOLD, max_streams=big, idle_timeout=1e12), script, big
    )
    assert not never
    for key in KEYS:
        if key not in forgotten:
            assert limited[key] == unlimited[key], key
