"""The test-only capture writer, checked against RFC 1071's example and an independent reader
(tcpdump, which verifies IP, UDP, TCP and ICMPv6 checksums with -vv)."""

from __future__ import annotations

import ipaddress
import re
import struct
import subprocess
from pathlib import Path

import pytest

from support.exporters import find_binary
from support.pcapgen import (
    ACK,
    FIN,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    LINKTYPES,
    PSH,
    SYN,
    Captured,
    Datagram,
    capture_datagrams,
    icmp,
    internet_checksum,
    link_frame,
    link_header_len,
    pcap_bytes,
    pcapng_bytes,
    tcp,
    udp,
)

TCPDUMP = find_binary("tcpdump")
needs_tcpdump = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed")

BASE_NS = 1_795_000_000_123_456_789  # 2026-11-17, with a nanosecond fraction

PACKETS = {
    "udp4": udp("10.0.0.1", "10.0.0.2", 1234, 2055, b"netflow?"),
    "udp4-odd-length": udp("10.0.0.1", "10.0.0.2", 1, 2, b"odd"),
    "tcp4": tcp("10.0.0.1", "10.0.0.2", 40000, 80, SYN | ACK, b"hello", seq=7, ack=9),
    "icmp4": icmp("10.0.0.1", "10.0.0.2", 8, 0, b"ping", ident=3, seq=4),
    "udp6": udp("2001:db8::1", "2001:db8::2", 5, 6, b"six"),
    "tcp6": tcp("2001:db8::1", "2001:db8::2", 7, 8, FIN | PSH | ACK, b"x"),
    "icmp6": icmp("2001:db8::1", "2001:db8::2", 128, 0, b"pp", ident=1, seq=2),
}


def test_internet_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement).
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    # A checksum over data that includes its own correct checksum verifies to zero.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7") + b"\x22\x0d") == 0


@pytest.mark.parametrize("name", sorted(PACKETS))
def test_checksums_verify(name: str) -> None:
    packet = PACKETS[name]
    if packet[0] >> 4 == 4:
        header, payload = packet[:20], packet[20:]
        assert internet_checksum(header) == 0
        assert struct.unpack_from("!H", header, 2)[0] == len(packet)
        src, dst, proto = header[12:16], header[16:20], header[9]
        if proto == 1:  # ICMPv4: no pseudo-header
            assert internet_checksum(payload) == 0
            return
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(payload))
    else:
        header, payload = packet[:40], packet[40:]
        assert struct.unpack_from("!H", header, 4)[0] == len(payload)
        src, dst, proto = header[8:24], header[24:40], header[6]
        pseudo = src + dst + struct.pack("!I3xB", len(payload), proto)
    assert internet_checksum(pseudo + payload) == 0


def test_link_frames_carry_the_packet_after_their_header() -> None:
    packet = PACKETS["udp6"]
    for linktype in LINKTYPES:
        frame = link_frame(packet, linktype)
        assert frame[link_header_len(linktype) :] == packet
    assert link_frame(packet, LINKTYPE_ETHERNET)[12:14] == b"\x86\xdd"
    assert link_frame(PACKETS["udp4"], LINKTYPE_LINUX_SLL)[14:16] == b"\x08\x00"
    with pytest.raises(ValueError, match="not an IP packet"):
        link_frame(b"\x00" * 20, LINKTYPE_RAW)
    with pytest.raises(ValueError, match="mixed address families"):
        udp("10.0.0.1", "2001:db8::1", 1, 2)


def tcpdump(path: Path) -> list[str]:
    assert TCPDUMP is not None
    result = subprocess.run(
        [TCPDUMP, "-nn", "-vv", "-tt", "--nano", "-r", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Packets start at column 0 with their timestamp; continuation lines are indented.
    return re.split(r"\n(?=\d)", result.stdout.strip())


@needs_tcpdump
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
@pytest.mark.parametrize("linktype", LINKTYPES)
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_tcpdump_reads_what_was_written(
    tmp_path: Path, fmt: str, linktype: int, nanosecond: bool, big_endian: bool
) -> None:
    names = sorted(PACKETS)
    frames = [
        Captured(timestamp_ns=BASE_NS + i * 1_000_001, data=link_frame(PACKETS[n], linktype))
        for i, n in enumerate(names)
    ]
    writer = pcapng_bytes if fmt == "pcapng" else pcap_bytes
    path = tmp_path / f"t.{fmt}"
    path.write_bytes(
        writer(frames, linktype=linktype, nanosecond=nanosecond, big_endian=big_endian)
    )
    packets = tcpdump(path)
    assert len(packets) == len(names), packets
    for name, frame, text in zip(names, frames, packets, strict=True):
        seconds, fraction = divmod(frame.timestamp_ns, 1_000_000_000)
        if not nanosecond:
            fraction -= fraction % 1000
        assert text.startswith(f"{seconds}.{fraction:09d} "), text
        assert not re.search(r"bad|wrong|incorrect", text), text
        if name.startswith("udp"):
            assert "udp sum ok" in text, text
        elif name.startswith("tcp"):
            assert re.search(r"cksum 0x[0-9a-f]+ \(correct\)", text), text
        elif name == "icmp6":
            assert "icmp6 sum ok" in text, text


@needs_tcpdump
def test_tcpdump_notices_a_broken_checksum(tmp_path: Path) -> None:
    """The check above can fail: one flipped payload byte is reported."""
    packet = bytearray(PACKETS["udp4"])
    packet[-1] ^= 0xFF
    path = tmp_path / "bad.pcap"
    path.write_bytes(pcap_bytes([Captured(timestamp_ns=BASE_NS, data=link_frame(bytes(packet)))]))
    (text,) = tcpdump(path)
    assert "bad udp cksum" in text, text


@needs_tcpdump
@pytest.mark.parametrize("linktype", LINKTYPES)
def test_captured_datagrams_keep_addresses_ports_and_payloads(
    tmp_path: Path, linktype: int
) -> None:
    grams = [
        Datagram(timestamp_ns=BASE_NS, src=("192.0.2.7", 40001), dst=("192.0.2.9", 2055),
                 payload=b"\x00\x05" + bytes(70)),
        Datagram(timestamp_ns=BASE_NS + 5, src=("2001:db8::7", 40002),
                 dst=("2001:db8::9", 2055), payload=b"\x00\x07" + bytes(100)),
    ]  # fmt: skip
    path = tmp_path / "grams.pcapng"
    path.write_bytes(pcapng_bytes(capture_datagrams(grams, linktype=linktype), linktype=linktype))
    packets = tcpdump(path)
    assert len(packets) == 2
    for gram, text in zip(grams, packets, strict=True):
        src = ipaddress.ip_address(gram.src[0])
        dst = ipaddress.ip_address(gram.dst[0])
        assert f"{src}.{gram.src[1]} > {dst}.{gram.dst[1]}: [udp sum ok]" in text, text
        assert f"length {len(gram.payload)}" in text, text


def test_snap_length_cuts_frames_and_keeps_their_wire_length() -> None:
    frame = link_frame(PACKETS["udp4"])
    data = pcap_bytes([Captured(timestamp_ns=BASE_NS, data=frame)], snaplen=20)
    caplen, wirelen = struct.unpack_from("<II", data, 24 + 8)
    assert (caplen, wirelen) == (20, len(frame))
    assert data[24 + 16 :] == frame[:20]
