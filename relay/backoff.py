"""Reconnect policy for the forwarder: backoff delays and endpoint choice, without I/O.

Pure functions over a small frozen state so that the policy is tested with tables and
hypothesis, and the trio layer in ``forward.py`` only sleeps and connects. Randomness and
time are arguments.

Delays use exponential backoff with *full jitter* (a uniform draw between 0 and the
exponential bound): many relays that lose the same platform at the same moment then spread
their reconnects instead of arriving in synchronised waves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# 2**64 times any sane initial delay already exceeds every sane maximum; capping the exponent
# keeps the arithmetic in floats far from overflow after days of failures.
_MAX_EXPONENT = 64


def backoff_bound(attempt: int, *, initial: float, maximum: float) -> float:
    """The upper bound of the delay before retry number ``attempt`` (0-based)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if initial <= 0 or maximum < initial:
        raise ValueError(f"need 0 < initial <= maximum, got {initial} and {maximum}")
    return min(maximum, initial * 2.0 ** min(attempt, _MAX_EXPONENT))


def backoff_delay(attempt: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Full-jitter delay before retry number ``attempt``: uniform in [0, bound(attempt)]."""
    return rng.uniform(0.0, backoff_bound(attempt, initial=initial, maximum=maximum))


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryState:
    """Where the forwarder stands between connection attempts.

    ``endpoint`` is the index (priority order) of the endpoint to try next; ``failures`` counts
    consecutive failures on that endpoint (drives failover); ``attempt`` counts consecutive
    failures since the last good connection, across endpoints (drives the delay, so a site
    whose every endpoint is down settles at the maximum delay rather than hammering them).
    """

    endpoint: int = 0
    failures: int = 0
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.endpoint < 0 or self.failures < 0 or self.attempt < 0:
            raise ValueError(f"negative field in {self!r}")


def after_failure(state: RetryState, *, endpoints: int, failover_after: int) -> RetryState:
    """The state after a failed attempt (or a connection that broke before it was good).

    After ``failover_after`` consecutive failures on one endpoint the next one in priority
    order is tried, wrapping around to the first after the last.
    """
    if endpoints < 1 or failover_after < 1:
        raise ValueError("need at least one endpoint and failover_after >= 1")
    failures = state.failures + 1
    attempt = state.attempt + 1
    if failures >= failover_after and endpoints > 1:
        return RetryState(endpoint=(state.endpoint + 1) % endpoints, failures=0, attempt=attempt)
    return RetryState(endpoint=state.endpoint, failures=failures, attempt=attempt)


def after_success(state: RetryState) -> RetryState:
    """The state once a connection has proved good: stay on its endpoint, forget failures."""
    return RetryState(endpoint=state.endpoint)


def after_dead_link(state: RetryState, *, endpoints: int) -> RetryState:
    """The state after a connection to ``state.endpoint`` was found dead (it stalled, or the
    kernel gave up on it): the next endpoint at once.

    A silently blackholed endpoint answers no connection attempt either, so trying it again
    would cost ``failover_after`` connect timeouts before the failover that is due anyway.
    The delay stays that of ``state`` (a good connection's is below ``initial``).
    """
    if endpoints < 1:
        raise ValueError("need at least one endpoint")
    return RetryState(endpoint=(state.endpoint + 1) % endpoints, attempt=state.attempt)


def back_to_primary() -> RetryState:
    """The state after a successful periodic return to the first endpoint."""
    return RetryState()


def reconnect_delay(
    state: RetryState, *, initial: float, maximum: float, rng: random.Random
) -> float:
    """How long to wait before the next attempt described by ``state``.

    Also used after a good connection broke (``attempt`` 0): a jittered delay below
    ``initial``, so that a platform restart is not met by every relay at the same instant.
    """
    return backoff_delay(state.attempt, initial=initial, maximum=maximum, rng=rng)
