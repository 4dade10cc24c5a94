"""Reading UDP datagrams out of pcap and pcapng captures (``relay decode``'s input).

Captures come from tests/pcapgen.py where it has the piece (IP/UDP packets, Ethernet, raw IP
and Linux SLL frames, single-interface pcap/pcapng files); the rest (VLAN tags, SLL2, BSD
loopback, IPv4 options, IPv6 extension headers, fragments, pcapng with several interfaces,
sections, simple and obsolete packet blocks) is built by the small local writers below,
from the same format descriptions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.pcapgen import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    SYN,
    Captured,
    icmp,
    ip_packet,
    link_frame,
    pcap_bytes,
    pcapng_bytes,
    tcp,
    udp,
)

from relay.pcap import CaptureError, UdpDatagram, Unreadable, is_capture, read_capture

LINKTYPE_NULL = 0
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL2 = 276
TS = 1_795_000_000_123_456_789

PAYLOAD = b"\x00\x05netflow-ish payload"
UDP4 = udp("192.0.2.10", "192.0.2.20", 40001, 2055, PAYLOAD)
UDP6 = udp("2001:db8::10", "2001:db8::20", 40002, 12999, PAYLOAD + b"6")


def items(data: bytes) -> list[UdpDatagram | Unreadable]:
    return list(read_capture(data))


def frames(*packets: bytes, linktype: int = LINKTYPE_ETHERNET) -> list[Captured]:
    return [
        Captured(timestamp_ns=TS + i, data=link_frame(p, linktype)) for i, p in enumerate(packets)
    ]


def expect_udp4(item: UdpDatagram | Unreadable, number: int = 1) -> None:
    assert item == UdpDatagram(
        number=number, src="192.0.2.10", src_port=40001, dst="192.0.2.20", dst_port=2055,
        payload=PAYLOAD,
    )  # fmt: skip


def expect_udp6(item: UdpDatagram | Unreadable, number: int = 2) -> None:
    assert item == UdpDatagram(
        number=number, src="2001:db8::10", src_port=40002, dst="2001:db8::20",
        dst_port=12999, payload=PAYLOAD + b"6",
    )  # fmt: skip


# ---- local writers for what pcapgen does not have -------------------------------------------


def ethernet(packet: bytes, *tags: int) -> bytes:
    """An Ethernet frame with 802.1Q/802.1ad tags (TPID values) in front of the IP type."""
    vlan = b"".join(struct.pack("!HH", tpid, 100 + i) for i, tpid in enumerate(tags))
    ethertype = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
    return bytes(6) + b"\x02" + bytes(5) + vlan + struct.pack("!H", ethertype) + packet


def sll2(packet: bytes) -> bytes:
    ethertype = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
    # protocol, reserved, interface index, ARPHRD_ETHER, packet type, address length, address
    return struct.pack("!HHIHBB8s", ethertype, 0, 3, 1, 0, 6, bytes(6)) + packet


def bsd_loopback(packet: bytes, family: int, order: str) -> bytes:
    return struct.pack(order + "I", family) + packet


def with_fragment_bits(packet: bytes, bits: int) -> bytes:
    """An IPv4 packet with its flags/fragment-offset word replaced (checksum not redone:
    the reader does not check it)."""
    return packet[:6] + struct.pack("!H", bits) + packet[8:]


def ipv4_with_options(packet: bytes) -> bytes:
    """The same IPv4 packet with one 4-byte option (NOPs + end) in a 24-byte header."""
    header, rest = bytearray(packet[:20]), packet[20:]
    header[0] = 0x46
    struct.pack_into("!H", header, 2, len(packet) + 4)
    return bytes(header) + b"\x01\x01\x01\x00" + rest


def ipv6_with_extension(udp6: bytes, extension_type: int, extension: bytes) -> bytes:
    return ip_packet("2001:db8::10", "2001:db8::20", extension_type, extension + udp6[40:])


def block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int, snaplen: int = 65535) -> bytes:
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen))


def epb(order: str, iface: int, data: bytes, orig_len: int | None = None) -> bytes:
    orig = len(data) if orig_len is None else orig_len
    return block(order, 6, struct.pack(order + "IIIII", iface, 0, 0, len(data), orig) + data)


def spb(order: str, data: bytes, orig_len: int | None = None) -> bytes:
    return block(
        order, 3, struct.pack(order + "I", len(data) if orig_len is None else orig_len) + data
    )


def obsolete_pb(order: str, iface: int, data: bytes) -> bytes:
    head = struct.pack(order + "HHIIII", iface, 0, 0, 0, len(data), len(data))
    return block(order, 2, head + data)


# ---- classic pcap ---------------------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_pcap_all_magics(big_endian: bool, nanosecond: bool) -> None:
    data = pcap_bytes(frames(UDP4, UDP6), nanosecond=nanosecond, big_endian=big_endian)
    assert is_capture(data)
    got = items(data)
    assert len(got) == 2
    expect_udp4(got[0])
    expect_udp6(got[1])


@pytest.mark.parametrize("writer", [pcap_bytes, pcapng_bytes], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_each_datagram_carries_its_capture_timestamp(
    writer: Callable[..., bytes], nanosecond: bool
) -> None:
    """relay decode's clock: a template's age between packets comes from these."""
    got = items(writer(frames(UDP4, UDP6), nanosecond=nanosecond))
    unit = 1 if nanosecond else 1000
    for i, item in enumerate(got):
        assert isinstance(item, UdpDatagram)
        expected_ns = (TS + i) // unit * unit
        assert item.time == pytest.approx(expected_ns / 1e9, abs=1e-6)


def test_empty_pcap_has_no_datagrams() -> None:
    assert items(pcap_bytes([])) == []


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_pcapng_single_interface(big_endian: bool, nanosecond: bool) -> None:
    data = pcapng_bytes(
        frames(UDP4, UDP6), nanosecond=nanosecond, big_endian=big_endian, comment="a comment"
    )
    assert is_capture(data)
    got = items(data)
    assert len(got) == 2
    expect_udp4(got[0])
    expect_udp6(got[1])


# ---- link types -----------------------------------------------------------------------------

LINK_CASES: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "ethernet": (LINKTYPE_ETHERNET, lambda p: link_frame(p, LINKTYPE_ETHERNET)),
    "raw": (LINKTYPE_RAW, lambda p: p),
    "raw-dlt12": (12, lambda p: p),
    "sll": (LINKTYPE_LINUX_SLL, lambda p: link_frame(p, LINKTYPE_LINUX_SLL)),
    "sll2": (LINKTYPE_LINUX_SLL2, sll2),
    "vlan": (LINKTYPE_ETHERNET, lambda p: ethernet(p, 0x8100)),
    "qinq": (LINKTYPE_ETHERNET, lambda p: ethernet(p, 0x88A8, 0x8100)),
    "null-le": (
        LINKTYPE_NULL,
        lambda p: bsd_loopback(p, 2 if p[0] >> 4 == 4 else 24, "<"),
    ),
    "null-be": (
        LINKTYPE_NULL,
        lambda p: bsd_loopback(p, 2 if p[0] >> 4 == 4 else 30, ">"),
    ),
    "loop": (LINKTYPE_LOOP, lambda p: bsd_loopback(p, 2 if p[0] >> 4 == 4 else 28, ">")),
}


@pytest.mark.parametrize("case", sorted(LINK_CASES))
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_link_types_ipv4_and_ipv6(case: str, fmt: str) -> None:
    linktype, wrap = LINK_CASES[case]
    captured = [Captured(timestamp_ns=TS, data=wrap(p)) for p in (UDP4, UDP6)]
    writer = pcap_bytes if fmt == "pcap" else pcapng_bytes
    got = items(writer(captured, linktype=linktype))
    assert len(got) == 2, got
    expect_udp4(got[0])
    expect_udp6(got[1])


def test_linux_ipv6_loopback_family() -> None:
    got = items(pcap_bytes([Captured(timestamp_ns=TS, data=bsd_loopback(UDP6, 10, "<"))],
                           linktype=LINKTYPE_NULL))  # fmt: skip
    assert len(got) == 1
    expect_udp6(got[0], number=1)


def test_non_udp_packets_are_skipped_and_numbering_follows_the_capture() -> None:
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    packets = [
        link_frame(tcp("192.0.2.1", "192.0.2.2", 1, 2, SYN)),
        link_frame(UDP4),
        link_frame(icmp("192.0.2.1", "192.0.2.2", 8)),
        arp,
        link_frame(icmp("2001:db8::1", "2001:db8::2", 128)),
        link_frame(UDP6),
    ]
    got = items(pcap_bytes([Captured(timestamp_ns=TS, data=d) for d in packets]))
    assert len(got) == 2
    expect_udp4(got[0], number=2)  # as Wireshark numbers them
    expect_udp6(got[1], number=6)


def test_unknown_link_type_yields_nothing() -> None:
    assert items(pcap_bytes(frames(UDP4, linktype=LINKTYPE_RAW), linktype=147)) == []


def test_ethernet_padding_is_not_payload() -> None:
    small = udp("192.0.2.10", "192.0.2.20", 1, 2, b"abc")
    frame = link_frame(small)
    frame += b"\x00" * (60 - len(frame))  # minimum Ethernet frame size
    (got,) = items(pcap_bytes([Captured(timestamp_ns=TS, data=frame)]))
    assert isinstance(got, UdpDatagram)
    assert got.payload == b"abc"


def test_ipv4_options_are_skipped() -> None:
    (got,) = items(pcap_bytes(frames(ipv4_with_options(UDP4))))
    expect_udp4(got)


def test_ipv6_extension_headers_are_followed() -> None:
    hop_by_hop = bytes([17, 0]) + bytes([1, 4, 0, 0, 0, 0])  # next: UDP, 8 bytes, PadN
    packet = ipv6_with_extension(UDP6, 0, hop_by_hop)
    (got,) = items(pcap_bytes(frames(packet)))
    expect_udp6(got, number=1)


# ---- packets whose payload cannot be trusted ------------------------------------------------


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_snaplen_truncated_packet_is_unreadable(fmt: str) -> None:
    big = udp("192.0.2.10", "192.0.2.20", 40001, 2055, bytes(1400))
    writer = pcap_bytes if fmt == "pcap" else pcapng_bytes
    got = items(writer(frames(UDP4, big, UDP6), snaplen=200))
    assert len(got) == 3
    expect_udp4(got[0])
    assert isinstance(got[1], Unreadable)
    assert got[1].number == 2
    assert got[1].src == "192.0.2.10"
    assert "snap" in got[1].reason
    expect_udp6(got[2], number=3)


def test_udp_length_beyond_the_captured_bytes_is_unreadable() -> None:
    cut = UDP4[:-5]  # the record says this is all there was, but UDP says 5 more bytes
    (got,) = items(pcap_bytes(frames(cut)))
    assert isinstance(got, Unreadable)


def test_udp_header_cut_short_is_unreadable() -> None:
    packet = ip_packet("192.0.2.10", "192.0.2.20", 17, b"\x9c\x41\x08")
    (got,) = items(pcap_bytes(frames(packet)))
    assert isinstance(got, Unreadable)
    assert got.src == "192.0.2.10"


@pytest.mark.parametrize(
    "bits",
    [0x2000, 0x2000 | 185, 185, 0x4000 | 0x2000],
    ids=["first-fragment", "middle-fragment", "last-fragment", "df-and-mf"],
)
def test_ipv4_fragments_are_unreadable(bits: int) -> None:
    (got,) = items(pcap_bytes(frames(with_fragment_bits(UDP4, bits))))
    assert isinstance(got, Unreadable)
    assert "fragment" in got.reason
    assert got.src == "192.0.2.10"


def test_ipv6_fragment_is_unreadable() -> None:
    fragment = bytes([17, 0, 0, 1, 0, 0, 0, 7])  # next: UDP, offset 0, more fragments
    (got,) = items(pcap_bytes(frames(ipv6_with_extension(UDP6, 44, fragment))))
    assert isinstance(got, Unreadable)
    assert "fragment" in got.reason
    assert got.src == "2001:db8::10"


# ---- pcapng structure -----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_several_interfaces_and_packet_block_kinds(order: str) -> None:
    data = b"".join([
        shb(order),
        idb(order, LINKTYPE_ETHERNET),
        idb(order, LINKTYPE_RAW),
        block(order, 4, b"\x00\x00\x00\x00"),  # name resolution block: skipped
        idb(order, LINKTYPE_LINUX_SLL2),
        epb(order, 1, UDP4),
        epb(order, 2, sll2(UDP6)),
        spb(order, link_frame(UDP4)),  # simple packet block: interface 0
        block(order, 5, struct.pack(order + "III", 0, 0, 0)),  # interface statistics: skipped
        obsolete_pb(order, 0, link_frame(UDP6)),
        block(order, 0x40000BAD, b"custom"),  # a custom block: skipped
        epb(order, 0, link_frame(UDP4)),
    ])  # fmt: skip
    got = items(data)
    assert [g.number for g in got] == [1, 2, 3, 4, 5]
    expect_udp4(got[0], number=1)
    expect_udp6(got[1], number=2)
    expect_udp4(got[2], number=3)
    expect_udp6(got[3], number=4)
    expect_udp4(got[4], number=5)


def test_pcapng_sections_restart_interfaces_and_byte_order() -> None:
    data = b"".join([
        shb("<"),
        idb("<", LINKTYPE_ETHERNET),
        epb("<", 0, link_frame(UDP4)),
        shb(">"),  # a new section (e.g. two captures concatenated): its own interfaces
        idb(">", LINKTYPE_RAW),
        epb(">", 0, UDP6),
    ])  # fmt: skip
    got = items(data)
    expect_udp4(got[0], number=1)
    expect_udp6(got[1], number=2)


def test_pcapng_interface_of_a_previous_section_is_not_reused() -> None:
    data = shb("<") + idb("<", LINKTYPE_ETHERNET) + shb("<") + epb("<", 0, link_frame(UDP4))
    with pytest.raises(CaptureError):
        items(data)


def test_pcapng_simple_packet_truncated_by_snaplen_is_unreadable() -> None:
    frame = link_frame(UDP4)
    data = shb("<") + idb("<", LINKTYPE_ETHERNET, snaplen=40) + spb("<", frame[:40], len(frame))
    (got,) = items(data)
    assert isinstance(got, Unreadable)


# ---- files that are cut short or are not captures -------------------------------------------


def test_not_a_capture() -> None:
    assert not is_capture(b"\x00\x05" + bytes(22))
    with pytest.raises(CaptureError):
        items(b"\x00\x05" + bytes(22))
    with pytest.raises(CaptureError):
        items(b"")


def _pcap_cuts() -> dict[str, bytes]:
    whole = pcap_bytes(frames(UDP4, UDP6))
    first_end = 24 + 16 + len(link_frame(UDP4))
    return {
        "global-header": whole[:10],
        "record-header": whole[: first_end + 8],
        "packet-data": whole[:-3],
    }


def _pcapng_cuts() -> dict[str, bytes]:
    whole = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, link_frame(UDP4))
    return {
        "block-body": whole[:-8],
        "leftover-bytes": whole + b"\x06\x00\x00",
        "half-a-block-header": whole + b"\x06\x00\x00\x00\x40\x00",
        "bad-length": whole + struct.pack("<II", 6, 13) + bytes(5),
        "length-below-minimum": whole + struct.pack("<II", 6, 8) + bytes(8),
        "bad-byte-order-magic": whole + block("<", 0x0A0D0D0A, b"\x11\x22\x33\x44" + bytes(12)),
        "interface-out-of-range": whole + epb("<", 3, link_frame(UDP4)),
        "packet-before-interface": shb("<") + epb("<", 0, link_frame(UDP4)),
        "simple-packet-before-interface": shb("<") + spb("<", link_frame(UDP4)),
        "captured-length-beyond-block": whole
        + block("<", 6, struct.pack("<IIIII", 0, 0, 0, 500, 500) + bytes(40)),
    }


_CUTS = {**_pcap_cuts(), **_pcapng_cuts()}


@pytest.mark.parametrize("case", sorted(_CUTS))
def test_cut_short_or_inconsistent_file_raises_capture_error(case: str) -> None:
    data = _CUTS[case]
    with pytest.raises(CaptureError) as info:
        items(data)
    assert str(info.value)


def test_packets_before_the_cut_are_still_read() -> None:
    reader = read_capture(_pcap_cuts()["packet-data"])
    expect_udp4(next(reader))
    with pytest.raises(CaptureError):
        next(reader)


@pytest.mark.parametrize(
    "body_block",
    [
        pytest.param(block("<", 1, b""), id="interface-block-without-body"),
        pytest.param(block("<", 6, bytes(4)), id="enhanced-packet-block-without-body"),
        pytest.param(block("<", 3, b""), id="simple-packet-block-without-body"),
        pytest.param(block("<", 2, bytes(4)), id="obsolete-packet-block-without-body"),
    ],
)
def test_blocks_too_short_for_their_fields_raise_capture_error(body_block: bytes) -> None:
    # A corrupt file must end in CaptureError (a sentence on stderr), never a struct.error
    # traceback out of `relay decode`.
    data = shb("<") + idb("<", LINKTYPE_ETHERNET) + body_block
    with pytest.raises(CaptureError):
        items(data)


def _valid_captures() -> list[bytes]:
    packets = (
        UDP4,
        UDP6,
        with_fragment_bits(UDP4, 0x2000),
        tcp("192.0.2.1", "192.0.2.2", 1, 2, SYN),
    )
    return [
        pcap_bytes(frames(*packets)),
        pcap_bytes(frames(*packets), big_endian=True, nanosecond=True),
        pcapng_bytes(frames(*packets)),
        shb(">") + idb(">", LINKTYPE_NULL) + idb(">", LINKTYPE_LINUX_SLL2)
        + epb(">", 1, sll2(UDP6)) + epb(">", 0, bsd_loopback(UDP4, 2, "<")),
    ]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_valid_captures()),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 10_000),
)
def test_corrupted_captures_only_ever_raise_capture_error(
    capture: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(capture)
    for position, value in flips:
        data[4 + position % (len(data) - 4)] = value  # keep the magic: get past the sniffing
    data = data[: max(4, len(data) - cut % len(data))]
    try:
        for item in read_capture(bytes(data)):
            assert isinstance(item, UdpDatagram | Unreadable)
    except CaptureError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["<", ">"]),
    st.lists(
        st.tuples(st.sampled_from([1, 2, 3, 4, 5, 6, 0x0A0D0D0A]), st.binary(max_size=60)),
        max_size=6,
    ),
)
def test_random_pcapng_blocks_only_ever_raise_capture_error(
    order: str, blocks: list[tuple[int, bytes]]
) -> None:
    data = shb(order) + b"".join(block(order, kind, body) for kind, body in blocks)
    try:
        for item in read_capture(data):
            assert isinstance(item, UdpDatagram | Unreadable)
    except CaptureError:
        pass
