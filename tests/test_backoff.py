"""The reconnect policy: delay bounds, full jitter, failover order."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.backoff import (
    RetryState,
    after_dead_link,
    after_failure,
    after_success,
    back_to_primary,
    backoff_bound,
    backoff_delay,
    reconnect_delay,
)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (7, 30.0), (10_000, 30.0)],
)
def test_bound_doubles_then_caps(attempt: int, expected: float) -> None:
    assert backoff_bound(attempt, initial=0.5, maximum=30.0) == expected


@pytest.mark.parametrize(
    ("attempt", "initial", "maximum"), [(-1, 0.5, 30.0), (0, 0.0, 30.0), (0, 2.0, 1.0)]
)
def test_bound_rejects_nonsense(attempt: int, initial: float, maximum: float) -> None:
    with pytest.raises(ValueError):
        backoff_bound(attempt, initial=initial, maximum=maximum)


@given(
    attempt=st.integers(min_value=0, max_value=10**6),
    initial=st.floats(min_value=1e-3, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=1000.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_within_full_jitter_range(
    attempt: int, initial: float, extra: float, seed: int
) -> None:
    maximum = initial + extra
    delay = backoff_delay(attempt, initial=initial, maximum=maximum, rng=random.Random(seed))
    assert 0.0 <= delay <= backoff_bound(attempt, initial=initial, maximum=maximum) <= maximum


def test_jitter_spreads_over_whole_range() -> None:
    # Full jitter, not "bound plus a little": draws cover both low and high quarters.
    rng = random.Random(7)
    draws = [backoff_delay(4, initial=1.0, maximum=100.0, rng=rng) for _ in range(2000)]
    assert min(draws) < 16.0 * 0.05
    assert max(draws) > 16.0 * 0.95
    assert 7.0 < sum(draws) / len(draws) < 9.0


def test_same_seed_same_delays() -> None:
    a = [backoff_delay(i, initial=0.5, maximum=30.0, rng=random.Random(1)) for i in range(8)]
    b = [backoff_delay(i, initial=0.5, maximum=30.0, rng=random.Random(1)) for i in range(8)]
    assert a == b


def test_failover_walks_endpoints_in_priority_order_and_wraps() -> None:
    state = RetryState()
    visited = []
    for _ in range(9):
        visited.append(state.endpoint)
        state = after_failure(state, endpoints=3, failover_after=2)
    assert visited == [0, 0, 1, 1, 2, 2, 0, 0, 1]
    assert state.attempt == 9


def test_single_endpoint_never_fails_over() -> None:
    state = RetryState()
    for _ in range(5):
        state = after_failure(state, endpoints=1, failover_after=1)
    assert state.endpoint == 0
    assert state.attempt == 5


def test_success_keeps_endpoint_and_resets_counters() -> None:
    state = RetryState(endpoint=2, failures=1, attempt=7)
    assert after_success(state) == RetryState(endpoint=2)
    assert back_to_primary() == RetryState()


def test_delay_grows_with_consecutive_failures_across_endpoints() -> None:
    state = RetryState()
    bounds = []
    for _ in range(6):
        state = after_failure(state, endpoints=2, failover_after=1)
        bounds.append(backoff_bound(state.attempt, initial=0.5, maximum=4.0))
    assert bounds == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    delay = reconnect_delay(state, initial=0.5, maximum=4.0, rng=random.Random(3))
    assert 0.0 <= delay <= 4.0


def test_state_rejects_negative_fields() -> None:
    with pytest.raises(ValueError):
        RetryState(endpoint=-1)
    with pytest.raises(ValueError):
        after_failure(RetryState(), endpoints=0, failover_after=1)


def test_a_dead_link_fails_over_at_once_keeping_the_delay_of_the_state() -> None:
    state = after_failure(RetryState(endpoint=1), endpoints=3, failover_after=3)
    assert after_dead_link(state, endpoints=3) == RetryState(endpoint=2, attempt=1)
    assert after_dead_link(RetryState(endpoint=2), endpoints=3) == RetryState(endpoint=0)
    assert after_dead_link(RetryState(), endpoints=1) == RetryState()
