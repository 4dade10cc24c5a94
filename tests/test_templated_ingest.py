"""Ingest of NetFlow v9 and IPFIX: a datagram's sets each meet their own fate, and every one
is counted (fixed clocks; datagrams from the RFC-built test encoder)."""

from __future__ import annotations

import ipaddress
import json
import struct

from support import ipfix_builder as b
from support.syslog import parse_line

from relay.allow import AllowList
from relay.flows.template import FieldSpec, Template
from relay.ingest import Ingest
from relay.metrics import RelayMetrics
from relay.render import Renderer

EXPORTER = "192.0.2.7"
FLOW = Template(
    template_id=300,
    fields=(
        FieldSpec(element=8, length=4),
        FieldSpec(element=12, length=4),
        FieldSpec(element=2, length=4),
        FieldSpec(element=1, length=4),
        FieldSpec(element=22, length=4),
        FieldSpec(element=21, length=4),
    ),
)


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_800_000_000.0


# IPFIX: absolute milliseconds (21/22 would wait for systemInitTimeMilliseconds).
IPFIX_FLOW = Template(
    template_id=300,
    fields=(FieldSpec(element=8, length=4), FieldSpec(element=152, length=8)),
)


def ipfix_flows(n: int) -> bytes:
    one = b.record(IPFIX_FLOW, [bytes([10, 0, 0, 9]), struct.pack("!Q", 1_800_000_000_000)])
    return b.data_set(300, [one] * n)


def ingest(clocks: Clocks) -> tuple[Ingest, RelayMetrics]:
    metrics = RelayMetrics()
    everyone = AllowList([ipaddress.ip_network("0.0.0.0/0")])
    return Ingest(
        renderer=Renderer(),
        allow=everyone,
        metrics=metrics,
        clock=lambda: clocks.mono,
        wall_clock=lambda: clocks.wall,
    ), metrics


def flow(src: int, packets: int) -> bytes:
    values = [bytes([10, 0, 0, src]), bytes([10, 0, 1, 1]), struct.pack("!I", packets)]
    values += [
        struct.pack("!I", packets * 100),
        struct.pack("!I", 990_000),
        struct.pack("!I", 995_000),
    ]
    return b.record(FLOW, values)


def bodies(lines: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(parse_line(line.decode()).body) for line in lines]


def test_v9_template_and_data_in_one_datagram_become_lines_with_the_common_keys() -> None:
    clocks = Clocks()
    relay, metrics = ingest(clocks)
    datagram = b.v9_message(
        [b.template_set([FLOW], ipfix=False), b.data_set(300, [flow(1, 5), flow(2, 6)])],
        uptime=1_000_000,
        secs=1_800_000_000,
        sequence=41,
        source_id=3,
    )
    got = bodies(relay.process(datagram, EXPORTER, 2055))
    assert [g["src_addr"] for g in got] == ["10.0.0.1", "10.0.0.2"]
    first = got[0]
    assert list(first)[:3] == ["version", "exporter", "flow_sequence"]
    assert (first["version"], first["flow_sequence"], first["source_id"]) == (9, 41, 3)
    assert (first["packets"], first["bytes"]) == (5, 500)
    assert metrics.records_decoded.get() == 2
    assert metrics.packets_received.get((("version", "9"),)) == 1


def test_v9_times_are_export_time_minus_uptime_differences() -> None:
    clocks = Clocks()
    relay, _ = ingest(clocks)
    datagram = b.v9_message(
        [b.template_set([FLOW], ipfix=False), b.data_set(300, [flow(1, 5)])],
        uptime=1_000_000,
        secs=1_800_000_000,
    )
    (got,) = bodies(relay.process(datagram, EXPORTER, 2055))
    # Export 2027-01-15T08:00:00Z; first = 10 s before it, last = 5 s before it.
    assert got["first"] == "2027-01-15T07:59:50.000Z"
    assert got["last"] == "2027-01-15T07:59:55.000Z"


def test_data_before_its_template_is_rendered_when_the_template_comes() -> None:
    clocks = Clocks()
    relay, metrics = ingest(clocks)
    early = b.v9_message([b.data_set(300, [flow(1, 5)])], sequence=1)
    assert relay.process(early, EXPORTER, 2055) == []
    later = b.v9_message(
        [b.template_set([FLOW], ipfix=False), b.data_set(300, [flow(2, 6)])], sequence=2
    )
    got = bodies(relay.process(later, EXPORTER, 2055))
    assert [(g["flow_sequence"], g["src_addr"]) for g in got] == [(1, "10.0.0.1"), (2, "10.0.0.2")]
    assert metrics.flows_lost.get() == 0


def test_a_held_set_that_expires_is_counted_as_dropped_no_template() -> None:
    clocks = Clocks()
    relay, metrics = ingest(clocks)
    relay.process(b.v9_message([b.data_set(300, [flow(1, 5)])]), EXPORTER, 2055)
    clocks.wall += 61
    clocks.mono += 61
    relay.tick()
    assert metrics.sets_dropped.get((("reason", "no_template"),)) == 1


def test_a_malformed_set_is_counted_and_the_others_of_its_datagram_still_render() -> None:
    clocks = Clocks()
    relay, metrics = ingest(clocks)
    bad_template = b.set_bytes(0, b.raw_template(400, [(8, 0)]))  # a field of length 0
    datagram = b.v9_message(
        [bad_template, b.template_set([FLOW], ipfix=False), b.data_set(300, [flow(1, 5)])]
    )
    assert len(relay.process(datagram, EXPORTER, 2055)) == 1
    assert metrics.sets_dropped.get((("reason", "field_length"),)) == 1
    assert metrics.packets_malformed.values == {}


def test_an_ipfix_message_header_that_lies_drops_the_datagram_as_malformed() -> None:
    clocks = Clocks()
    relay, metrics = ingest(clocks)
    datagram = b.ipfix_message([b.data_set(300, [flow(1, 5)])], length=4000)
    assert relay.process(datagram, EXPORTER, 4739) == []
    assert metrics.packets_malformed.get((("reason", "short_message"),)) == 1


def test_ipfix_sequence_counts_data_records_and_a_held_set_is_not_loss() -> None:
    clocks = Clocks()
    relay, metrics = ingest(clocks)
    template = b.template_set([IPFIX_FLOW], ipfix=True)
    port = 4739
    relay.process(b.ipfix_message([ipfix_flows(1)], sequence=0), EXPORTER, port)  # held
    relay.process(b.ipfix_message([template, ipfix_flows(3)], sequence=1), EXPORTER, port)
    relay.process(b.ipfix_message([ipfix_flows(2)], sequence=4), EXPORTER, port)
    relay.process(b.ipfix_message([ipfix_flows(1)], sequence=6), EXPORTER, port)
    clocks.mono += 10
    relay.tick()
    assert metrics.flows_lost.get() == 0
    # Then a real gap: records 7 to 9 never come.
    relay.process(b.ipfix_message([ipfix_flows(1)], sequence=10), EXPORTER, port)
    clocks.mono += 10
    relay.tick()
    assert metrics.flows_lost.get() == 3


def test_v9_sequence_counts_datagrams() -> None:
    clocks = Clocks()
    relay, metrics = ingest(clocks)
    template = b.template_set([FLOW], ipfix=False)
    for seq in (1, 2, 5):
        relay.process(
            b.v9_message([template, b.data_set(300, [flow(1, 1)] * 4)], sequence=seq),
            EXPORTER,
            2055,
        )
    clocks.mono += 10
    relay.tick()
    assert metrics.flows_lost.get() == 2  # datagrams 3 and 4
