"""A test-only NetFlow v1/v5/v6/v7 encoder, written from Cisco's export formats.

Every field is written with ``struct.pack_into`` at its documented byte offset (SPEC
"Decoding" and Cisco's "NetFlow Export Datagram Format"), deliberately *not* with the
package's struct formats or Layout objects: a round trip through the same description
would prove nothing about the offsets.

Header (v1: 16 bytes; v5/v6/v7: 24 bytes)::

    0 version(2)  2 count(2)  4 SysUptime(4)  8 unix_secs(4)  12 unix_nsecs(4)
    v5/v6: 16 flow_sequence(4)  20 engine_type(1)  21 engine_id(1)  22 sampling(2)
    v7:    16 flow_sequence(4)  20 reserved(4)

Record (v1/v5: 48 bytes; v6/v7: 52 bytes)::

    0 srcaddr  4 dstaddr  8 nexthop  12 input(2)  14 output(2)  16 dPkts(4)  20 dOctets(4)
    24 First(4)  28 Last(4)  32 srcport(2)  34 dstport(2)
    v1:  36 pad(2)  38 prot  39 tos  40 tcp_flags  41 pad(3)  44 reserved(4)
    v5:  36 pad  37 tcp_flags  38 prot  39 tos  40 src_as(2)  42 dst_as(2)
         44 src_mask  45 dst_mask  46 pad(2)
    v6:  as v5 up to 45, then 46 in_encaps  47 out_encaps  48 peer_nexthop(4)
    v7:  as v5 but 36 flags1 (v5's pad), 46 flags2(2), 48 router_sc(4)

Padding and reserved bytes are filled with ``fill`` so that tests can check that no field is
read from them. ``count`` can be set independently of the records and ``trailing`` appends
bytes after the last record, so malformed datagrams are as easy to make as good ones.
At the end, hypothesis strategies over all of it (``built_datagrams``, ``any_bytes``).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

VERSIONS = (1, 5, 6, 7)
HEADER_SIZE = {1: 16, 5: 24, 6: 24, 7: 24}
RECORD_SIZE = {1: 48, 5: 48, 6: 52, 7: 52}
# Cisco's documented maximum records per datagram (the decoder only warns above it).
MAX_COUNT = {1: 24, 5: 30, 6: 27, 7: 27}


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """Header field values. Fields the version lacks are simply not written."""

    sys_uptime: int = 0
    unix_secs: int = 0
    unix_nsecs: int = 0
    flow_sequence: int = 0
    engine_type: int = 0
    engine_id: int = 0
    sampling_interval: int = 0  # low 14 bits of the v5/v6 sampling word
    sampling_mode: int = 0  # top 2 bits
    # The whole 16-bit sampling word at byte 22, when a test wants to write it raw.
    sampling_word: int | None = None
    reserved: int = 0  # v7: the 4 bytes at 20-23


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """Record field values (``first``/``last`` are SysUptime milliseconds, as on the wire)."""

    src_addr: str = "0.0.0.0"
    dst_addr: str = "0.0.0.0"
    next_hop: str = "0.0.0.0"
    input_if: int = 0
    output_if: int = 0
    packets: int = 0
    bytes: int = 0
    first: int = 0
    last: int = 0
    src_port: int = 0
    dst_port: int = 0
    protocol: int = 0
    tcp_flags: int = 0
    tos: int = 0
    src_as: int = 0
    dst_as: int = 0
    src_mask: int = 0
    dst_mask: int = 0
    in_encaps: int = 0  # v6
    out_encaps: int = 0  # v6
    peer_next_hop: str = "0.0.0.0"  # v6
    flags1: int = 0  # v7
    flags2: int = 0  # v7
    router_sc: str = "0.0.0.0"  # v7


def _ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def encode_header(version: int, header: Header, count: int) -> bytes:
    """The export header of ``version`` with ``count`` written as given."""
    buf = bytearray(HEADER_SIZE[version])
    struct.pack_into("!H", buf, 0, version)
    struct.pack_into("!H", buf, 2, count)
    struct.pack_into("!I", buf, 4, header.sys_uptime)
    struct.pack_into("!I", buf, 8, header.unix_secs)
    struct.pack_into("!I", buf, 12, header.unix_nsecs)
    if version == 1:
        return bytes(buf)
    struct.pack_into("!I", buf, 16, header.flow_sequence)
    if version == 7:
        struct.pack_into("!I", buf, 20, header.reserved)
        return bytes(buf)
    struct.pack_into("!B", buf, 20, header.engine_type)
    struct.pack_into("!B", buf, 21, header.engine_id)
    word = header.sampling_word
    if word is None:
        word = (header.sampling_mode << 14) | header.sampling_interval
    struct.pack_into("!H", buf, 22, word)
    return bytes(buf)


def encode_record(version: int, record: Record, *, fill: int = 0) -> bytes:
    """One flow record of ``version``; padding and reserved bytes hold ``fill``."""
    r = record
    buf = bytearray([fill]) * RECORD_SIZE[version]
    buf[0:4] = _ip(r.src_addr)
    buf[4:8] = _ip(r.dst_addr)
    buf[8:12] = _ip(r.next_hop)
    struct.pack_into("!H", buf, 12, r.input_if)
    struct.pack_into("!H", buf, 14, r.output_if)
    struct.pack_into("!I", buf, 16, r.packets)
    struct.pack_into("!I", buf, 20, r.bytes)
    struct.pack_into("!I", buf, 24, r.first)
    struct.pack_into("!I", buf, 28, r.last)
    struct.pack_into("!H", buf, 32, r.src_port)
    struct.pack_into("!H", buf, 34, r.dst_port)
    if version == 1:
        struct.pack_into("!B", buf, 38, r.protocol)
        struct.pack_into("!B", buf, 39, r.tos)
        struct.pack_into("!B", buf, 40, r.tcp_flags)
        return bytes(buf)
    if version == 7:
        struct.pack_into("!B", buf, 36, r.flags1)
    struct.pack_into("!B", buf, 37, r.tcp_flags)
    struct.pack_into("!B", buf, 38, r.protocol)
    struct.pack_into("!B", buf, 39, r.tos)
    struct.pack_into("!H", buf, 40, r.src_as)
    struct.pack_into("!H", buf, 42, r.dst_as)
    struct.pack_into("!B", buf, 44, r.src_mask)
    struct.pack_into("!B", buf, 45, r.dst_mask)
    if version == 6:
        struct.pack_into("!B", buf, 46, r.in_encaps)
        struct.pack_into("!B", buf, 47, r.out_encaps)
        buf[48:52] = _ip(r.peer_next_hop)
    elif version == 7:
        struct.pack_into("!H", buf, 46, r.flags2)
        buf[48:52] = _ip(r.router_sc)
    return bytes(buf)


def datagram(
    version: int,
    records: Sequence[Record] = (),
    *,
    header: Header | None = None,
    count: int | None = None,
    trailing: bytes = b"",
    fill: int = 0,
) -> bytes:
    """A whole export datagram. ``count`` defaults to ``len(records)``."""
    if version not in VERSIONS:
        raise ValueError(f"no layout for version {version}")
    n = len(records) if count is None else count
    body = b"".join(encode_record(version, r, fill=fill) for r in records)
    return encode_header(version, header or Header(), n) + body + trailing


def export_ms(header: Header) -> int:
    """Export time in UNIX ms per SPEC: unix_secs*1000 + unix_nsecs // 10**6."""
    return header.unix_secs * 1000 + header.unix_nsecs // 1_000_000


