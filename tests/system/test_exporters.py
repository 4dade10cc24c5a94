"""Real NetFlow exporters from Debian against the decoder and ``relay decode``.

- softflowd reads a pcap this test writes (known TCP/UDP/ICMP flows: addresses, ports,
  packets, bytes, TCP flags, TOS, timestamps) and exports v1 and v5 to a UDP socket the test
  owns; every record must come back exactly as fed.
- fprobe captures live on ``lo``, with a BPF filter that selects only this test's own traffic,
  and exports v7; every record must match the traffic the test sent.
- The datagrams both exporters sent are wrapped into pcap and pcapng captures and fed to
  ``python -m relay decode``, with malformed datagrams mixed in.

Only 127.0.0.1 sockets are used. The capture files name other addresses (documentation
ranges) only as file contents, never as traffic.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.exporters import (
    LOOPBACK,
    Fprobe,
    Received,
    UdpCollector,
    find_binary,
    reserved_port,
    run_softflowd,
)
from support.known_flows import Sent as Pkt
from support.pcapgen import (
    ACK,
    FIN,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    PSH,
    RST,
    SYN,
    URG,
    Captured,
    Datagram,
    capture_datagrams,
    icmp,
    link_frame,
    pcap_bytes,
    pcapng_bytes,
    tcp,
)

from relay.errors import DecodeError
from relay.flows import decode
from relay.flows.model import (
    WARN_OVER_MAX_COUNT,
    AnyFlowRecord,
    FlowRecord,
    FlowRecordV7,
    Packet,
)

REPO = Path(__file__).resolve().parents[2]
SOFTFLOWD = find_binary("softflowd")
FPROBE = find_binary("fprobe")

needs_softflowd = pytest.mark.skipif(
    SOFTFLOWD is None, reason="softflowd is not installed (apt-get install softflowd)"
)
needs_fprobe = pytest.mark.skipif(
    FPROBE is None, reason="fprobe is not installed (apt-get install fprobe)"
)

# The body keys in the order SPEC "The syslog line" fixes, written out here rather than taken
# from the code under test.
SPEC_KEYS = (
    "version",
    "exporter",
    "flow_sequence",
    "engine_type",
    "engine_id",
    "sampling_interval",
    "sampling_mode",
    "first",
    "last",
    "src_addr",
    "dst_addr",
    "next_hop",
    "input_if",
    "output_if",
    "packets",
    "bytes",
    "src_port",
    "dst_port",
    "protocol",
    "tcp_flags",
    "tos",
    "src_as",
    "dst_as",
    "src_mask",
    "dst_mask",
)
SPEC_EXTRAS = {
    1: (),
    5: (),
    6: ("in_encaps", "out_encaps", "peer_next_hop"),
    7: ("flags1", "flags2", "router_sc"),
}
DOCUMENTED_MAX = {1: 24, 5: 30, 6: 27, 7: 27}

IPV4_UDP_OVERHEAD = 28  # IPv4 header 20 + UDP header 8: what fprobe adds to each payload
IPV4_TCP_OVERHEAD = 40


# --------------------------------------------------------------------------------------------
# The traffic fed to softflowd, and what softflowd must report for it
# --------------------------------------------------------------------------------------------


def pkt(
    at_us: int, src: str, dst: str, proto: int, sport: int, dport: int, payload: int = 0, *,
    flags: int = 0, tos: int = 0,
) -> Pkt:  # fmt: skip
    return Pkt(at_us=at_us, src=src, dst=dst, proto=proto, sport=sport, dport=dport,
               flags=flags, payload=payload, tos=tos)  # fmt: skip


def tcp_exchange(
    at_us: int,
    client: tuple[str, int],
    server: tuple[str, int],
    script: Sequence[tuple[int, bool, int, int]],
    *,
    client_tos: int = 0,
) -> list[Pkt]:
    """Packets of a TCP conversation: (offset_us, from_client, flags, payload length)."""
    out = []
    for offset, from_client, flags, payload in script:
        (a, a_port), (b, b_port) = (client, server) if from_client else (server, client)
        tos = client_tos if from_client else 0
        out.append(pkt(at_us + offset, a, b, PROTO_TCP, a_port, b_port, payload,
                       flags=flags, tos=tos))  # fmt: skip
    return out


def rich_traffic() -> list[Pkt]:
    """Several TCP, UDP and ICMP flows, one- and two-way, with chosen sizes, flags, TOS and
    sub-millisecond timestamps; plus an IPv6 packet, which v1/v5 cannot carry."""
    # An HTTP-like exchange, the client marking its packets low-delay.
    pkts = tcp_exchange(
        0,
        ("10.1.1.10", 49152),
        ("192.0.2.80", 80),
        [
            (0, True, SYN, 0),
            (12_345, False, SYN | ACK, 0),
            (12_500, True, ACK, 0),
            (13_001, True, PSH | ACK, 350),
            (40_002, False, ACK, 0),
            (41_003, False, PSH | ACK, 1200),
            (41_504, False, PSH | ACK | URG, 800),
            (50_005, True, ACK, 0),
            (1_234_567, True, FIN | ACK, 0),
            (1_235_001, False, FIN | ACK, 0),
            (1_239_999, True, ACK, 0),
        ],
        client_tos=0x10,
    )
    # A refused connection: SYN, answered by RST|ACK.
    pkts += tcp_exchange(
        250_000,
        ("10.1.1.11", 49200),
        ("192.0.2.25", 25),
        [(0, True, SYN, 0), (700, False, RST | ACK, 0)],
    )
    # Two DNS queries and answers on the same ports: one two-way flow.
    for n, at in enumerate((300_100, 2_300_100)):
        pkts.append(pkt(at, "10.1.1.12", "192.0.2.53", PROTO_UDP, 53001, 53, 40 + n))
        pkts.append(pkt(at + 9_876, "192.0.2.53", "10.1.1.12", PROTO_UDP, 53, 53001, 120 + n))
    # A one-way RTP-like stream, expedited forwarding.
    src, dst = "10.1.1.13", "198.51.100.7"
    pkts += [
        pkt(400_000 + 20_000 * i, src, dst, PROTO_UDP, 5004, 5004, 172, tos=0xB8) for i in range(20)
    ]
    # Echo requests and replies: two flows (softflowd keys ICMP by type and code).
    for i in range(3):
        at = 500_000 + 1_000_000 * i
        pkts.append(pkt(at, "10.1.1.14", "192.0.2.1", PROTO_ICMP, 8, 0, 56))
        pkts.append(pkt(at + 3_210, "192.0.2.1", "10.1.1.14", PROTO_ICMP, 0, 0, 56))
    # Port unreachable, network control precedence.
    pkts.append(pkt(600_000, "192.0.2.254", "10.1.1.12", PROTO_ICMP, 3, 3, 28, tos=0xC0))
    pkts.append(pkt(700_000, "2001:db8::1", "2001:db8::2", PROTO_UDP, 1000, 2000, 10))
    return sorted(pkts, key=lambda p: p.at_us)


def many_flows_traffic() -> list[Pkt]:
    """35 records for softflowd: 28 one-packet UDP flows, then (a later second) one two-way
    flow, then 5 more. softflowd exports in expiry order and starts a new v1 datagram once
    29 records are in it, so the two-way flow's two records make that datagram hold 30."""
    pkts = [pkt(i, "10.2.0.1", f"10.3.0.{i + 1}", PROTO_UDP, 20_000 + i, 53, i) for i in range(28)]
    pkts.append(pkt(5_000_000, "10.2.0.2", "10.2.0.3", PROTO_UDP, 7, 7, 1))
    pkts.append(pkt(6_000_000, "10.2.0.3", "10.2.0.2", PROTO_UDP, 7, 7, 2))
    pkts += [
        pkt(20_000_000 + i, "10.4.0.1", f"10.5.0.{i + 1}", PROTO_UDP, 30_000 + i, 123, 48)
        for i in range(5)
    ]
    return pkts


