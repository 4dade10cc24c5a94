"""A test-only writer of packets and capture files (classic pcap and pcapng).

Written from the format descriptions (IETF draft-ietf-opsawg-pcap and draft-ietf-opsawg-pcapng;
RFC 791/8200 for IP, RFC 768 UDP, RFC 793 TCP, RFC 792/4443 ICMP, RFC 1071 checksum) so that
tests can hand real exporters (softflowd -r) and ``relay decode`` captures whose every packet
is known: addresses, ports, sizes, TCP flags and timestamps.

Packets are built as whole IP packets (``udp``, ``tcp``, ``icmp``); ``link_frame`` puts a
link-layer header in front for the capture's link type; ``pcap_bytes`` / ``pcapng_bytes``
write the file. ``capture_datagrams`` wraps UDP payloads that a test socket received (exporter
address and port -> collector) so a capture of an exporter's output can be replayed offline.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Link types (tcpdump.org LINKTYPE_ values).
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # the frame is the IP packet itself, v4 or v6
LINKTYPE_LINUX_SLL = 113  # Linux "cooked" capture, what `tcpdump -i any` writes

LINKTYPES = (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

# TCP flag bits, as NetFlow reports them (the low byte of the TCP flags field).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
UDP_HEADER_LEN = 8
TCP_HEADER_LEN = 20
ICMP_HEADER_LEN = 8
ETHERNET_HEADER_LEN = 14
SLL_HEADER_LEN = 16

# Locally administered MAC addresses, so nothing here looks like a real vendor's card.
DEFAULT_SRC_MAC = bytes.fromhex("020000000001")
DEFAULT_DST_MAC = bytes.fromhex("020000000002")

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_EPB = 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_OPT_ENDOFOPT = 0
PCAPNG_OPT_COMMENT = 1
PCAPNG_IF_TSRESOL = 9

DEFAULT_SNAPLEN = 262144

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum of 16-bit words, complemented."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def _same_family(src: str, dst: str) -> tuple[IPAddress, IPAddress]:
    s, d = _address(src), _address(dst)
    if s.version != d.version:
        raise ValueError(f"mixed address families: {src} -> {dst}")
    return s, d


def _pseudo_header(src: IPAddress, dst: IPAddress, protocol: int, length: int) -> bytes:
    """The header that TCP, UDP and ICMPv6 checksums cover besides their own bytes."""
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, protocol, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, protocol)


def _with_checksum(segment: bytes, offset: int, checksum: int) -> bytes:
    return segment[:offset] + struct.pack("!H", checksum) + segment[offset + 2 :]


def ip_packet(
    src: str,
    dst: str,
    protocol: int,
    payload: bytes,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
) -> bytes:
    """An IPv4 (with header checksum) or IPv6 packet carrying ``payload``; the family follows
    the addresses. ``tos`` is the IPv4 TOS byte or the IPv6 traffic class."""
    s, d = _same_family(src, dst)
    if s.version == 4:
        total = IPV4_HEADER_LEN + len(payload)
        if total > 0xFFFF:
            raise ValueError(f"IPv4 packet too long: {total} bytes")
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,  # version 4, header length 5 words (no options)
            tos,
            total,
            ident,
            0x4000,  # don't fragment, offset 0
            ttl,
            protocol,
            0,
            s.packed,
            d.packed,
        )
        return _with_checksum(header, 10, internet_checksum(header)) + payload
    if len(payload) > 0xFFFF:
        raise ValueError(f"IPv6 payload too long: {len(payload)} bytes")
    first_word = (6 << 28) | (tos << 20)  # flow label 0
    header = struct.pack("!IHBB16s16s", first_word, len(payload), protocol, ttl, s.packed, d.packed)
    return header + payload


def udp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
) -> bytes:
    """A whole IP packet carrying one UDP datagram with a correct checksum."""
    s, d = _same_family(src, dst)
    length = UDP_HEADER_LEN + len(payload)
    segment = struct.pack("!HHHH", sport, dport, length, 0) + payload
    checksum = internet_checksum(_pseudo_header(s, d, PROTO_UDP, length) + segment)
    # A computed 0 is sent as all ones: 0 means "no checksum" in IPv4 and is illegal in IPv6.
    segment = _with_checksum(segment, 6, checksum or 0xFFFF)
    return ip_packet(src, dst, PROTO_UDP, segment, ttl=ttl, tos=tos, ident=ident)


def tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    flags: int,
    payload: bytes = b"",
    *,
    seq: int = 0,
    ack: int = 0,
    window: int = 65535,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
) -> bytes:
    """A whole IP packet carrying one TCP segment (no options) with a correct checksum."""
    s, d = _same_family(src, dst)
    segment = (
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            (TCP_HEADER_LEN // 4) << 4,
            flags & 0xFF,
            window,
            0,
            0,  # urgent pointer
        )
        + payload
    )
    checksum = internet_checksum(_pseudo_header(s, d, PROTO_TCP, len(segment)) + segment)
    segment = _with_checksum(segment, 16, checksum)
    return ip_packet(src, dst, PROTO_TCP, segment, ttl=ttl, tos=tos, ident=ident)


def icmp(
    src: str,
    dst: str,
    icmp_type: int,
    code: int = 0,
    payload: bytes = b"",
    *,
    ident: int = 0,
    seq: int = 0,
    ttl: int = 64,
    tos: int = 0,
    ip_ident: int = 0,
) -> bytes:
    """A whole IP packet carrying an ICMP (IPv4) or ICMPv6 (IPv6) message in the echo layout
    (type, code, checksum, identifier, sequence, data). ICMPv6 checksums cover the IPv6
    pseudo-header; ICMPv4 checksums do not. ``ip_ident`` is the IPv4 identification."""
    s, d = _same_family(src, dst)
    message = struct.pack("!BBHHH", icmp_type, code, 0, ident, seq) + payload
    if s.version == 4:
        protocol = PROTO_ICMP
        checksum = internet_checksum(message)
    else:
        protocol = PROTO_ICMPV6
        checksum = internet_checksum(_pseudo_header(s, d, protocol, len(message)) + message)
    message = _with_checksum(message, 2, checksum)
    return ip_packet(src, dst, protocol, message, ttl=ttl, tos=tos, ident=ip_ident)


def _ethertype(packet: bytes) -> int:
    if not packet:
        raise ValueError("empty IP packet")
    version = packet[0] >> 4
    if version == 4:
        return ETHERTYPE_IPV4
    if version == 6:
        return ETHERTYPE_IPV6
    raise ValueError(f"not an IP packet (version nibble {version})")


def link_frame(
    packet: bytes,
    linktype: int = LINKTYPE_ETHERNET,
    *,
    src_mac: bytes = DEFAULT_SRC_MAC,
    dst_mac: bytes = DEFAULT_DST_MAC,
    outgoing: bool = False,
) -> bytes:
    """Put the link-layer header of ``linktype`` in front of an IP packet.

    For Linux cooked captures, ``outgoing`` marks the packet as sent by the capturing host
    (packet type 4) instead of addressed to it (0)."""
    if linktype == LINKTYPE_RAW:
        _ethertype(packet)
        return packet
    if linktype == LINKTYPE_ETHERNET:
        if len(src_mac) != 6 or len(dst_mac) != 6:
            raise ValueError("MAC addresses are 6 bytes")
        return dst_mac + src_mac + struct.pack("!H", _ethertype(packet)) + packet
    if linktype == LINKTYPE_LINUX_SLL:
        if len(src_mac) != 6:
            raise ValueError("MAC addresses are 6 bytes")
        header = struct.pack(
            "!HHH8sH",
            4 if outgoing else 0,
            1,  # ARPHRD_ETHER
            len(src_mac),
            src_mac,  # padded to 8 bytes by the format
            _ethertype(packet),
        )
        return header + packet
    raise ValueError(f"unsupported link type {linktype}")


def link_header_len(linktype: int) -> int:
    """Bytes in front of the IP packet in a frame of this link type."""
    return {
        LINKTYPE_ETHERNET: ETHERNET_HEADER_LEN,
        LINKTYPE_RAW: 0,
        LINKTYPE_LINUX_SLL: SLL_HEADER_LEN,
    }[linktype]


@dataclass(frozen=True, slots=True, kw_only=True)
class Captured:
    """One captured frame: its link-layer bytes and when it was seen (UNIX nanoseconds).

    ``orig_len`` is the length on the wire when the capture kept fewer bytes than that."""

    timestamp_ns: int
    data: bytes
    orig_len: int | None = None

    def __post_init__(self) -> None:
        if self.timestamp_ns < 0:
            raise ValueError("timestamps before 1970 are not representable in pcap")
        if self.orig_len is not None and self.orig_len < len(self.data):
            raise ValueError("orig_len is shorter than the captured bytes")

    @property
    def wire_len(self) -> int:
        return len(self.data) if self.orig_len is None else self.orig_len


def pcap_bytes(
    frames: Iterable[Captured],
    *,
    linktype: int = LINKTYPE_ETHERNET,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = DEFAULT_SNAPLEN,
) -> bytes:
    """A classic pcap file (version 2.4) holding ``frames``.

    ``nanosecond`` selects the 0xA1B23C4D magic (nanosecond fractions) instead of
    microseconds; microsecond files truncate the timestamps. Frames longer than ``snaplen``
    are cut, keeping their original length in the record."""
    order = ">" if big_endian else "<"
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for frame in frames:
        seconds, fraction = divmod(frame.timestamp_ns, 1_000_000_000)
        if not nanosecond:
            fraction //= 1000
        if seconds > 0xFFFFFFFF:
            raise ValueError("timestamp beyond the pcap format's 32-bit seconds")
        data = frame.data[:snaplen]
        out.append(struct.pack(order + "IIII", seconds, fraction, len(data), frame.wire_len))
        out.append(data)
    return b"".join(out)


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _pcapng_options(order: str, options: Iterable[tuple[int, bytes]]) -> bytes:
    body = [struct.pack(order + "HH", code, len(value)) + _pad4(value) for code, value in options]
    if not body:
        return b""
    body.append(struct.pack(order + "HH", PCAPNG_OPT_ENDOFOPT, 0))
    return b"".join(body)


def _pcapng_block(order: str, block_type: int, body: bytes) -> bytes:
    body = _pad4(body)
    total = 12 + len(body)
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def pcapng_bytes(
    frames: Iterable[Captured],
    *,
    linktype: int = LINKTYPE_ETHERNET,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = DEFAULT_SNAPLEN,
    comment: str | None = None,
) -> bytes:
    """A pcapng file: one Section Header Block, one Interface Description Block, one
    Enhanced Packet Block per frame.

    With ``nanosecond`` the interface says ``if_tsresol`` = 9 (10^-9 s units); otherwise no
    option is written and readers use the default resolution, microseconds. ``comment``
    goes into the section header as ``opt_comment``, which readers must skip."""
    order = ">" if big_endian else "<"
    shb_options = [(PCAPNG_OPT_COMMENT, comment.encode())] if comment else []
    shb = struct.pack(order + "IHHq", PCAPNG_BYTE_ORDER_MAGIC, 1, 0, -1)
    out = [_pcapng_block(order, PCAPNG_SHB, shb + _pcapng_options(order, shb_options))]
    idb_options = [(PCAPNG_IF_TSRESOL, bytes([9]))] if nanosecond else []
    idb = struct.pack(order + "HHI", linktype, 0, snaplen)
    out.append(_pcapng_block(order, PCAPNG_IDB, idb + _pcapng_options(order, idb_options)))
    for frame in frames:
        units = frame.timestamp_ns if nanosecond else frame.timestamp_ns // 1000
        data = frame.data[:snaplen]
        epb = struct.pack(
            order + "IIIII",
            0,  # interface id: the one IDB above
            units >> 32,
            units & 0xFFFFFFFF,
            len(data),
            frame.wire_len,
        )
        out.append(_pcapng_block(order, PCAPNG_EPB, epb + _pad4(data)))
    return b"".join(out)


def write_pcap(
    path: Path,
    frames: Iterable[Captured],
    *,
    linktype: int = LINKTYPE_ETHERNET,
    nanosecond: bool = False,
    big_endian: bool = False,
) -> Path:
    """Write a classic pcap file (see ``pcap_bytes``) to ``path``; returns ``path``."""
    path.write_bytes(
        pcap_bytes(frames, linktype=linktype, nanosecond=nanosecond, big_endian=big_endian)
    )
    return path


def write_pcapng(
    path: Path,
    frames: Iterable[Captured],
    *,
    linktype: int = LINKTYPE_ETHERNET,
    nanosecond: bool = False,
    big_endian: bool = False,
) -> Path:
    """Write a pcapng file (see ``pcapng_bytes``) to ``path``; returns ``path``."""
    path.write_bytes(
        pcapng_bytes(frames, linktype=linktype, nanosecond=nanosecond, big_endian=big_endian)
    )
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class Datagram:
    """A UDP payload as a collector received it: from ``src`` (exporter address, port) to
    ``dst`` (collector address, port), at ``timestamp_ns``."""

    timestamp_ns: int
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def capture_datagrams(
    datagrams: Iterable[Datagram], *, linktype: int = LINKTYPE_ETHERNET
) -> list[Captured]:
    """Frames for a capture of received UDP datagrams, as a collector-side tcpdump would
    have seen them (IP identification counts up so the packets are distinguishable)."""
    frames = []
    for index, gram in enumerate(datagrams):
        packet = udp(
            gram.src[0], gram.dst[0], gram.src[1], gram.dst[1], gram.payload, ident=index & 0xFFFF
        )
        frames.append(Captured(timestamp_ns=gram.timestamp_ns, data=link_frame(packet, linktype)))
    return frames
