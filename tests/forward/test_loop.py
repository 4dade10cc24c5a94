"""The forwarder loop with fake links under trio's MockClock: stall, resend, failover and the
return to the primary, in virtual time, without sockets.

A fake endpoint either answers (every byte written is acknowledged and its lines received at
once), refuses connections, or is blackholed: connections hang, and the bytes written on a
link that was open when the blackhole began are never acknowledged.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from relay.errors import EndpointError
from relay.forward import Endpoint, Forwarder, ForwarderConfig
from relay.forward.link import Link
from relay.spool import FsyncPolicy, Spool


class State(enum.Enum):
    UP = "up"
    REFUSING = "refusing"
    BLACKHOLED = "blackholed"


@dataclass
class FakeEndpoint:
    state: State = State.UP
    lines: list[bytes] = field(default_factory=list)
    connections: int = 0
    links: list[FakeLink] = field(default_factory=list)


class FakeLink:
    """A link whose acknowledgements follow its endpoint's state."""

    def __init__(self, endpoint: Endpoint, index: int, peer: FakeEndpoint) -> None:
        self.endpoint = endpoint
        self.index = index
        self.written = 100  # a "handshake"
        self.eof = False
        self.dead = False
        self.closed_cleanly = False
        self.aborted = False
        self._acked = self.written
        self._peer = peer
        self._broken = trio.Event()

    def describe(self) -> str:
        return "fake"

    def accepted(self) -> bool:
        return True

    async def wait_accepted(self) -> None:
        return

    async def send(self, data: bytes, cuts: Sequence[int]) -> None:
        await trio.lowlevel.checkpoint()
        self.written += len(data)
        if self._peer.state is State.UP:
            self._acked = self.written
            self._peer.lines.extend(data.splitlines())

    def acknowledged(self) -> int:
        return self._acked

    async def receive_until_closed(self) -> None:
        await self._broken.wait()
        self.eof = True
        raise EndpointError(str(self.endpoint), f"{self.endpoint} closed the connection")

    def break_(self) -> None:
        self._broken.set()

    async def close(self) -> None:
        if self._peer.state is State.BLACKHOLED:
            await trio.sleep_forever()  # no FIN, no EOF ever comes back
        self.closed_cleanly = True

    def abort(self) -> None:
        self.aborted = True


class FakeNetwork:
    def __init__(self, count: int, *, connect_timeout: float) -> None:
        self.endpoints = [FakeEndpoint() for _ in range(count)]
        self.connect_timeout = connect_timeout
        self.attempts: list[tuple[float, int]] = []

    async def connect(self, endpoint: Endpoint, index: int) -> Link:
        peer = self.endpoints[index]
        self.attempts.append((trio.current_time(), index))
        if peer.state is State.REFUSING:
            await trio.sleep(0.001)
            raise EndpointError(str(endpoint), f"cannot connect to {endpoint}: refused")
        if peer.state is State.BLACKHOLED:
            await trio.sleep(self.connect_timeout)
            raise EndpointError(str(endpoint), f"cannot connect to {endpoint}: no answer")
        peer.connections += 1
        link = FakeLink(endpoint, index, peer)
        peer.links.append(link)
        return link


def config_for(count: int, **overrides: Any) -> ForwarderConfig:
    settings: dict[str, Any] = {
        "batch_bytes": 64 << 10,
        "backoff_initial": 0.5,
        "backoff_max": 30.0,
        "failover_after": 3,
        "connect_timeout": 10.0,
        "drain_timeout": 5.0,
        "stall_timeout": 60.0,
        "primary_retry_interval": 300.0,
    }
    settings.update(overrides)
    return ForwarderConfig(
        endpoints=tuple(Endpoint(host="10.0.0.1", port=6514 + i) for i in range(count)),
        ssl_context=None,
        **settings,
    )


def numbered(start: int, stop: int) -> list[bytes]:
    return [b"line %09d %s" % (seq, b"x" * 180) for seq in range(start, stop)]


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    opened = Spool.open(tmp_path / "spool", max_bytes=1 << 30, fsync=FsyncPolicy.NEVER)
    yield opened
    opened.close()


@asynccontextmanager
async def running(forwarder: Forwarder) -> AsyncIterator[Forwarder]:
    async with trio.open_nursery() as nursery:
        await nursery.start(forwarder.run)
        yield forwarder
        nursery.cancel_scope.cancel()


async def wait_for(predicate: Any, *, timeout: float, what: str) -> float:
    """Virtual seconds until ``predicate()`` held."""
    began = trio.current_time()
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return trio.current_time() - began
    raise AssertionError(f"{what} did not happen within {timeout} s")


def assert_all_delivered(endpoints: Sequence[FakeEndpoint], n: int) -> Counter[bytes]:
    counts = Counter(line for e in endpoints for line in e.lines)
    assert set(counts) == set(numbered(0, n))
    return counts


