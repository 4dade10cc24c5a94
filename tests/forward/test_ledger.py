"""The delivery ledger, without sockets: tables of (sent, acknowledged) -> commits, and a
hypothesis model of a connection's life."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.forward.ledger import Commit, Ledger

HANDSHAKE = 1000


def ledger_with(*flights: tuple[int, int]) -> Ledger[int]:
    """Flights of (raw bytes, lines) written after a 1000-byte handshake; end = raw_end."""
    ledger: Ledger[int] = Ledger(written=HANDSHAKE, now=0.0)
    raw = HANDSHAKE
    for size, lines in flights:
        raw += size
        ledger.sent(raw_end=raw, end=raw, lines=lines, wire_bytes=size - 10, now=0.0)
    return ledger


@pytest.mark.parametrize(
    ("acked", "expected"),
    [
        (HANDSHAKE, None),  # the handshake's bytes prove nothing about data
        (HANDSHAKE + 99, None),  # one byte short of the first flight
        (HANDSHAKE + 100, Commit(end=1100, lines=1, wire_bytes=90)),
        (HANDSHAKE + 299, Commit(end=1100, lines=1, wire_bytes=90)),
        (HANDSHAKE + 300, Commit(end=1300, lines=3, wire_bytes=280)),
        (HANDSHAKE + 700, Commit(end=1700, lines=7, wire_bytes=670)),
    ],
)
def test_only_wholly_acknowledged_flights_are_committed_in_one_merged_commit(
    acked: int, expected: Commit[int] | None
) -> None:
    ledger = ledger_with((100, 1), (200, 2), (400, 4))
    assert ledger.acknowledged(acked, now=1.0) == expected


def test_nothing_is_committed_before_the_server_accepted_us_but_progress_counts() -> None:
    ledger = ledger_with((100, 1))
    assert ledger.acknowledged(HANDSHAKE + 100, now=50.0, committable=False) is None
    assert not ledger.stalled(now=100.0, timeout=60.0)  # the ack at 50 s was progress
    assert ledger.acknowledged(HANDSHAKE + 100, now=101.0) == Commit(
        end=1100, lines=1, wire_bytes=90
    )
    assert not ledger.outstanding


@pytest.mark.parametrize(
    ("acks", "now", "stalled"),
    [
        ((), 60.0, False),  # exactly the timeout: not yet
        ((), 60.5, True),
        (((30.0, HANDSHAKE + 10),), 60.5, False),  # a partial ack is progress
        (((30.0, HANDSHAKE + 10),), 90.5, True),
        (((30.0, HANDSHAKE + 10), (40.0, HANDSHAKE + 10)), 90.5, True),  # no new byte
    ],
)
def test_a_stall_is_outstanding_data_with_no_new_acknowledged_byte_for_the_timeout(
    acks: tuple[tuple[float, int], ...], now: float, stalled: bool
) -> None:
    ledger = ledger_with((100, 1))
    for at, acked in acks:
        ledger.acknowledged(acked, now=at)
    assert ledger.stalled(now=now, timeout=60.0) is stalled


def test_an_idle_link_never_stalls_and_the_stall_clock_starts_with_the_first_flight() -> None:
    ledger: Ledger[int] = Ledger(written=HANDSHAKE, now=0.0)
    assert not ledger.stalled(now=1e6, timeout=60.0)
    ledger.sent(raw_end=HANDSHAKE + 10, end=1, lines=1, wire_bytes=10, now=1e6)
    assert not ledger.stalled(now=1e6 + 60, timeout=60.0)
    assert ledger.stalled(now=1e6 + 61, timeout=60.0)


def test_abandon_counts_flights_in_the_air_and_an_interrupted_write() -> None:
    ledger = ledger_with((100, 1), (200, 2))
    ledger.sending(5)
    assert ledger.abandon() == 8
    assert not ledger.outstanding
    assert ledger.abandon() == 0


def test_a_returned_write_is_no_longer_counted_as_interrupted() -> None:
    ledger = ledger_with()
    ledger.sending(5)
    ledger.sent(raw_end=HANDSHAKE + 50, end=1, lines=5, wire_bytes=50, now=0.0)
    assert ledger.abandon() == 5


def test_raw_end_going_backwards_is_a_bug() -> None:
    ledger = ledger_with((100, 1))
    with pytest.raises(ValueError, match="backwards"):
        ledger.sent(raw_end=HANDSHAKE + 50, end=0, lines=1, wire_bytes=1, now=0.0)


# --------------------------------------------------------------------------------------------
# Model: a connection's life as random steps; the books always balance.


@dataclass
class Model:
    written: int = HANDSHAKE
    acked: int = HANDSHAKE
    sent_lines: int = 0
    committed_lines: int = 0
    committed_end: int = 0
    flights: list[tuple[int, int]] = field(default_factory=list)  # (raw_end, lines)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 5000), st.integers(1, 50)),
        st.tuples(st.just("ack"), st.integers(0, 6000), st.booleans()),
        st.tuples(st.just("wait"), st.integers(0, 100), st.just(False)),
    ),
    max_size=60,
)


@given(steps)
def test_ledger_matches_a_model_of_sends_acks_and_time(
    script: list[tuple[str, int, int | bool]],
) -> None:
    ledger: Ledger[int] = Ledger(written=HANDSHAKE, now=0.0)
    model = Model()
    now = 0.0
    progress_at = 0.0
    for op, amount, flag in script:
        if op == "send":
            if not model.flights:
                progress_at = now
            model.written += amount
            model.sent_lines += int(flag)
            model.flights.append((model.written, int(flag)))
            end = model.written
            ledger.sent(raw_end=end, end=end, lines=int(flag), wire_bytes=amount, now=now)
        elif op == "ack":
            # The kernel's count only grows and never passes what was written.
            acked = max(model.acked, min(model.written, model.acked + amount))
            if model.flights:
                if acked > model.acked:
                    progress_at = now
                model.acked = acked
            commit = ledger.acknowledged(acked, now=now, committable=bool(flag))
            done = [f for f in model.flights if f[0] <= acked] if flag else []
            if done:
                assert commit is not None
                assert commit.end == done[-1][0] > model.committed_end
                assert commit.lines == sum(lines for _, lines in done)
                model.committed_end = commit.end
                model.committed_lines += commit.lines
                model.flights = model.flights[len(done) :]
            else:
                assert commit is None
        else:
            now += amount
        assert ledger.outstanding == bool(model.flights)
        assert ledger.stalled(now=now, timeout=50.0) == (
            bool(model.flights) and now - progress_at > 50.0
        )
        # Every line sent is committed or still outstanding: none lost, none counted twice.
        assert model.committed_lines + ledger.outstanding_lines == model.sent_lines
    assert ledger.abandon() == sum(lines for _, lines in model.flights)
    assert not ledger.outstanding
