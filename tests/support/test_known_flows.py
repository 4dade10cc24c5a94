"""The expectations of support.known_flows, which the real-exporter tests trust."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from support.known_flows import (
    Direction,
    could_be_sampled,
    directions,
    dual_stack_traffic,
    every_nth,
)
from support.pcapgen import ACK, FIN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PSH, SYN

BASE_NS = 1_700_000_000_123_456_789
EXPECTED = directions(dual_stack_traffic(), BASE_NS)
HTTP = EXPECTED[("10.1.1.10", "192.0.2.80", PROTO_TCP, 49152, 80)]


def test_each_direction_of_each_conversation_is_one_record_with_the_conversations_times() -> None:
    assert len(EXPECTED) == 17
    assert sum(d.packets for d in EXPECTED.values()) == len(dual_stack_traffic())
    assert sum(1 for d in EXPECTED.values() if d.ip_version == 6) == 7
    reply = EXPECTED[("192.0.2.80", "10.1.1.10", PROTO_TCP, 80, 49152)]
    assert (HTTP.first_ms, HTTP.last_ms) == (reply.first_ms, reply.last_ms)
    assert HTTP.first_ms == BASE_NS // 1_000_000
    assert (HTTP.packets, HTTP.tcp_flags) == (6, SYN | ACK | PSH | FIN)
    assert HTTP.closed
    assert not HTTP.reverse
    assert reply.reverse


def test_the_tos_is_the_last_packets_for_its_direction_and_none_for_ipv6() -> None:
    reply = EXPECTED[("192.0.2.80", "10.1.1.10", PROTO_TCP, 80, 49152)]
    assert (HTTP.tos, reply.tos) == (0x10, 0)  # the client sent the last packet
    v6 = EXPECTED[("2001:db8:1::10", "2001:db8:2::80", PROTO_TCP, 40000, 443)]
    assert v6.tos == 0  # sent with traffic class 0x28, which neither exporter reads


def test_icmp_type_and_code_are_the_destination_port_so_request_and_reply_are_two_flows() -> None:
    assert ("10.1.1.14", "192.0.2.1", PROTO_ICMP, 0, 8 * 256) in EXPECTED
    assert ("192.0.2.1", "10.1.1.14", PROTO_ICMP, 0, 0) in EXPECTED
    assert ("192.0.2.254", "10.1.1.12", PROTO_ICMP, 0, 3 * 256 + 3) in EXPECTED
    request = EXPECTED[("2001:db8:1::12", "2001:db8:2::1", PROTO_ICMPV6, 0, 128 * 256)]
    assert request.packets == 2


def test_every_nth_keeps_the_first_packet_and_each_nth_after_it() -> None:
    pkts = dual_stack_traffic()
    assert every_nth(pkts, 4) == [pkts[i] for i in range(0, len(pkts), 4)]
    assert every_nth(pkts, 1) == pkts


def _subset(d: Direction, picks: list[bool]) -> tuple[int, int, int]:
    chosen = [p for p, keep in zip(d.sent, picks, strict=False) if keep]
    flags = 0
    for p in chosen:
        flags |= p.flags
    return len(chosen), sum(p.ip_length for p in chosen), flags


@given(st.lists(st.booleans(), min_size=len(HTTP.sent), max_size=len(HTTP.sent)))
def test_a_real_sample_of_a_direction_could_be_sampled(picks: list[bool]) -> None:
    packets, octets, flags = _subset(HTTP, picks)
    first = last = HTTP.first_ms
    problems = could_be_sampled(HTTP, BASE_NS, packets=packets, octets=octets,
                                tcp_flags=flags, first_ms=first, last_ms=last)  # fmt: skip
    if not packets:
        assert problems  # a record counts at least one packet
        return
    assert problems == []
    # One byte more is what no subset of these packets gives.
    assert could_be_sampled(HTTP, BASE_NS, packets=packets, octets=octets + 1,
                            tcp_flags=flags, first_ms=first, last_ms=last)  # fmt: skip


def test_a_record_no_sample_gives_is_refused() -> None:
    ok = {"packets": 1, "octets": 40, "tcp_flags": SYN, "first_ms": HTTP.first_ms,
          "last_ms": HTTP.first_ms}  # fmt: skip
    assert could_be_sampled(HTTP, BASE_NS, **ok) == []
    for wrong in ({"packets": 0, "octets": 0, "tcp_flags": 0}, {"tcp_flags": SYN | FIN},
                  {"packets": 7}, {"last_ms": HTTP.first_ms + 1},
                  {"first_ms": HTTP.last_ms, "last_ms": HTTP.first_ms}):  # fmt: skip
        assert could_be_sampled(HTTP, BASE_NS, **(ok | wrong)), wrong