def absolute_ms(header: Header, uptime: int) -> int:
    """SPEC's absolute time of a record's First/Last: export time minus (SysUptime - t) ms.

    The difference is taken modulo 2**32 (the uptime counter wraps every 49.7 days) and read
    as signed, so a First just before the wrap with SysUptime just after it is a few ms in the
    past, and a First slightly after SysUptime (clock skew) a few ms in the future.
    """
    delta = (header.sys_uptime - uptime) % 2**32
    if delta >= 2**31:
        delta -= 2**32
    return export_ms(header) - delta


# --- hypothesis strategies over the encoder's inputs ---------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4 = u32.map(lambda n: str(ipaddress.IPv4Address(n)))

records = st.builds(
    Record,
    src_addr=ipv4,
    dst_addr=ipv4,
    next_hop=ipv4,
    input_if=u16,
    output_if=u16,
    packets=u32,
    bytes=u32,
    first=u32,
    last=u32,
    src_port=u16,
    dst_port=u16,
    protocol=u8,
    tcp_flags=u8,
    tos=u8,
    src_as=u16,
    dst_as=u16,
    src_mask=u8,
    dst_mask=u8,
    in_encaps=u8,
    out_encaps=u8,
    peer_next_hop=ipv4,
    flags1=u8,
    flags2=u16,
    router_sc=ipv4,
)
# Uptimes near the 32-bit wrap are where collectors go wrong; mix them in with the rest.
near_wrap = st.one_of(u32, st.integers(0, 5000), st.integers(2**32 - 5000, 2**32 - 1))
headers = st.builds(
    Header,
    sys_uptime=near_wrap,
    unix_secs=u32,
    # Out-of-range nanoseconds (>= 10**9) come from broken exporters; include some.
    unix_nsecs=st.one_of(st.integers(0, 999_999_999), u32),
    flow_sequence=u32,
    engine_type=u8,
    engine_id=u8,
    sampling_interval=st.integers(0, 0x3FFF),
    sampling_mode=st.integers(0, 3),
    reserved=u32,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Built:
    """A datagram and what it was made of."""

    version: int
    header: Header
    records: tuple[Record, ...]
    trailing: bytes
    data: bytes


@st.composite
def built_datagrams(draw: st.DrawFn) -> Built:
    """Valid datagrams of every version: random fields, counts up to a few above Cisco's
    maximum, sometimes trailing bytes, padding filled with a random byte."""
    version = draw(st.sampled_from(VERSIONS))
    header = draw(headers)
    recs = tuple(draw(st.lists(records, min_size=1, max_size=MAX_COUNT[version] + 4)))
    trailing = draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=60)))
    fill = draw(u8)
    data = datagram(version, recs, header=header, trailing=trailing, fill=fill)
    return Built(version=version, header=header, records=recs, trailing=trailing, data=data)


# Byte strings that often get past the version check: a known (or nearly known) version,
# a small count, then anything.
plausible_bytes = st.builds(
    lambda version, count, rest: struct.pack("!HH", version, count) + rest,
    st.sampled_from([0, 1, 2, 5, 6, 7, 8, 9, 10, 0xFFFF]),
    st.integers(0, 6),
    st.binary(max_size=400),
)
any_bytes = st.one_of(st.binary(max_size=80), plausible_bytes)