def capture_base_ns() -> int:
    """softflowd, reading a file, measures the packet times against its own start (its
    "boot"), so v1/v5 First/Last of a capture from the past are below SysUptime modulo 2^32:
    the decoder must undo that wrap. It only can within 2^32 ms (49.7 days), so the capture
    is dated one hour ago, at a sub-millisecond fraction."""
    return (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000 + 123_456_789


def softflowd_ports(p: Pkt) -> tuple[int, int]:
    """softflowd reports ICMP type and code as Cisco routers do: in the destination port,
    type * 256 + code, source port 0."""
    if p.proto == PROTO_ICMP:
        return 0, p.sport * 256 + p.dport
    return p.sport, p.dport


def ip_length(p: Pkt) -> int:
    return len(p.packet())


FlowKey = tuple[str, int, str, int, int]  # src, sport, dst, dport, protocol


def softflowd_expected(pkts: Sequence[Pkt], base_ns: int) -> dict[FlowKey, FlowRecord]:
    """What softflowd must export for ``pkts``.

    softflowd tracks a conversation (both directions) as one flow and exports one record per
    direction that carried traffic: that direction's packets, IP bytes (frame length minus the
    link-layer header), OR of TCP flags and TOS; but First/Last are the conversation's.
    IPv6 is not tracked for v1/v5."""
    conversations: dict[tuple[int, frozenset[tuple[str, int]]], list[Pkt]] = {}
    for p in pkts:
        if p.ip_version == 6:
            continue
        sport, dport = softflowd_ports(p)
        key = (p.proto, frozenset({(p.src, sport), (p.dst, dport)}))
        conversations.setdefault(key, []).append(p)
    out: dict[FlowKey, FlowRecord] = {}
    for group in conversations.values():
        first = (base_ns + min(p.at_us for p in group) * 1000) // 1_000_000
        last = (base_ns + max(p.at_us for p in group) * 1000) // 1_000_000
        directions: dict[FlowKey, list[Pkt]] = {}
        for p in group:
            sport, dport = softflowd_ports(p)
            directions.setdefault((p.src, sport, p.dst, dport, p.proto), []).append(p)
        for (src, sport, dst, dport, proto), dir_pkts in directions.items():
            flags = 0
            for p in dir_pkts:
                flags |= p.flags
            out[(src, sport, dst, dport, proto)] = FlowRecord(
                first=first,
                last=last,
                src_addr=src,
                dst_addr=dst,
                next_hop="0.0.0.0",
                input_if=0,
                output_if=0,
                packets=len(dir_pkts),
                bytes=sum(ip_length(p) for p in dir_pkts),
                src_port=sport,
                dst_port=dport,
                protocol=proto,
                tcp_flags=flags,
                tos=dir_pkts[0].tos,
                src_as=0,
                dst_as=0,
                src_mask=0,
                dst_mask=0,
            )
    return out


def write_capture(
    path: Path, pkts: Sequence[Pkt], base_ns: int, *, fmt: str, linktype: int, nanosecond: bool
) -> Path:
    frames = [
        Captured(timestamp_ns=base_ns + p.at_us * 1000, data=link_frame(p.packet(), linktype))
        for p in pkts
    ]
    writer = pcapng_bytes if fmt == "pcapng" else pcap_bytes
    path.write_bytes(writer(frames, linktype=linktype, nanosecond=nanosecond))
    return path


# --------------------------------------------------------------------------------------------
# Checking decoded records
# --------------------------------------------------------------------------------------------


def record_key(r: AnyFlowRecord) -> FlowKey:
    return (r.src_addr, r.src_port, r.dst_addr, r.dst_port, r.protocol)


def decode_all(received: Sequence[Received]) -> list[Packet]:
    """Every datagram must decode; a DecodeError here is a failure, named with the bytes."""
    packets = []
    for n, gram in enumerate(received, 1):
        try:
            packets.append(decode(gram.payload))
        except DecodeError as exc:
            pytest.fail(
                f"datagram {n} of {len(received)} from {gram.src} did not decode: "
                f"{exc.reason}: {exc}; bytes {gram.payload[:64].hex()}..."
            )
    return packets


def compare_records(
    decoded: Sequence[AnyFlowRecord],
    expected: dict[FlowKey, AnyFlowRecord],
    *,
    time_ok: Callable[[FlowKey, str, int, int], bool],
) -> list[str]:
    """Differences between decoded and expected records, as readable lines. Every field but
    First/Last must be equal; ``time_ok(key, name, decoded, expected)`` judges those."""
    problems = []
    by_key: dict[FlowKey, AnyFlowRecord] = {}
    for r in decoded:
        if record_key(r) in by_key:
            problems.append(f"record exported twice: {record_key(r)}")
        by_key[record_key(r)] = r
    problems.extend(
        f"missing: {key} expected {expected[key]}"
        for key in sorted(expected.keys() - by_key.keys())
    )
    problems.extend(f"unexpected: {by_key[key]}" for key in sorted(by_key.keys() - expected.keys()))
    for key in sorted(by_key.keys() & expected.keys()):
        got, want = by_key[key], expected[key]
        if type(got) is not type(want):
            problems.append(f"{key}: record type {type(got).__name__}, not {type(want).__name__}")
            continue
        if got._replace(first=0, last=0) != want._replace(first=0, last=0):
            diff = {
                name: (g, w)
                for name, g, w in zip(got._fields, got, want, strict=True)
                if g != w and name not in ("first", "last")
            }
            problems.append(f"{key}: (decoded, expected) differ: {diff}")
        for name in ("first", "last"):
            g, w = getattr(got, name), getattr(want, name)
            if not time_ok(key, name, g, w):
                problems.append(f"{key}: {name} {iso(g)} ({g}), expected {iso(w)} ({w})")
    return problems


def iso(ms: int) -> str:
    """UNIX milliseconds as SPEC writes them: ``2026-11-22T12:34:56.789Z``."""
    seconds, millis = divmod(ms, 1000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"


# softflowd computes First, Last and SysUptime each as a truncated millisecond offset from its
# start, and the export time separately; the decoded absolute time can therefore differ from
# the packet's time truncated to the millisecond by one millisecond either way, no more.
SOFTFLOWD_TIME_TOLERANCE_MS = 1


def softflowd_time_ok(key: FlowKey, name: str, got: int, want: int) -> bool:
    return abs(got - want) <= SOFTFLOWD_TIME_TOLERANCE_MS


@dataclass(frozen=True, slots=True, kw_only=True)
class Export:
    """What a collector socket received from one exporter run."""

    exporter: str
    received: list[Received]
    started_ns: int
    finished_ns: int


def softflowd_export(
    tmp_path: Path,
    pkts: Sequence[Pkt],
    base_ns: int,
    *,
    version: int,
    fmt: str = "pcap",
    linktype: int = LINKTYPE_ETHERNET,
    nanosecond: bool = False,
) -> Export:
    assert SOFTFLOWD is not None
    suffix = "pcapng" if fmt == "pcapng" else "pcap"
    capture = write_capture(
        tmp_path / f"fed-v{version}-{linktype}.{suffix}",
        pkts,
        base_ns,
        fmt=fmt,
        linktype=linktype,
        nanosecond=nanosecond,
    )
    with UdpCollector() as collector:
        run = run_softflowd(SOFTFLOWD, capture, collector.address, version=version)
        assert run.returncode == 0, f"softflowd failed: {run.stderr}{run.stdout}"
        # softflowd has sent everything before it exits; the socket buffer holds it.
        received = collector.receive(until_idle=0.3, deadline=time.monotonic() + 5)
    assert received, f"softflowd sent nothing: {run.stderr}{run.stdout}"
    return Export(
        exporter=f"softflowd-v{version}",
        received=received,
        started_ns=run.started_ns,
        finished_ns=run.finished_ns,
    )


def check_headers(export: Export, packets: Sequence[Packet], *, version: int) -> None:
    """Header fields a user would check: version, count, flow_sequence counting the records
    sent before, export time within the run."""
    sent = 0
    for n, packet in enumerate(packets, 1):
        h = packet.header
        assert h.version == version, f"datagram {n}: version {h.version}"
        assert h.count == len(packet.records), f"datagram {n}: count {h.count}"
        assert packet.trailing_bytes == 0, f"datagram {n}: {packet.trailing_bytes} trailing"
        if version != 1:  # v1 has no sequence number
            assert h.flow_sequence == sent, f"datagram {n}: flow_sequence {h.flow_sequence}"
        assert (h.engine_type, h.engine_id, h.sampling_interval, h.sampling_mode) == (0, 0, 0, 0)
        lo = export.started_ns // 1_000_000 - 1000
        hi = export.finished_ns // 1_000_000 + 1000
        assert lo <= h.export_time_ms <= hi, (
            f"datagram {n}: export time {iso(h.export_time_ms)} outside the run "
            f"{iso(lo)} .. {iso(hi)}"
        )
        sent += len(packet.records)


# --------------------------------------------------------------------------------------------
# softflowd
# --------------------------------------------------------------------------------------------

CAPTURE_KINDS = {
    "pcap-ethernet-us": ("pcap", LINKTYPE_ETHERNET, False),
    "pcapng-sll-ns": ("pcapng", LINKTYPE_LINUX_SLL, True),
    "pcap-raw-ns": ("pcap", LINKTYPE_RAW, True),
}


@needs_softflowd
@pytest.mark.parametrize("kind", sorted(CAPTURE_KINDS))
@pytest.mark.parametrize("version", [1, 5])
def test_softflowd_exports_exactly_the_flows_fed(tmp_path: Path, version: int, kind: str) -> None:
    fmt, linktype, nanosecond = CAPTURE_KINDS[kind]
    pkts = rich_traffic()
    base = capture_base_ns()
    export = softflowd_export(
        tmp_path, pkts, base, version=version, fmt=fmt, linktype=linktype, nanosecond=nanosecond
    )
    packets = decode_all(export.received)
    check_headers(export, packets, version=version)
    for packet in packets:
        assert packet.warnings == (), f"warnings on a {packet.header.count}-record datagram"
    decoded = [r for p in packets for r in p.records]
    expected = softflowd_expected(pkts, base)
    assert len(expected) == 10  # the scenario itself: 10 directions carried traffic
    problems = compare_records(decoded, dict(expected), time_ok=softflowd_time_ok)
    assert not problems, "\n".join(problems)


@needs_softflowd
def test_softflowd_v1_over_the_documented_maximum_is_decoded_and_flagged(tmp_path: Path) -> None:
    pkts = many_flows_traffic()
    base = capture_base_ns()
    export = softflowd_export(tmp_path, pkts, base, version=1)
    packets = decode_all(export.received)
    check_headers(export, packets, version=1)
    counts = [p.header.count for p in packets]
    assert sum(counts) == 35
    # The point of the scenario: softflowd 1.1.0 puts 30 records in a v1 datagram whose
    # documented maximum is 24.
    assert max(counts) > DOCUMENTED_MAX[1], f"softflowd sent v1 datagrams of {counts} records"
    for packet in packets:
        over = packet.header.count > DOCUMENTED_MAX[1]
        assert (WARN_OVER_MAX_COUNT in packet.warnings) == over, (packet.header, packet.warnings)
        assert len(packet.records) == packet.header.count
    decoded = [r for p in packets for r in p.records]
    problems = compare_records(
        decoded, dict(softflowd_expected(pkts, base)), time_ok=softflowd_time_ok
    )
    assert not problems, "\n".join(problems)


@needs_softflowd
def test_softflowd_v5_full_datagrams_are_not_flagged(tmp_path: Path) -> None:
    pkts = many_flows_traffic()
    base = capture_base_ns()
    export = softflowd_export(tmp_path, pkts, base, version=5)
    packets = decode_all(export.received)
    check_headers(export, packets, version=5)  # flow_sequence 0, 30, ...
    assert [p.header.count for p in packets] == [30, 5]
    assert all(p.warnings == () for p in packets)
    decoded = [r for p in packets for r in p.records]
    problems = compare_records(
        decoded, dict(softflowd_expected(pkts, base)), time_ok=softflowd_time_ok
    )
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------
# fprobe, live on lo
# --------------------------------------------------------------------------------------------

# fprobe sends a datagram as soon as it holds 27 records (the v7 maximum) and otherwise waits
# five seconds for more; the scenario has exactly 27 flows so the test does not wait.
FPROBE_FLOWS = 27
FPROBE_ICMP_IDENT = 0xF10C  # IP identification marking the test's ICMP packets for the filter
FPROBE_IFINDEX = (3, 7)  # -x input:output, so the interface fields are not all zero


@dataclass(slots=True, kw_only=True)
class SentFlow:
    """A flow the test sent on lo, with the wall-clock window of its first and last packet."""

    key: FlowKey
    packets: int = 0
    bytes: int = 0
    tcp_flags: int = 0
    tos: int = 0
    first_window: tuple[int, int] = (0, 0)  # ns before/after sending the first packet
    last_window: tuple[int, int] = (0, 0)

    def add(self, size: int, before_ns: int, after_ns: int, flags: int = 0) -> None:
        if self.packets == 0:
            self.first_window = (before_ns, after_ns)
        self.last_window = (before_ns, after_ns)
        self.packets += 1
        self.bytes += size
        self.tcp_flags |= flags

    def expected(self) -> FlowRecordV7:
        src, sport, dst, dport, proto = self.key
        return FlowRecordV7(
            first=0,
            last=0,
            src_addr=src,
            dst_addr=dst,
            next_hop="0.0.0.0",
            input_if=FPROBE_IFINDEX[0],
            output_if=FPROBE_IFINDEX[1],
            packets=self.packets,
            bytes=self.bytes,
            src_port=sport,
            dst_port=dport,
            protocol=proto,
            tcp_flags=self.tcp_flags,
            tos=self.tos,
            src_as=0,
            dst_as=0,
            src_mask=0,
            dst_mask=0,
            flags1=0,
            flags2=0,
            router_sc="0.0.0.0",
        )


@dataclass(slots=True, kw_only=True)
class FprobeResult:
    export: Export
    sent: dict[FlowKey, SentFlow] = field(default_factory=dict)
    log: str = ""
    returncode: int = 0


def send_fprobe_traffic(
    udp_sink: int, tcp_port: int, tcp_sources: tuple[int, int]
) -> dict[FlowKey, SentFlow]:
    """The test's own traffic on lo: UDP through ordinary sockets, TCP and ICMP crafted and
    sent through a raw socket (exact flags and sizes; the kernel's answers, RSTs, are not
    selected by the capture filter). Returns what was sent, flow by flow."""
    sent: dict[FlowKey, SentFlow] = {}

    def flow(key: FlowKey, tos: int) -> SentFlow:
        return sent.setdefault(key, SentFlow(key=key, tos=tos))

    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sockets: list[socket.socket] = []
    try:
        conversation, refused = tcp_sources
        crafted = [
            (tcp(LOOPBACK, LOOPBACK, conversation, tcp_port, flags, bytes(size), tos=0x20), flags)
            for flags, size in ((SYN, 0), (PSH | ACK, 50), (URG | ACK, 10), (FIN | ACK, 0))
        ]
        crafted.append((tcp(LOOPBACK, LOOPBACK, refused, tcp_port, RST), RST))
        for packet, flags in crafted:
            sport = struct.unpack_from("!H", packet, 20)[0]
            f = flow((LOOPBACK, sport, LOOPBACK, tcp_port, PROTO_TCP), packet[1])
            before = time.time_ns()
            raw.sendto(packet, (LOOPBACK, 0))
            f.add(len(packet), before, time.time_ns(), flags)
        # ICMP types the kernel does not answer. fprobe reports type and code as the source
        # and destination ports.
        for icmp_type, code, payload in ((0, 0, 56), (0, 0, 56), (3, 3, 28), (11, 0, 36)):
            data = b"i" * payload
            packet = icmp(LOOPBACK, LOOPBACK, icmp_type, code, data, ip_ident=FPROBE_ICMP_IDENT)
            f = flow((LOOPBACK, icmp_type, LOOPBACK, code, PROTO_ICMP), 0)
            before = time.time_ns()
            raw.sendto(packet, (LOOPBACK, 0))
            f.add(len(packet), before, time.time_ns())
        # UDP flows through real sockets until the scenario has FPROBE_FLOWS flows: varying
        # packet counts, payload sizes (0 to 1400) and TOS values.
        tos_values = (0x00, 0x10, 0x28, 0xB8)
        for i in range(FPROBE_FLOWS - len(sent)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(s)
            tos = tos_values[i % len(tos_values)]
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
            s.bind((LOOPBACK, 0))
            f = flow((LOOPBACK, s.getsockname()[1], LOOPBACK, udp_sink, PROTO_UDP), tos)
            size = (i * 67) % 1401
            for _ in range(i % 4 + 1):
                before = time.time_ns()
                s.sendto(bytes(size), (LOOPBACK, udp_sink))
                f.add(IPV4_UDP_OVERHEAD + size, before, time.time_ns())
    finally:
        raw.close()
        for s in sockets:
            s.close()
    assert len(sent) == FPROBE_FLOWS
    return sent


def fprobe_filter(udp_sink: int, tcp_port: int) -> str:
    return (
        f"(udp and dst port {udp_sink}) or (tcp and dst port {tcp_port}) "
        f"or (icmp and ip[4:2] = {FPROBE_ICMP_IDENT})"
    )


def can_send_raw() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    except PermissionError:
        return False
    return True


@pytest.fixture(scope="module")
def fprobe_result() -> FprobeResult:
    """One fprobe run, shared by the tests that look at its output (about 3 s)."""
    if FPROBE is None:
        pytest.skip("fprobe is not installed (apt-get install fprobe)")
    if os.geteuid() != 0 and not can_send_raw():
        pytest.skip("fprobe and the crafted traffic need CAP_NET_RAW (run as root, as CI does)")
    # Every port the filter selects on is held by a socket of this test for the whole run,
    # so no other program's traffic can match it.
    with (
        UdpCollector() as collector,
        reserved_port(socket.SOCK_DGRAM) as udp_sink,
        reserved_port() as tcp_port,
        reserved_port() as tcp_conversation,
        reserved_port() as tcp_refused,
    ):
        probe = Fprobe(
            FPROBE,
            collector=collector.address,
            interface="lo",
            bpf_filter=fprobe_filter(udp_sink, tcp_port),
            version=7,
            # Scan every second; expire a flow after two idle seconds (margin for a slow
            # machine: one idle second could split a flow whose packets reach fprobe in two
            # capture batches); -x sets the interface fields.
            extra_args=f"-s 1 -d 2 -e 30 -x {FPROBE_IFINDEX[0]}:{FPROBE_IFINDEX[1]}".split(),
        )
        started = time.time_ns()
        try:
            probe.start()
            sent = send_fprobe_traffic(udp_sink, tcp_port, (tcp_conversation, tcp_refused))

            def complete(got: list[Received]) -> bool:
                return sum(len(g.payload) - 24 for g in got) >= 52 * FPROBE_FLOWS

            collector.receive_until(complete, deadline=time.monotonic() + 15)
        finally:
            returncode = probe.stop()
        # On SIGTERM fprobe flushes what it still holds; take that too.
        collector.receive(until_idle=0.5, deadline=time.monotonic() + 3)
        finished = time.time_ns()
    return FprobeResult(
        export=Export(
            exporter="fprobe-v7",
            received=list(collector.received),
            started_ns=started,
            finished_ns=finished,
        ),
        sent=sent,
        log=probe.log,
        returncode=returncode,
    )


# fprobe stamps First/Last from the capture's packet times, as milliseconds since its start
# with C division (truncating toward zero), and the export time separately: within 2 ms of
# the moment the packet was sent.
FPROBE_TIME_TOLERANCE_MS = 2


def test_fprobe_v7_records_match_the_loopback_traffic(fprobe_result: FprobeResult) -> None:
    export, sent = fprobe_result.export, fprobe_result.sent
    assert export.received, f"fprobe sent nothing; its log:\n{fprobe_result.log}"
    assert fprobe_result.returncode == 0, fprobe_result.log
    packets = decode_all(export.received)
    check_headers(export, packets, version=7)
    for packet in packets:
        assert packet.warnings == ()
        assert all(type(r) is FlowRecordV7 for r in packet.records)
    decoded = [r for p in packets for r in p.records]

    def time_ok(key: FlowKey, name: str, got: int, _want: int) -> bool:
        flow = sent[key]
        before, after = flow.first_window if name == "first" else flow.last_window
        lo = before // 1_000_000 - FPROBE_TIME_TOLERANCE_MS
        hi = after // 1_000_000 + FPROBE_TIME_TOLERANCE_MS
        return lo <= got <= hi

    # Bytes are IP bytes (header included, link layer not: fprobe without -k), so a UDP
    # datagram of N payload bytes counts N + 28, a crafted TCP segment its IP length.
    expected: dict[FlowKey, AnyFlowRecord] = {k: f.expected() for k, f in sent.items()}
    problems = compare_records(decoded, expected, time_ok=time_ok)
    assert not problems, "\n".join(problems) + f"\nfprobe log:\n{fprobe_result.log}"


# --------------------------------------------------------------------------------------------
# relay decode on captures of real exporter output
# --------------------------------------------------------------------------------------------

LINE_RE = re.compile(
    r"<(?P<pri>\d+)>(?P<stamp>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) "
    r"(?P<host>\S+) (?P<tag>[^:\s]+): (?P<body>\{.*\})"
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc3164_stamp(unix_secs: int) -> str:
    t = dt.datetime.fromtimestamp(unix_secs, tz=dt.UTC)
    return f"{MONTHS[t.month - 1]} {t.day:2d} {t:%H:%M:%S}"


def expected_body(packet: Packet, record: AnyFlowRecord, host: str) -> list[list[object]]:
    """The JSON body as (key, value) pairs, in SPEC order, from the decoded datagram."""
    h = packet.header
    values: dict[str, object] = {
        "version": h.version,
        "exporter": host,
        "flow_sequence": h.flow_sequence,
        "engine_type": h.engine_type,
        "engine_id": h.engine_id,
        "sampling_interval": h.sampling_interval,
        "sampling_mode": h.sampling_mode,
    }
    values.update(record._asdict())
    values["first"] = iso(record.first)
    values["last"] = iso(record.last)
    return [[k, values[k]] for k in (*SPEC_KEYS, *SPEC_EXTRAS[h.version])]


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureItem:
    """One packet of the capture given to ``relay decode`` and what it must produce."""

    frame: Captured
    payload: bytes | None  # None: not a UDP datagram (to be skipped silently)
    host: str = ""
    packet: Packet | None = None
    error: DecodeError | None = None


def malformed_datagrams(sample_v5: bytes) -> list[tuple[bytes, DecodeError]]:
    """Datagrams a collector can receive that must be named, not decoded: a real v5
    datagram cut short in its records, and a header of version 11, which no NetFlow has."""
    bad = [sample_v5[: len(sample_v5) - 20], struct.pack("!HHIIII", 11, 1, 0, 0, 0, 0)]
    out = []
    for data in bad:
        with pytest.raises(DecodeError) as caught:
            decode(data)
        out.append((data, caught.value))
    return out


def build_capture_items(
    exports: Sequence[Export],
    *,
    addresses: Callable[[str, tuple[str, int]], tuple[str, str]],
    linktype: int,
) -> list[CaptureItem]:
    """Every datagram of every export in arrival order, each from ``addresses(exporter,
    received_from)`` = (source, destination) address, with two malformed datagrams and one
    TCP packet mixed in."""
    grams: list[tuple[str, Received]] = sorted(
        ((e.exporter, r) for e in exports for r in e.received), key=lambda x: x[1].timestamp_ns
    )
    sample_v5 = next(r.payload for name, r in grams if name == "softflowd-v5")
    items: list[CaptureItem] = []

    def add_udp(ts: int, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        frame = capture_datagrams(
            [Datagram(timestamp_ns=ts, src=src, dst=dst, payload=payload)], linktype=linktype
        )[0]
        try:
            items.append(
                CaptureItem(frame=frame, payload=payload, host=src[0], packet=decode(payload))
            )
        except DecodeError as exc:
            items.append(CaptureItem(frame=frame, payload=payload, host=src[0], error=exc))

    bad = malformed_datagrams(sample_v5)
    for n, (name, gram) in enumerate(grams):
        src_addr, dst_addr = addresses(name, gram.src)
        src = (src_addr, gram.src[1])
        dst = (dst_addr, 2055)
        add_udp(gram.timestamp_ns, src, dst, gram.payload)
        if n == 1:  # a malformed datagram early, as the capture's third packet
            add_udp(gram.timestamp_ns + 1000, src, dst, bad[0][0])
        if n == 3:  # a TCP packet, which is not a datagram: skipped without a word
            packet = tcp(src_addr, dst_addr, 50_000, 2055, SYN)
            ts = gram.timestamp_ns + 2000
            items.append(
                CaptureItem(
                    frame=Captured(timestamp_ns=ts, data=link_frame(packet, linktype)),
                    payload=None,
                )
            )
    last = grams[-1]
    src_addr, dst_addr = addresses(last[0], last[1].src)
    add_udp(last[1].timestamp_ns + 1000, (src_addr, 9995), (dst_addr, 2055), bad[1][0])
    return items


@pytest.fixture(scope="module")
def exports(fprobe_result: FprobeResult, tmp_path_factory: pytest.TempPathFactory) -> list[Export]:
    """Real output of softflowd v1 (with its 30-record datagram), softflowd v5 and fprobe v7."""
    if SOFTFLOWD is None:
        pytest.skip("softflowd is not installed (apt-get install softflowd)")
    tmp = tmp_path_factory.mktemp("softflowd")
    base = capture_base_ns()
    return [
        softflowd_export(tmp, many_flows_traffic(), base, version=1),
        softflowd_export(tmp, rich_traffic(), base, version=5),
        fprobe_result.export,
    ]


def real_addresses(_exporter: str, received_from: tuple[str, int]) -> tuple[str, str]:
    return received_from[0], LOOPBACK


# The same datagrams as if captured on a LAN where the exporters have addresses of their own
# (documentation ranges, file contents only): HOST must follow each datagram's source.
LAN_SOURCES = {"softflowd-v1": "198.51.100.1", "softflowd-v5": "198.51.100.5"}


def lan_addresses(exporter: str, _received_from: tuple[str, int]) -> tuple[str, str]:
    if exporter in LAN_SOURCES:
        return LAN_SOURCES[exporter], "198.51.100.200"
    return "2001:db8::7", "2001:db8::200"  # fprobe's datagrams, over IPv6


DECODE_CASES = {
    "pcap-ethernet-real-addresses": ("pcap", LINKTYPE_ETHERNET, real_addresses),
    "pcapng-sll-lan-addresses": ("pcapng", LINKTYPE_LINUX_SLL, lan_addresses),
}


def run_relay_decode(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "relay", "decode", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", sorted(DECODE_CASES))
def test_relay_decode_prints_every_record_of_real_exporter_captures(
    exports: list[Export], tmp_path: Path, case: str
) -> None:
    fmt, linktype, addresses = DECODE_CASES[case]
    items = build_capture_items(exports, addresses=addresses, linktype=linktype)
    writer = pcapng_bytes if fmt == "pcapng" else pcap_bytes
    capture = tmp_path / f"exporters.{fmt}"
    capture.write_bytes(writer([i.frame for i in items], linktype=linktype, nanosecond=True))

    result = run_relay_decode(str(capture))
    assert result.returncode == 0, result.stderr

    # stdout: one line per record, in capture order, each exactly what the datagram holds.
    expected_lines = [
        (item, record)
        for item in items
        if item.packet is not None
        for record in item.packet.records
    ]
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected_lines), result.stderr
    problems = []
    for n, (line, (item, record)) in enumerate(zip(lines, expected_lines, strict=True), 1):
        assert item.packet is not None
        m = LINE_RE.fullmatch(line)
        if m is None:
            problems.append(f"line {n}: not <PRI>Mmm dd HH:MM:SS HOST TAG: BODY: {line!r}")
            continue
        want_stamp = rfc3164_stamp(item.packet.header.unix_secs)
        head = (m["pri"], m["stamp"], m["host"], m["tag"])
        if head != ("14", want_stamp, item.host, "netstat.netflow.lt"):
            problems.append(f"line {n}: header {head}, expected 14, {want_stamp}, {item.host}")
        try:
            body = json.loads(m["body"], object_pairs_hook=lambda pairs: [list(p) for p in pairs])
        except json.JSONDecodeError as exc:
            problems.append(f"line {n}: body is not JSON ({exc}): {m['body']}")
            continue
        want = expected_body(item.packet, record, item.host)
        if [k for k, _ in body] != [k for k, _ in want]:
            problems.append(f"line {n}: keys {[k for k, _ in body]}")
        elif body != want:
            diff = {k: (g, w) for (k, g), (_, w) in zip(body, want, strict=True) if g != w}
            problems.append(f"line {n}: (printed, decoded) differ: {diff}")
    assert not problems, "\n".join(problems[:20])

    # stderr: each malformed datagram named with the file, its packet number and the reason;
    # nothing else named but datagrams that carried warnings (softflowd's 30-record v1).
    named: dict[int, list[str]] = {}
    for line in result.stderr.splitlines():
        m = re.search(r"packet\s*#?\s*(\d+)", line)
        assert m is not None, f"stderr line names no packet: {line!r}"
        named.setdefault(int(m[1]), []).append(line)
    bad_numbers = [n for n, item in enumerate(items, 1) if item.error is not None]
    assert len(bad_numbers) == 2
    for number in bad_numbers:
        error = items[number - 1].error
        assert error is not None
        assert any(
            str(capture) in line and error.reason in line for line in named.get(number, [])
        ), f"packet {number} ({error.reason}) not named on stderr:\n{result.stderr}"
    for number, said in named.items():
        item = items[number - 1]
        assert item.error is not None or (item.packet is not None and item.packet.warnings), (
            f"stderr names packet {number}, a valid datagram without warnings: {said}"
        )
    warned = [n for n, i in enumerate(items, 1) if i.packet is not None and i.packet.warnings]
    assert warned, "the capture should include softflowd's over-maximum v1 datagram"
