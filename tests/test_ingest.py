"""One datagram in, its lines out, every outcome counted (SPEC "Decoding", "Security",
"Observability"). A real Renderer and RelayMetrics; only the clock is injected."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging

import pytest
from support.netflow_builder import Header, Record, datagram

from relay.allow import AllowList
from relay.config import DEFAULT_ALLOW
from relay.ingest import Ingest
from relay.logs import RateLimiter, TextFormatter
from relay.metrics import RelayMetrics
from relay.render import Rendered, Renderer

EXPORTER = "10.1.2.3"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_ingest(clock: Clock | None = None, **kwargs: object) -> tuple[Ingest, RelayMetrics]:
    metrics = RelayMetrics()
    ingest = Ingest(
        renderer=Renderer(),
        allow=AllowList(ipaddress.ip_network(c) for c in DEFAULT_ALLOW),
        metrics=metrics,
        clock=clock or Clock(),
        **kwargs,  # type: ignore[arg-type]
    )
    return ingest, metrics


def v5(sequence: int, count: int, *, engine_id: int = 0, trailing: bytes = b"") -> bytes:
    records = [
        Record(src_addr="192.168.0.1", dst_addr=f"10.0.0.{i % 250 + 1}", packets=i + 1)
        for i in range(count)
    ]
    header = Header(
        sys_uptime=100_000, unix_secs=1_795_000_000, flow_sequence=sequence, engine_id=engine_id
    )
    return datagram(5, records, header=header, trailing=trailing)


def samples(family: object) -> dict[tuple[tuple[str, str], ...], float]:
    return dict(family.values)  # type: ignore[attr-defined]


def test_valid_datagram_gives_one_line_per_record_and_counts() -> None:
    ingest, m = make_ingest()
    lines = ingest.process(v5(0, 3), EXPORTER)
    assert len(lines) == 3
    bodies = [json.loads(line.split(b": ", 1)[1]) for line in lines]
    assert [b["packets"] for b in bodies] == [1, 2, 3]
    assert all(b["exporter"] == EXPORTER for b in bodies)
    assert all(f" {EXPORTER} netstat.netflow.lt: ".encode() in line for line in lines)
    assert samples(m.packets_received) == {(("version", "5"),): 1}
    assert m.records_decoded.get() == 3
    assert samples(m.packets_malformed) == {}
    assert m.packets_denied.get() == 0


@pytest.mark.parametrize("version", [1, 5, 6, 7])
def test_every_version_is_counted_under_its_label(version: int) -> None:
    ingest, m = make_ingest()
    lines = ingest.process(datagram(version, [Record()] * 2), EXPORTER)
    assert len(lines) == 2
    assert samples(m.packets_received) == {(("version", str(version)),): 1}
    assert m.records_decoded.get() == 2


def test_ipv4_mapped_source_is_shown_and_allowed_as_ipv4() -> None:
    ingest, _ = make_ingest()
    lines = ingest.process(v5(0, 1), "::ffff:10.1.2.3")
    assert len(lines) == 1
    assert b" 10.1.2.3 netstat.netflow.lt: " in lines[0]
    assert b'"exporter":"10.1.2.3"' in lines[0]
    assert b"::ffff" not in lines[0]


MALFORMED = {
    "empty": b"",
    "short_header": b"\x00",
    "unknown_version": b"\x00\x0b" + bytes(40),  # 11: no NetFlow version
    "zero_count": datagram(5, [], count=0),
    "short_records": datagram(5, [Record()], count=2),
}


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_malformed_datagram_is_dropped_and_counted_by_reason(reason: str) -> None:
    ingest, m = make_ingest()
    assert ingest.process(MALFORMED[reason], EXPORTER) == []
    assert samples(m.packets_malformed) == {(("reason", reason),): 1}
    assert m.records_decoded.get() == 0
    assert sum(samples(m.packets_received).values()) == 1


def test_short_v5_header_is_malformed() -> None:
    ingest, m = make_ingest()
    assert ingest.process(v5(0, 1)[:20], EXPORTER) == []
    assert samples(m.packets_malformed) == {(("reason", "short_header"),): 1}


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x0babc", b"\x00\x08" + bytes(30)])
def test_unknown_or_missing_version_is_labelled_other(data: bytes) -> None:
    ingest, m = make_ingest()
    ingest.process(data, EXPORTER)
    assert samples(m.packets_received) == {(("version", "other"),): 1}


@pytest.mark.parametrize(
    ("data", "version"), [(b"\x00\x09abc", "9"), (b"\x00\x0a" + bytes(30), "10")]
)
def test_a_broken_v9_or_ipfix_header_is_labelled_by_its_version_and_malformed(
    data: bytes, version: str
) -> None:
    ingest, m = make_ingest()
    assert ingest.process(data, EXPORTER) == []
    assert samples(m.packets_received) == {(("version", version),): 1}
    assert sum(samples(m.packets_malformed).values()) == 1


@pytest.mark.parametrize("source", ["8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"])
def test_denied_exporter_is_dropped_and_counted(source: str) -> None:
    ingest, m = make_ingest()
    assert ingest.process(v5(0, 5), source) == []
    assert m.packets_denied.get() == 1
    assert m.records_decoded.get() == 0
    assert samples(m.packets_malformed) == {}


def test_denied_is_checked_before_decoding() -> None:
    # A malformed datagram from outside the allow-list is "denied", not "malformed": it is
    # counted once, under the reason an operator can act on.
    ingest, m = make_ingest()
    ingest.process(b"garbage", "8.8.8.8")
    assert m.packets_denied.get() == 1
    assert samples(m.packets_malformed) == {}


def test_over_max_count_and_trailing_bytes_are_decoded_and_counted_as_warnings() -> None:
    ingest, m = make_ingest()
    assert len(ingest.process(v5(0, 31), EXPORTER)) == 31  # Cisco's maximum is 30
    assert len(ingest.process(v5(31, 2, trailing=b"\x00" * 7), EXPORTER)) == 2
    assert samples(m.packets_warning) == {
        (("warning", "over_max_count"),): 1,
        (("warning", "trailing_bytes"),): 1,
    }
    assert m.records_decoded.get() == 33
    assert samples(m.packets_malformed) == {}


def test_sequence_gap_counted_after_the_hold_via_tick() -> None:
    clock = Clock()
    ingest, m = make_ingest(clock)
    ingest.process(v5(0, 10), EXPORTER)
    ingest.process(v5(25, 10), EXPORTER)  # 15 flows missing
    ingest.tick()
    assert m.flows_lost.get() == 0  # a late datagram may still come
    clock.now += 60
    ingest.tick()
    assert m.flows_lost.get() == 15
    ingest.tick()
    ingest.flush()
    assert m.flows_lost.get() == 15  # counted once


def test_reordered_datagram_is_not_loss() -> None:
    clock = Clock()
    ingest, m = make_ingest(clock)
    ingest.process(v5(0, 10), EXPORTER)
    ingest.process(v5(20, 10), EXPORTER)
    clock.now += 0.5
    ingest.process(v5(10, 10), EXPORTER)
    clock.now += 60
    ingest.tick()
    ingest.flush()
    assert m.flows_lost.get() == 0


def test_flush_counts_open_gaps_at_shutdown() -> None:
    ingest, m = make_ingest()
    ingest.process(v5(0, 10), EXPORTER)
    ingest.process(v5(12, 10), EXPORTER)
    ingest.flush()
    assert m.flows_lost.get() == 2


def test_duplicates_and_engines_are_not_loss() -> None:
    ingest, m = make_ingest()
    for _ in range(3):
        ingest.process(v5(0, 10), EXPORTER)  # the same datagram three times
    ingest.process(v5(500, 10, engine_id=1), EXPORTER)  # another engine, its own stream
    ingest.process(v5(10, 10), EXPORTER)
    ingest.process(v5(510, 10, engine_id=1), EXPORTER)
    ingest.process(v5(0, 10), "10.9.9.9")  # another exporter, its own stream
    ingest.flush()
    assert m.flows_lost.get() == 0


def test_v1_has_no_sequence_and_never_counts_loss() -> None:
    ingest, m = make_ingest()
    for _ in range(5):
        ingest.process(datagram(1, [Record()] * 3), EXPORTER)
    ingest.flush()
    assert m.flows_lost.get() == 0


def test_every_datagram_is_accounted_for_exactly_once() -> None:
    ingest, m = make_ingest()
    stream = [
        (v5(0, 3), EXPORTER),
        (b"", EXPORTER),
        (v5(3, 2), "8.8.8.8"),
        (b"\x00\x0b" + bytes(40), EXPORTER),  # version 11
        (datagram(7, [Record()] * 4), EXPORTER),
        (datagram(5, [Record()], count=3), EXPORTER),
        (v5(3, 2), "::ffff:192.168.1.1"),
    ]
    lines = sum(len(ingest.process(data, source)) for data, source in stream)
    received = sum(samples(m.packets_received).values())
    malformed = sum(samples(m.packets_malformed).values())
    assert received == len(stream)
    assert malformed == 3
    assert m.packets_denied.get() == 1
    assert lines == m.records_decoded.get() == 3 + 4 + 2
    assert received == malformed + m.packets_denied.get() + 3  # 3 datagrams decoded


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "relay.ingest" and r.levelno >= logging.WARNING]


def test_malformed_is_logged_with_exporter_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    ingest, _ = make_ingest()
    with caplog.at_level(logging.WARNING, logger="relay.ingest"):
        ingest.process(MALFORMED["zero_count"], EXPORTER)
    (record,) = _warnings(caplog)
    assert record.event == "datagram_malformed"  # type: ignore[attr-defined]
    assert record.exporter == EXPORTER  # type: ignore[attr-defined]
    assert record.reason == "zero_count"  # type: ignore[attr-defined]
    assert "count" in record.getMessage()


def test_a_flood_of_malformed_datagrams_logs_a_handful_then_says_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    ingest, m = make_ingest(clock)
    with caplog.at_level(logging.WARNING, logger="relay.ingest"):
        for _ in range(1000):
            ingest.process(MALFORMED["short_records"], EXPORTER)
            clock.now += 0.001  # 1 s in all: one rate-limit interval
        flood = _warnings(caplog)
        assert 1 <= len(flood) <= 10
        assert samples(m.packets_malformed) == {(("reason", "short_records"),): 1000}
        # Another exporter is not muted by the first one's flood.
        ingest.process(MALFORMED["short_records"], "10.9.9.9")
        assert _warnings(caplog)[-1].exporter == "10.9.9.9"  # type: ignore[attr-defined]
        caplog.clear()
        clock.now += 60
        ingest.process(MALFORMED["short_records"], EXPORTER)
    (after,) = _warnings(caplog)
    assert after.skipped == 1000 - len(flood)  # type: ignore[attr-defined]
    assert "skipped=" in TextFormatter().format(after)


def test_denied_flood_is_rate_limited_too(caplog: pytest.LogCaptureFixture) -> None:
    ingest, m = make_ingest(limiter=RateLimiter(interval=10.0, burst=2))
    with caplog.at_level(logging.WARNING, logger="relay.ingest"):
        for _ in range(500):
            ingest.process(v5(0, 1), "8.8.8.8")
    records = _warnings(caplog)
    assert len(records) == 2
    assert {r.event for r in records} == {"datagram_denied"}  # type: ignore[attr-defined]
    assert records[0].exporter == "8.8.8.8"  # type: ignore[attr-defined]
    assert m.packets_denied.get() == 500


def test_warnings_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    ingest, _ = make_ingest()
    with caplog.at_level(logging.WARNING, logger="relay.ingest"):
        ingest.process(v5(0, 1, trailing=b"xyz"), EXPORTER)
    (record,) = _warnings(caplog)
    assert record.event == "datagram_warning"  # type: ignore[attr-defined]
    assert record.reason == "trailing_bytes"  # type: ignore[attr-defined]
    assert "3 trailing bytes" in record.getMessage()


class PacketCountingRenderer(Renderer):
    """Renders v5 datagrams but says their sequence counts datagrams, as v9's does: ingest
    must take the step from the header, not assume flows (or test the version)."""

    def render_datagram(self, data: bytes, exporter: str) -> Rendered:
        rendered = super().render_datagram(data, exporter)
        header = dataclasses.replace(rendered.header, sequence_step=1)
        return dataclasses.replace(rendered, header=header)


class NoSequenceRenderer(Renderer):
    def render_datagram(self, data: bytes, exporter: str) -> Rendered:
        rendered = super().render_datagram(data, exporter)
        header = dataclasses.replace(rendered.header, has_sequence=False, sequence_step=0)
        return dataclasses.replace(rendered, header=header)


def ingest_with(renderer: Renderer) -> tuple[Ingest, RelayMetrics]:
    metrics = RelayMetrics()
    allow = AllowList(ipaddress.ip_network(c) for c in DEFAULT_ALLOW)
    ingest = Ingest(renderer=renderer, allow=allow, metrics=metrics, clock=Clock())
    return ingest, metrics


def test_sequence_gaps_follow_the_header_step_not_the_record_count() -> None:
    ingest, m = ingest_with(PacketCountingRenderer())
    for sequence in (0, 1, 2, 4):  # datagram 3 is missing; each holds 10 flows
        ingest.process(v5(sequence, 10), EXPORTER)
    ingest.flush()
    assert m.flows_lost.get() == 1


def test_a_header_without_a_sequence_is_not_tracked_whatever_its_version() -> None:
    ingest, m = ingest_with(NoSequenceRenderer())
    ingest.process(v5(0, 10), EXPORTER)
    ingest.process(v5(5000, 10), EXPORTER)
    ingest.flush()
    assert m.flows_lost.get() == 0
    assert not ingest.sequences._streams
