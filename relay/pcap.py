"""Reading UDP payloads out of pcap and pcapng captures (sans-IO: bytes in, datagrams out).

Small on purpose: ``relay decode`` needs the UDP payload and source address of each packet,
nothing more, which is a few dozen lines per format; dpkt or scapy would add a dependency
(scapy a heavy one) to the appliance for that. Supported: classic pcap (both byte orders,
micro- and nanosecond), pcapng (SHB/IDB/EPB/SPB, several sections and interfaces); link
types Ethernet (with 802.1Q/802.1ad tags), raw IP, BSD loopback, Linux cooked v1 and v2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from relay.errors import RelayError

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanosecond resolution
    b"\xa1\xb2\x3c\x4d": ">",
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_RAW_ALIASES = {12, 14, LINKTYPE_RAW, 228, 229}  # DLT_RAW variants, IPv4-only, IPv6-only

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
_VLAN_TAGS = {0x8100, 0x88A8, 0x9100}
_BSD_AF_INET6 = {10, 24, 28, 30}
_IPPROTO_UDP = 17
_IPV6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44


class CaptureError(RelayError):
    """The file is not a capture this reader understands, or is cut short."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpDatagram:
    number: int  # 1-based packet number in the capture, as Wireshark counts
    src: str
    src_port: int
    dst: str
    dst_port: int
    payload: bytes
    # When the capture saw it, UNIX seconds (relay decode's clock); not part of its identity.
    time: float = dataclasses.field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Unreadable:
    """A UDP packet whose payload cannot be trusted (truncated by the snap length,
    fragmented): reported, never decoded as if it were whole."""

    number: int
    src: str
    reason: str


def is_capture(data: bytes) -> bool:
    return data[:4] in PCAP_MAGICS or data[:4] == PCAPNG_SHB


def read_capture(data: bytes) -> Iterator[UdpDatagram | Unreadable]:
    """Every UDP packet of a pcap or pcapng capture; other packets are skipped."""
    if data[:4] == PCAPNG_SHB:
        frames = _pcapng_frames(data)
    elif data[:4] in PCAP_MAGICS:
        frames = _pcap_frames(data)
    else:
        raise CaptureError("not a pcap or pcapng capture")
    for number, linktype, frame, orig_len, seen in frames:
        result = _udp(number, linktype, frame, truncated=len(frame) < orig_len)
        if isinstance(result, UdpDatagram):
            yield dataclasses.replace(result, time=seen)
        elif result is not None:
            yield result


# Each frame: its number, link type, bytes, length on the wire, and timestamp (UNIX seconds).
_Frame = tuple[int, int, bytes, int, float]


def _pcap_frames(data: bytes) -> Iterator[_Frame]:
    order = PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise CaptureError("pcap global header is cut short")
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF
    unit = 1e-9 if data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    record = struct.Struct(order + "IIII")
    offset, number = 24, 0
    while offset < len(data):
        if offset + record.size > len(data):
            raise CaptureError(f"packet {number + 1}: record header cut short")
        secs, fraction, incl_len, orig_len = record.unpack_from(data, offset)
        offset += record.size
        if offset + incl_len > len(data):
            raise CaptureError(f"packet {number + 1}: packet data cut short")
        number += 1
        yield number, linktype, data[offset : offset + incl_len], orig_len, secs + fraction * unit
        offset += incl_len


def _pcapng_frames(data: bytes) -> Iterator[_Frame]:
    offset, number = 0, 0
    order = "<"
    linktypes: list[int] = []
    units: list[float] = []  # each interface's timestamp unit in seconds (if_tsresol)
    while offset + 12 <= len(data):
        if data[offset : offset + 4] == PCAPNG_SHB:
            magic = data[offset + 8 : offset + 12]
            order = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(magic, "")
            if not order:
                raise CaptureError(f"offset {offset}: bad pcapng byte-order magic")
            linktypes, units = [], []
        block_type, block_len = struct.unpack_from(order + "II", data, offset)
        if block_len < 12 or block_len % 4 or offset + block_len > len(data):
            raise CaptureError(f"offset {offset}: pcapng block length {block_len} is invalid")
        body = data[offset + 8 : offset + block_len - 4]
        needed = {1: 2, 6: 20, 2: 20, 3: 4}.get(block_type, 0)
        if len(body) < needed:
            raise CaptureError(f"offset {offset}: pcapng block {block_type} is too short")
        offset += block_len
        if block_type == 1:  # interface description
            linktypes.append(struct.unpack_from(order + "H", body)[0])
            units.append(_tsresol(order, body[8:]))
        elif block_type in (6, 2):  # enhanced packet, obsolete packet
            if block_type == 6:
                iface, high, low, cap_len, orig_len = struct.unpack_from(order + "IIIII", body)
            else:
                iface, _, high, low, cap_len, orig_len = struct.unpack_from(order + "HHIIII", body)
            number += 1
            if iface >= len(linktypes) or 20 + cap_len > len(body):
                raise CaptureError(f"packet {number}: bad interface or captured length")
            seen = ((high << 32) | low) * units[iface]
            yield number, linktypes[iface], body[20 : 20 + cap_len], orig_len, seen
        elif block_type == 3:  # simple packet: interface 0, captured up to the block end
            (orig_len,) = struct.unpack_from(order + "I", body)
            number += 1
            if not linktypes:
                raise CaptureError(f"packet {number}: simple packet before any interface")
            # A simple packet has no timestamp: 0, which no clock of relay decode uses.
            yield number, linktypes[0], body[4 : 4 + orig_len], orig_len, 0.0
    if offset != len(data):
        raise CaptureError(f"offset {offset}: pcapng block cut short")