async def test_lines_go_to_the_first_endpoint_and_are_committed_once_acknowledged(
    spool: Spool, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNetwork(2, connect_timeout=10.0)
    spool.append(numbered(0, 3000))
    forwarder = Forwarder(spool, config_for(2), connect=net.connect)
    async with running(forwarder):
        assert await forwarder.drain(timeout=5)
        stats = forwarder.statistics()
    assert net.endpoints[0].lines == numbered(0, 3000)
    assert net.endpoints[1].lines == []
    assert (stats.lines_forwarded, stats.lines_sent, stats.duplicates_resent) == (3000, 3000, 0)
    assert net.endpoints[0].links[0].closed_cleanly


async def test_a_refusing_first_endpoint_fails_over_after_failover_after_attempts(
    spool: Spool, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNetwork(2, connect_timeout=10.0)
    net.endpoints[0].state = State.REFUSING
    spool.append(numbered(0, 1000))
    forwarder = Forwarder(spool, config_for(2, failover_after=3), connect=net.connect)
    async with running(forwarder):
        assert await forwarder.drain(timeout=60)
    assert [index for _, index in net.attempts] == [0, 0, 0, 1]
    assert net.endpoints[1].lines == numbered(0, 1000)


async def test_a_link_that_breaks_mid_stream_resends_what_was_not_acknowledged(
    spool: Spool, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNetwork(1, connect_timeout=10.0)
    peer = net.endpoints[0]
    spool.append(numbered(0, 2000))
    forwarder = Forwarder(spool, config_for(1), connect=net.connect)
    async with running(forwarder):
        assert await forwarder.drain(timeout=5)
        # Acknowledged by TCP but not yet polled: then the connection breaks.
        peer.state = State.BLACKHOLED
        spool.append(numbered(2000, 2500))
        await wait_for(lambda: forwarder.statistics().lines_sent == 2500, timeout=5, what="sent")
        peer.state = State.UP
        peer.links[0].break_()
        assert await forwarder.drain(timeout=30)
        stats = forwarder.statistics()
    counts = assert_all_delivered(net.endpoints, 2500)
    assert stats.duplicates_resent == 500
    assert sum(counts.values()) == 2500  # the blackholed bytes never arrived: no duplicate
    assert peer.connections == 2


async def test_a_stalled_busy_link_fails_over_within_30_s_with_defaults_losing_nothing(
    spool: Spool, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNetwork(2, connect_timeout=10.0)  # the default connect_timeout
    primary = net.endpoints[0]
    spool.append(numbered(0, 1000))
    defaults = ForwarderConfig(
        endpoints=(Endpoint(host="10.0.0.1", port=6514), Endpoint(host="10.0.0.1", port=6515)),
        ssl_context=None,
    )
    forwarder = Forwarder(spool, defaults, connect=net.connect)
    async with running(forwarder):
        assert await forwarder.drain(timeout=5)
        primary.state = State.BLACKHOLED
        spool.append(numbered(1000, 2000))
        failover = await wait_for(
            lambda: forwarder.statistics().endpoint == "10.0.0.1:6515", timeout=600, what="failover"
        )
        assert await forwarder.drain(timeout=30)
        stats = forwarder.statistics()
    assert_all_delivered(net.endpoints, 2000)
    assert stats.duplicates_resent == 1000
    assert defaults.stall_timeout < failover < 30.0
    # No clean close was attempted on the dead link, no connection to the blackholed endpoint.
    assert primary.links[0].aborted
    assert [index for _, index in net.attempts] == [0, 1]


async def test_from_a_fallback_the_forwarder_returns_to_the_first_endpoint(
    spool: Spool, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNetwork(2, connect_timeout=10.0)
    net.endpoints[0].state = State.REFUSING
    spool.append(numbered(0, 1000))
    forwarder = Forwarder(
        spool, config_for(2, failover_after=1, primary_retry_interval=300.0), connect=net.connect
    )
    async with running(forwarder):
        assert await forwarder.drain(timeout=60)
        assert forwarder.statistics().endpoint == "10.0.0.1:6515"
        net.endpoints[0].state = State.UP
        waited = await wait_for(
            lambda: forwarder.statistics().endpoint == "10.0.0.1:6514", timeout=400, what="return"
        )
        spool.append(numbered(1000, 2000))
        assert await forwarder.drain(timeout=5)
        stats = forwarder.statistics()
    assert waited <= 300.0 + 1
    assert net.endpoints[1].lines == numbered(0, 1000)
    assert net.endpoints[0].lines == numbered(1000, 2000)
    assert stats.duplicates_resent == 0
    assert net.endpoints[1].links[0].closed_cleanly


async def test_cancelling_closes_the_link_cleanly_within_the_drain_budget(
    spool: Spool, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNetwork(1, connect_timeout=10.0)
    spool.append(numbered(0, 100))
    forwarder = Forwarder(spool, config_for(1, drain_timeout=5.0), connect=net.connect)
    async with running(forwarder):
        assert await forwarder.drain(timeout=5)
        net.endpoints[0].state = State.BLACKHOLED
        began = trio.current_time()
    assert trio.current_time() - began <= 5.0 + 0.1
    # The peer never answered the close: given up at the end of the budget.
    assert not net.endpoints[0].links[0].closed_cleanly


async def test_a_stop_with_a_stalled_but_connected_endpoint_takes_at_most_drain_timeout(
    spool: Spool, autojump_clock: trio.testing.MockClock
) -> None:
    # The service's SIGTERM path: drain(timeout=drain_timeout), then cancel run(). The clean
    # close must fit in what the drain left of the budget, not take a second one.
    net = FakeNetwork(1, connect_timeout=10.0)
    spool.append(numbered(0, 100))
    forwarder = Forwarder(spool, config_for(1, drain_timeout=5.0), connect=net.connect)
    async with trio.open_nursery() as nursery:
        await nursery.start(forwarder.run)
        assert await forwarder.drain(timeout=5)
        net.endpoints[0].state = State.BLACKHOLED  # connected, acknowledging nothing
        spool.append(numbered(100, 200))
        await wait_for(lambda: forwarder.statistics().lines_sent == 200, timeout=5, what="sent")
        began = trio.current_time()
        assert not await forwarder.drain(timeout=5.0)
        nursery.cancel_scope.cancel()
    assert trio.current_time() - began <= 5.0 + 0.1
    assert spool.statistics().pending_lines == 100
