"""The exporter table (relay.exporters): counts per exporter, the bound, silent and back,
records/s over the last minute. Pure: the wall clock is a number the test moves."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.netflow_builder import Header, Record, datagram

from relay.allow import AllowList
from relay.config import DEFAULT_ALLOW
from relay.errors import ConfigError
from relay.exporters import OTHER, ExportersConfig, ExporterTable
from relay.ingest import Ingest
from relay.metrics import RelayMetrics
from relay.render import Renderer


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def v5(sequence: int, count: int) -> bytes:
    records = [Record(src_addr="192.168.0.1", dst_addr="10.0.0.1") for _ in range(count)]
    header = Header(sys_uptime=100_000, unix_secs=1_700_000_000, flow_sequence=sequence)
    return datagram(5, records, header=header)


def make_ingest(wall: Clock, **table: object) -> Ingest:
    return Ingest(
        renderer=Renderer(),
        allow=AllowList(ipaddress.ip_network(c) for c in DEFAULT_ALLOW),
        metrics=RelayMetrics(),
        clock=wall,
        wall_clock=wall,
        exporters=ExporterTable(wall_clock=wall, **table),  # type: ignore[arg-type]
    )


def test_a_v5_exporter_is_counted_by_its_address_with_versions_records_and_malformed() -> None:
    wall = Clock()
    ingest = make_ingest(wall)
    ingest.process(v5(0, 3), "10.1.2.3")
    ingest.process(v5(3, 2), "10.1.2.3")
    ingest.process(b"\x00\x05\x00", "10.1.2.3")  # cut short
    ingest.process(v5(0, 1), "203.0.113.9")  # outside the allow-list: not an exporter
    ingest.tick()
    (view,) = ingest.exporters.views()
    assert (view.exporter, view.domain, view.versions) == ("10.1.2.3", None, (5,))
    assert (view.datagrams, view.records) == (3, 5)
    assert sum(view.malformed.values()) == 1
    assert view.first_seen == view.last_seen == wall.now


def test_sequence_loss_is_attributed_to_the_exporter_that_lost_it() -> None:
    wall = Clock()
    ingest = make_ingest(wall)
    ingest.process(v5(0, 10), "10.1.2.3")
    ingest.process(v5(30, 10), "10.1.2.3")  # 20 flows missing
    ingest.process(v5(0, 10), "10.9.9.9")
    wall.now += 10  # past the hold: the gap is settled at the tick
    ingest.tick()
    views = {v.exporter: v for v in ingest.exporters.views()}
    assert views["10.1.2.3"].flows_lost == 20
    assert views["10.1.2.3"].loss_ratio == pytest.approx(20 / 40)
    assert views["10.9.9.9"].flows_lost == 0


def test_a_new_exporter_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    table = ExporterTable(wall_clock=Clock())
    with caplog.at_level(logging.INFO, logger="relay.exporters"):
        for _ in range(3):
            table.entry("10.0.0.1", 7).datagrams += 1
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events == ["exporter_new"]
    assert "10.0.0.1 (domain 7)" in caplog.records[0].getMessage()


def test_an_exporter_silent_too_long_is_warned_once_and_back_when_it_speaks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wall = Clock()
    table = ExporterTable(wall_clock=wall, silent_after=900)
    entry = table.entry("10.0.0.1")
    entry.datagrams += 1
    table.tick()
    with caplog.at_level(logging.INFO, logger="relay.exporters"):
        wall.now += 900
        table.tick()
        assert not table.views()[0].silent  # exactly silent_after is not yet "longer than"
        for _ in range(5):
            wall.now += 1
            table.tick()
        assert table.views()[0].silent
        entry.datagrams += 1
        wall.now += 1
        table.tick()
    assert not table.views()[0].silent
    assert table.views()[0].last_seen == wall.now
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events == ["exporter_silent", "exporter_back"]
    assert caplog.records[0].levelno == logging.WARNING


@pytest.mark.parametrize(
    ("per_second", "seconds", "expected"),
    [
        (100, 120, 100.0),  # a full minute of 100/s
        (100, 10, 100.0),  # a new exporter: over the seconds since it was first seen
        (0, 120, 0.0),
    ],
)
def test_records_per_second_is_over_the_last_minute(
    per_second: int, seconds: int, expected: float
) -> None:
    wall = Clock(1_700_000_000.0)
    table = ExporterTable(wall_clock=wall)
    entry = table.entry("10.0.0.1")
    for _ in range(seconds):
        wall.now += 1
        entry.datagrams += 1
        entry.records += per_second
        table.tick()
    assert table.views()[0].records_per_second == pytest.approx(expected, rel=0.02)


def test_seconds_without_a_tick_count_as_zero_records() -> None:
    wall = Clock(1_700_000_000.0)
    table = ExporterTable(wall_clock=wall)
    entry = table.entry("10.0.0.1")
    for _ in range(70):
        wall.now += 1
        entry.records += 60
        table.tick()
    wall.now += 30  # the loop stalled for 30 s, and nothing came
    table.tick()
    assert table.views()[0].records_per_second == pytest.approx(30 * 60 / 60, rel=0.05)


@settings(max_examples=50, deadline=None)
@given(
    bound=st.integers(1, 8),
    keys=st.lists(st.tuples(st.integers(0, 20), st.none() | st.integers(0, 3)), max_size=60),
)
def test_the_table_never_holds_more_than_its_bound_and_sums_the_rest_under_other(
    bound: int, keys: list[tuple[int, int | None]]
) -> None:
    table = ExporterTable(wall_clock=Clock(), max_exporters=bound)
    for host, domain in keys:
        table.entry(f"10.0.0.{host}", domain).datagrams += 1
    views = table.views()
    named = [v for v in views if v.exporter != OTHER]
    distinct = len(set(keys))
    assert len(table) == len(named) == min(bound, distinct)
    assert table.others == distinct - len(named)
    assert sum(v.datagrams for v in views) == len(keys)  # nothing lost, nothing twice
    assert any(v.exporter == OTHER for v in views) == (distinct > bound)


@pytest.mark.parametrize(
    ("raw", "message"),
    [(0, "exporters.silent_after"), ("soon", "exporters.silent_after"), (-5, "silent_after")],
)
def test_a_bad_silent_after_names_the_key(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExportersConfig(silent_after=raw)  # type: ignore[arg-type]