def _tsresol(order: str, options: bytes) -> float:
    """An interface's if_tsresol (option 9): 10**-n, or 2**-n with the top bit; default
    microseconds."""
    at = 0
    while at + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, at)
        if code == 0:
            break
        if code == 9 and length >= 1 and at + 5 <= len(options):
            value = options[at + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -(value & 0x7F)
        at += 4 + length + (-length % 4)
    return 1e-6


def _udp(
    number: int, linktype: int, frame: bytes, *, truncated: bool
) -> UdpDatagram | Unreadable | None:
    ip = _network_layer(linktype, frame)
    if ip is None or not ip:
        return None
    version = ip[0] >> 4
    if version == 4 and len(ip) >= 20:
        header_len = (ip[0] & 0x0F) * 4
        if ip[9] != _IPPROTO_UDP or len(ip) < header_len:
            return None
        src = str(ipaddress.IPv4Address(ip[12:16]))
        dst = str(ipaddress.IPv4Address(ip[16:20]))
        flags_offset = struct.unpack_from("!H", ip, 6)[0]
        if flags_offset & 0x3FFF:  # more-fragments bit or a fragment offset
            return Unreadable(
                number=number, src=src, reason="fragmented IP packet (not reassembled)"
            )
        udp = ip[header_len:]
    elif version == 6 and len(ip) >= 40:
        src = str(ipaddress.IPv6Address(ip[8:24]))
        dst = str(ipaddress.IPv6Address(ip[24:40]))
        next_header, udp = ip[6], ip[40:]
        while next_header in _IPV6_EXTENSIONS and len(udp) >= 8:
            next_header, udp = udp[0], udp[(udp[1] + 1) * 8 :]
        if next_header == _IPV6_FRAGMENT:
            return Unreadable(
                number=number, src=src, reason="fragmented IP packet (not reassembled)"
            )
        if next_header != _IPPROTO_UDP:
            return None
    else:
        return None
    if len(udp) < 8:
        return Unreadable(number=number, src=src, reason="UDP header cut short in the capture")
    sport, dport, length = struct.unpack_from("!HHH", udp)
    payload = udp[8:length] if length >= 8 else udp[8:]
    if truncated or len(payload) < length - 8:
        return Unreadable(
            number=number, src=src, reason="packet truncated by the capture's snap length"
        )
    return UdpDatagram(
        number=number, src=src, src_port=sport, dst=dst, dst_port=dport, payload=bytes(payload)
    )


def _network_layer(linktype: int, frame: bytes) -> bytes | None:
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        offset = 12
        ethertype = struct.unpack_from("!H", frame, offset)[0]
        while ethertype in _VLAN_TAGS and len(frame) >= offset + 6:
            offset += 4
            ethertype = struct.unpack_from("!H", frame, offset)[0]
        return frame[offset + 2 :] if ethertype in (ETH_IPV4, ETH_IPV6) else None
    if linktype in _RAW_ALIASES:
        return frame
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        # The address family is in the capturing host's byte order (NULL) or network order
        # (LOOP); both are small numbers, so read whichever way gives one.
        if len(frame) < 4:
            return None
        little, big = struct.unpack_from("<I", frame)[0], struct.unpack_from(">I", frame)[0]
        family = min(little, big)
        return frame[4:] if family == 2 or family in _BSD_AF_INET6 else None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        proto = struct.unpack_from("!H", frame, 14)[0]
        return frame[16:] if proto in (ETH_IPV4, ETH_IPV6) else None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        proto = struct.unpack_from("!H", frame, 0)[0]
        return frame[20:] if proto in (ETH_IPV4, ETH_IPV6) else None
    return None
