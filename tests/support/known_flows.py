"""Known dual-stack traffic for real v9/IPFIX exporters, and what each must report for it.

The traffic is written to a capture (``support.pcapgen``) that softflowd or pmacctd reads;
the expectations are computed here from the packets themselves, never from a decoder:

- both exporters track a conversation (both directions of one 5-tuple) as one flow and
  export one record per direction that carried traffic, with that direction's packets, IP
  bytes and OR of TCP flags, but the conversation's first and last packet times;
- ICMP has no ports: both key it by type and code, so an echo request and its reply are two
  conversations;
- TOS: both keep the TOS of a conversation's last packet for that packet's direction and
  0 for the other (pmacct's nfprobe, derived from softflowd, overwrites both directions'
  TOS from each packet, ``// XXX`` in its source); neither softflowd 1.1.0 nor pmacct 1.7.7
  reads the IPv6 traffic class, so an IPv6 record's TOS is 0 although the capture carries
  one (tcpdump shows it);
- sampling selects packets before flows are formed: softflowd ``-s N`` takes the 1st,
  (N+1)th, ... packet of the capture; pmacct picks at random, so :func:`could_be_sampled`
  checks that a record is what some subset of a direction's packets gives.

Every flow lasts under one second and the whole capture under 1.2 s, so pmacct's shortest
timeouts (1 s) never split one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from support.pcapgen import (
    ACK,
    FIN,
    LINKTYPE_ETHERNET,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    PSH,
    RST,
    SYN,
    Captured,
    icmp,
    link_frame,
    pcap_bytes,
    tcp,
    udp,
)

ICMP_PROTOCOLS = (PROTO_ICMP, PROTO_ICMPV6)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """One packet of the capture. For ICMP, ``sport``/``dport`` hold type and code."""

    at_us: int  # offset from the capture's base time
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    flags: int = 0
    payload: int = 0
    tos: int = 0

    def packet(self) -> bytes:
        data = bytes(i % 251 for i in range(self.payload))
        if self.proto == PROTO_TCP:
            return tcp(self.src, self.dst, self.sport, self.dport, self.flags, data, tos=self.tos)
        if self.proto == PROTO_UDP:
            return udp(self.src, self.dst, self.sport, self.dport, data, tos=self.tos)
        return icmp(self.src, self.dst, self.sport, self.dport, data, tos=self.tos)

    @property
    def ip_version(self) -> int:
        return 6 if ":" in self.src else 4

    @property
    def ip_length(self) -> int:
        return len(self.packet())

    @property
    def ports(self) -> tuple[int, int]:
        """(source, destination) port as both exporters report them: ICMP type and code
        go into the destination port, type * 256 + code, source port 0."""
        if self.proto in ICMP_PROTOCOLS:
            return 0, self.sport * 256 + self.dport
        return self.sport, self.dport


def _conversation(
    at_us: int,
    proto: int,
    client: tuple[str, int],
    server: tuple[str, int],
    script: Sequence[tuple[int, bool, int, int]],
    *,
    client_tos: int = 0,
    server_tos: int = 0,
) -> list[Sent]:
    """Packets of one conversation: (offset_us, from_client, TCP flags, payload length)."""
    out = []
    for offset, from_client, flags, payload in script:
        (a, a_port), (b, b_port) = (client, server) if from_client else (server, client)
        out.append(
            Sent(at_us=at_us + offset, src=a, dst=b, proto=proto, sport=a_port, dport=b_port,
                 flags=flags, payload=payload, tos=client_tos if from_client else server_tos)
        )  # fmt: skip
    return out


def dual_stack_traffic() -> list[Sent]:
    """IPv4 and IPv6 TCP, UDP and ICMP flows, one- and two-way, with chosen sizes, flags, TOS
    (and IPv6 traffic class) and sub-millisecond times, sorted by time."""
    http = [(0, True, SYN, 0), (12_345, False, SYN | ACK, 0), (12_500, True, ACK, 0),
            (13_001, True, PSH | ACK, 350), (40_002, False, ACK, 0),
            (41_003, False, PSH | ACK, 1200), (41_504, False, PSH | ACK, 800),
            (50_005, True, ACK, 0), (434_567, True, FIN | ACK, 0),
            (435_001, False, FIN | ACK, 0), (439_999, True, ACK, 0)]  # fmt: skip
    pkts = _conversation(0, PROTO_TCP, ("10.1.1.10", 49152), ("192.0.2.80", 80), http,
                         client_tos=0x10, server_tos=0x20)  # fmt: skip
    # A refused connection: SYN, answered by RST|ACK.
    pkts += _conversation(150_000, PROTO_TCP, ("10.1.1.11", 49200), ("192.0.2.25", 25),
                          [(0, True, SYN, 0), (700, False, RST | ACK, 0)])  # fmt: skip
    # Two DNS queries and answers on the same ports: one two-way flow.
    dns = [(0, True, 0, 40), (9_876, False, 0, 120), (500_000, True, 0, 41),
           (509_876, False, 0, 121)]  # fmt: skip
    pkts += _conversation(200_100, PROTO_UDP, ("10.1.1.12", 53001), ("192.0.2.53", 53), dns)
    # A one-way RTP-like stream, expedited forwarding.
    pkts += [
        Sent(at_us=250_000 + 20_000 * i, src="10.1.1.13", dst="198.51.100.7", proto=PROTO_UDP,
             sport=5004, dport=5004, payload=172, tos=0xB8)
        for i in range(20)
    ]  # fmt: skip
    # Echo requests and replies: two flows.
    for i in range(3):
        pkts += _conversation(300_000 + 200_000 * i, PROTO_ICMP, ("10.1.1.14", 8), ("192.0.2.1", 0),
                              [(0, True, 0, 56)])  # fmt: skip
        pkts += _conversation(303_210 + 200_000 * i, PROTO_ICMP, ("192.0.2.1", 0),
                              ("10.1.1.14", 0), [(0, True, 0, 56)])  # fmt: skip
    # Port unreachable, network control precedence.
    pkts.append(Sent(at_us=350_000, src="192.0.2.254", dst="10.1.1.12", proto=PROTO_ICMP,
                     sport=3, dport=3, payload=28, tos=0xC0))  # fmt: skip
    # IPv6: a whole TCP connection, the client marking its packets (traffic class AF11).
    https = [(0, True, SYN, 0), (1_000, False, SYN | ACK, 0), (2_000, True, ACK, 0),
             (2_500, True, PSH | ACK, 517), (30_000, False, PSH | ACK, 1400),
             (31_000, True, ACK, 0), (600_000, True, FIN | ACK, 0),
             (600_700, False, FIN | ACK, 0), (601_000, True, ACK, 0)]  # fmt: skip
    pkts += _conversation(100_000, PROTO_TCP, ("2001:db8:1::10", 40000),
                          ("2001:db8:2::80", 443), https, client_tos=0x28)  # fmt: skip
    # IPv6 UDP, two-way, and one-way.
    mdns = [(0, True, 0, 33), (4_321, False, 0, 99), (6_000, True, 0, 34)]
    pkts += _conversation(120_000, PROTO_UDP, ("2001:db8:1::11", 5353), ("2001:db8:2::53", 53),
                          mdns)  # fmt: skip
    pkts += [
        Sent(at_us=700_000 + 1_000 * i, src="2001:db8::1", dst="2001:db8::2", proto=PROTO_UDP,
             sport=1000, dport=2000, payload=10 + i)
        for i in range(4)
    ]  # fmt: skip
    # ICMPv6 echo request (128) and reply (129).
    for i in range(2):
        pkts += _conversation(800_000 + 100_000 * i, PROTO_ICMPV6, ("2001:db8:1::12", 128),
                              ("2001:db8:2::1", 0), [(0, True, 0, 32)])  # fmt: skip
        pkts += _conversation(800_555 + 100_000 * i, PROTO_ICMPV6, ("2001:db8:2::1", 129),
                              ("2001:db8:1::12", 0), [(0, True, 0, 32)])  # fmt: skip
    return sorted(pkts, key=lambda p: p.at_us)


def write_capture(path: Path, pkts: Sequence[Sent], base_ns: int) -> Path:
    """A classic pcap (Ethernet, microseconds) of ``pkts``, at ``base_ns`` + their offsets."""
    frames = [
        Captured(timestamp_ns=base_ns + p.at_us * 1000, data=link_frame(p.packet())) for p in pkts
    ]
    path.write_bytes(pcap_bytes(frames, linktype=LINKTYPE_ETHERNET))
    return path


def every_nth(pkts: Sequence[Sent], n: int) -> list[Sent]:
    """softflowd ``-s n``: the 1st, (n+1)th, (2n+1)th ... packet of the capture."""
    return [p for i, p in enumerate(pkts) if i % n == 0]


FlowKey = tuple[str, str, int, int, int]  # src, dst, protocol, src_port, dst_port


@dataclass(frozen=True, slots=True, kw_only=True)
class Direction:
    """One direction of a conversation: what its record must say."""

    src: str
    dst: str
    protocol: int
    src_port: int
    dst_port: int
    ip_version: int
    packets: int
    bytes: int
    tcp_flags: int
    tos: int  # see the module's docstring
    first_ms: int  # the conversation's first and last packet, UNIX ms (truncated)
    last_ms: int
    reverse: bool  # softflowd: the source sorts after the destination (its flowDirection)
    closed: bool  # the conversation saw a RST, or a FIN each way (softflowd's end of flow)
    sent: tuple[Sent, ...]  # its packets
    conversation: tuple[Sent, ...]  # the packets of both directions

    @property
    def key(self) -> FlowKey:
        return (self.src, self.dst, self.protocol, self.src_port, self.dst_port)


def _ms(base_ns: int, at_us: int) -> int:
    return (base_ns + at_us * 1000) // 1_000_000


def _endpoint(addr: str, port: int) -> tuple[bytes, int]:
    return ipaddress.ip_address(addr).packed, port


def directions(pkts: Sequence[Sent], base_ns: int) -> dict[FlowKey, Direction]:
    """The records an exporter that tracks conversations (both do) must send for ``pkts``."""
    conversations: dict[tuple[int, frozenset[tuple[str, int]]], list[Sent]] = {}
    for p in pkts:
        sport, dport = p.ports
        conversation = (p.proto, frozenset({(p.src, sport), (p.dst, dport)}))
        conversations.setdefault(conversation, []).append(p)
    out: dict[FlowKey, Direction] = {}
    for group in conversations.values():
        by_direction: dict[FlowKey, list[Sent]] = {}
        for p in group:
            by_direction.setdefault((p.src, p.dst, p.proto, *p.ports), []).append(p)
        fins = {k for k, ps in by_direction.items() for p in ps if p.flags & FIN}
        closed = any(p.flags & RST for p in group) or len(fins) == 2
        last = max(group, key=lambda p: p.at_us)
        for flow, sent in by_direction.items():
            src, dst, proto, sport, dport = flow
            flags = 0
            for p in sent:
                flags |= p.flags
            out[flow] = Direction(
                src=src, dst=dst, protocol=proto, src_port=sport, dst_port=dport,
                ip_version=sent[0].ip_version, packets=len(sent),
                bytes=sum(p.ip_length for p in sent), tcp_flags=flags,
                tos=last.tos if last in sent and last.ip_version == 4 else 0,
                first_ms=_ms(base_ns, min(p.at_us for p in group)),
                last_ms=_ms(base_ns, max(p.at_us for p in group)),
                reverse=_endpoint(src, sport) > _endpoint(dst, dport), closed=closed,
                sent=tuple(sent), conversation=tuple(group),
            )  # fmt: skip
    return out


def could_be_sampled(
    direction: Direction, base_ns: int, *, packets: int, octets: int, tcp_flags: int,
    first_ms: int, last_ms: int,
) -> list[str]:  # fmt: skip
    """Why a record cannot come from a random sample of ``direction``'s packets ([] if it
    can): ``packets`` of them must sum to ``octets`` bytes with ``tcp_flags`` as their OR,
    and first/last must be times of the conversation's packets, in order."""
    reachable = {(0, 0, 0)}
    for p in direction.sent:
        reachable |= {(n + 1, b + p.ip_length, f | p.flags) for n, b, f in reachable}
    problems = []
    if packets < 1 or (packets, octets, tcp_flags) not in reachable:
        problems.append(
            f"{packets} packets, {octets} bytes, flags {tcp_flags:#x} is no subset of "
            f"{[(p.ip_length, p.flags) for p in direction.sent]}"
        )
    times = {_ms(base_ns, p.at_us) for p in direction.conversation}
    if first_ms not in times or last_ms not in times or first_ms > last_ms:
        problems.append(f"first/last {first_ms}/{last_ms} are not packet times {sorted(times)}")
    return problems
