"""NetFlow v1/v5/v6/v7 decoding, checked against SPEC "Decoding" and Cisco's layouts.

The datagrams come from hand-written bytes and from ``netflow_builder``, a test-only encoder
that writes every field at its documented offset; nothing here reuses the package's struct
formats. Field values are distinct and non-zero so that a swapped or misplaced field shows.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.netflow_builder import (
    HEADER_SIZE,
    MAX_COUNT,
    RECORD_SIZE,
    VERSIONS,
    Built,
    Header,
    Record,
    absolute_ms,
    any_bytes,
    built_datagrams,
    datagram,
    export_ms,
)

from relay.errors import DecodeError, RelayError
from relay.flows import Packet, decode
from relay.render import Renderer

REASONS = {"empty", "short_header", "unknown_version", "zero_count", "short_records"}
# SPEC "The syslog line": the record's keys (after the seven header keys), then extras.
RECORD_FIELDS = (
    "first", "last", "src_addr", "dst_addr", "next_hop", "input_if", "output_if", "packets",
    "bytes", "src_port", "dst_port", "protocol", "tcp_flags", "tos", "src_as", "dst_as",
    "src_mask", "dst_mask",
)  # fmt: skip
EXTRAS = {
    1: (),
    5: (),
    6: ("in_encaps", "out_encaps", "peer_next_hop"),
    7: ("flags1", "flags2", "router_sc"),
}
HEADER_FIELDS = (
    "version", "count", "sys_uptime", "unix_secs", "unix_nsecs", "flow_sequence",
    "engine_type", "engine_id", "sampling_interval", "sampling_mode",
)  # fmt: skip
# Fields a version does not carry; SPEC: "0 when the version lacks the field".
ABSENT = {1: ("src_as", "dst_as", "src_mask", "dst_mask"), 5: (), 6: (), 7: ()}


def header_dict(packet: Packet) -> dict[str, int]:
    return {name: getattr(packet.header, name) for name in HEADER_FIELDS}


def record_dicts(packet: Packet) -> list[dict[str, Any]]:
    return [r._asdict() for r in packet.records]


def expected_record(version: int, header: Header, rec: Record) -> dict[str, Any]:
    """What SPEC says ``rec`` decodes to: absolute times, 0 for fields the version lacks."""
    out: dict[str, Any] = {}
    for name in (*RECORD_FIELDS, *EXTRAS[version]):
        value = getattr(rec, name)
        if name in ("first", "last"):
            value = absolute_ms(header, value)
        elif name in ABSENT[version]:
            value = 0
        out[name] = value
    return out


def expected_header(version: int, header: Header, count: int) -> dict[str, int]:
    out = {
        "version": version,
        "count": count,
        "sys_uptime": header.sys_uptime,
        "unix_secs": header.unix_secs,
        "unix_nsecs": header.unix_nsecs,
        "flow_sequence": 0,
        "engine_type": 0,
        "engine_id": 0,
        "sampling_interval": 0,
        "sampling_mode": 0,
    }
    if version != 1:
        out["flow_sequence"] = header.flow_sequence
    if version in (5, 6):
        word = header.sampling_word
        if word is None:
            word = (header.sampling_mode << 14) | header.sampling_interval
        out["engine_type"] = header.engine_type
        out["engine_id"] = header.engine_id
        out["sampling_interval"] = word & 0x3FFF
        out["sampling_mode"] = word >> 14
    return out


def reason_of(data: bytes, renderer: Renderer | None = None) -> str | None:
    """The DecodeError reason for ``data`` (None if it decodes), via decode or the hot path."""
    try:
        if renderer is None:
            decode(data)
        else:
            renderer.render_datagram(data, "10.0.0.1")
    except DecodeError as err:
        return err.reason
    return None


# --- hand-written bytes: byte i of each record holds i+1, so every value names its offset --

IDENTITY_HEADER = {
    1: "0001 0001 05060708 090a0b0c 0d0e0f10",
    5: "0005 0001 05060708 090a0b0c 0d0e0f10 11121314 15 16 d718",
    6: "0006 0001 05060708 090a0b0c 0d0e0f10 11121314 15 16 d718",
    # v7: bytes 20-23 are reserved; engine and sampling must read as 0.
    7: "0007 0001 05060708 090a0b0c 0d0e0f10 11121314 15161718",
}
UP, FIRST, LAST = 0x05060708, 0x191A1B1C, 0x1D1E1F20
EXPORT = 0x090A0B0C * 1000 + 0x0D0E0F10 // 10**6
# |SysUptime - First| < 2**31 here, so plain arithmetic is the SPEC's answer.
IDENTITY_COMMON = {
    "first": EXPORT - (UP - FIRST),
    "last": EXPORT - (UP - LAST),
    "src_addr": "1.2.3.4",
    "dst_addr": "5.6.7.8",
    "next_hop": "9.10.11.12",
    "input_if": 0x0D0E,
    "output_if": 0x0F10,
    "packets": 0x11121314,
    "bytes": 0x15161718,
    "src_port": 0x2122,
    "dst_port": 0x2324,
}
IDENTITY_V5 = IDENTITY_COMMON | {
    # byte 36 (0x25) is padding
    "tcp_flags": 0x26,
    "protocol": 0x27,
    "tos": 0x28,
    "src_as": 0x292A,
    "dst_as": 0x2B2C,
    "src_mask": 0x2D,
    "dst_mask": 0x2E,
    # bytes 46-47 are padding in v5
}
IDENTITY_RECORD: dict[int, dict[str, Any]] = {
    # v1: 36-37 pad, 38 prot, 39 tos, 40 flags, 41-47 pad/reserved; no AS or masks.
    1: IDENTITY_COMMON
    | {"protocol": 0x27, "tos": 0x28, "tcp_flags": 0x29}
    | {"src_as": 0, "dst_as": 0, "src_mask": 0, "dst_mask": 0},
    5: IDENTITY_V5,
    6: IDENTITY_V5 | {"in_encaps": 0x2F, "out_encaps": 0x30, "peer_next_hop": "49.50.51.52"},
    7: IDENTITY_V5 | {"flags1": 0x25, "flags2": 0x2F30, "router_sc": "49.50.51.52"},
}
IDENTITY_HEADER_FIELDS = {"count": 1, "sys_uptime": UP, "unix_secs": 0x090A0B0C}
IDENTITY_HEADER_FIELDS["unix_nsecs"] = 0x0D0E0F10
IDENTITY_ENGINE = {
    1: {"flow_sequence": 0, "engine_type": 0, "engine_id": 0},
    5: {"flow_sequence": 0x11121314, "engine_type": 0x15, "engine_id": 0x16},
    6: {"flow_sequence": 0x11121314, "engine_type": 0x15, "engine_id": 0x16},
    7: {"flow_sequence": 0x11121314, "engine_type": 0, "engine_id": 0},
}
# 0xd718: mode = top two bits (3), interval = low fourteen (0x1718).
IDENTITY_SAMPLING = {
    1: {"sampling_interval": 0, "sampling_mode": 0},
    5: {"sampling_interval": 0x1718, "sampling_mode": 3},
    6: {"sampling_interval": 0x1718, "sampling_mode": 3},
    7: {"sampling_interval": 0, "sampling_mode": 0},
}
PAD_OFFSETS = {1: (36, 37, *range(41, 48)), 5: (36, 46, 47), 6: (36,), 7: ()}


def identity_datagram(version: int) -> bytes:
    return bytes.fromhex(IDENTITY_HEADER[version]) + bytes(range(1, RECORD_SIZE[version] + 1))


@pytest.mark.parametrize("version", VERSIONS)
def test_hand_written_datagram_decodes_every_field_from_its_offset(version: int) -> None:
    packet = decode(identity_datagram(version))
    assert header_dict(packet) == (
        {"version": version}
        | IDENTITY_HEADER_FIELDS
        | IDENTITY_ENGINE[version]
        | IDENTITY_SAMPLING[version]
    )
    assert record_dicts(packet) == [IDENTITY_RECORD[version]]
    assert packet.warnings == ()
    assert packet.trailing_bytes == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_builder_writes_the_hand_written_layout(version: int) -> None:
    # Checks the test encoder itself, so that the tables below rest on the right offsets.
    rec = IDENTITY_RECORD[version]
    raw = {**rec, "first": FIRST, "last": LAST}
    built = datagram(
        version,
        [Record(**raw)],
        header=Header(
            sys_uptime=UP,
            unix_secs=0x090A0B0C,
            unix_nsecs=0x0D0E0F10,
            flow_sequence=0x11121314,
            engine_type=0x15,
            engine_id=0x16,
            sampling_word=0xD718,
            reserved=0x15161718,
        ),
    )
    want = bytearray(identity_datagram(version))
    for offset in PAD_OFFSETS[version]:
        want[HEADER_SIZE[version] + offset] = 0
    assert built == bytes(want)


# --- every field of every version, two records, padding filled with 0xEE -------------------

HDR = Header(
    sys_uptime=500_000_000,
    unix_secs=1_795_439_045,  # 2026-11-23T13:04:05Z
    unix_nsecs=123_456_789,
    flow_sequence=0x11223344,
    engine_type=0x21,
    engine_id=0x42,
    sampling_mode=2,
    sampling_interval=0x0ABC,
    reserved=0xDEADBEEF,
)
EXPORT_MS = 1_795_439_045_123
REC_A = Record(
    src_addr="10.1.2.3",
    dst_addr="172.16.5.6",
    next_hop="192.168.7.8",
    input_if=0x1234,
    output_if=0x2345,
    packets=0x01020304,
    bytes=0x0A0B0C0D,
    first=499_000_000,
    last=499_990_000,
    src_port=0x3456,
    dst_port=0x4567,
    protocol=17,
    tcp_flags=0x1B,
    tos=0xB8,
    src_as=0x5678,
    dst_as=0x6789,
    src_mask=22,
    dst_mask=25,
    in_encaps=0x0E,
    out_encaps=0x12,
    peer_next_hop="198.51.100.9",
    flags1=0xA1,
    flags2=0xBEEF,
    router_sc="203.0.113.10",
)
REC_B = Record(
    src_addr="10.200.3.4",
    dst_addr="100.64.9.10",
    next_hop="169.254.11.12",
    input_if=0xFEDC,
    output_if=0xEDCB,
    packets=0xF0E0D0C0,
    bytes=0xB0A09080,
    first=499_999_000,
    last=500_000_000,
    src_port=0xDCBA,
    dst_port=0xCBA9,
    protocol=6,
    tcp_flags=0x12,
    tos=0x04,
    src_as=0xBA98,
    dst_as=0xA987,
    src_mask=8,
    dst_mask=32,
    in_encaps=0x22,
    out_encaps=0x33,
    peer_next_hop="192.0.2.77",
    flags1=0x5C,
    flags2=0x1357,
    router_sc="198.18.0.1",
)
COMMON_A = {
    "first": EXPORT_MS - 1_000_000,
    "last": EXPORT_MS - 10_000,
    "src_addr": "10.1.2.3",
    "dst_addr": "172.16.5.6",
    "next_hop": "192.168.7.8",
    "input_if": 0x1234,
    "output_if": 0x2345,
    "packets": 0x01020304,
    "bytes": 0x0A0B0C0D,
    "src_port": 0x3456,
    "dst_port": 0x4567,
    "protocol": 17,
    "tcp_flags": 0x1B,
    "tos": 0xB8,
}
COMMON_B = {
    "first": EXPORT_MS - 1_000,
    "last": EXPORT_MS,
    "src_addr": "10.200.3.4",
    "dst_addr": "100.64.9.10",
    "next_hop": "169.254.11.12",
    "input_if": 0xFEDC,
    "output_if": 0xEDCB,
    "packets": 0xF0E0D0C0,
    "bytes": 0xB0A09080,
    "src_port": 0xDCBA,
    "dst_port": 0xCBA9,
    "protocol": 6,
    "tcp_flags": 0x12,
    "tos": 0x04,
}
AS_A = {"src_as": 0x5678, "dst_as": 0x6789, "src_mask": 22, "dst_mask": 25}
AS_B = {"src_as": 0xBA98, "dst_as": 0xA987, "src_mask": 8, "dst_mask": 32}
NO_AS = {"src_as": 0, "dst_as": 0, "src_mask": 0, "dst_mask": 0}
EXPECTED_RECORDS = {
    1: [COMMON_A | NO_AS, COMMON_B | NO_AS],
    5: [COMMON_A | AS_A, COMMON_B | AS_B],
    6: [
        COMMON_A | AS_A | {"in_encaps": 0x0E, "out_encaps": 0x12, "peer_next_hop": "198.51.100.9"},
        COMMON_B | AS_B | {"in_encaps": 0x22, "out_encaps": 0x33, "peer_next_hop": "192.0.2.77"},
    ],
    7: [
        COMMON_A | AS_A | {"flags1": 0xA1, "flags2": 0xBEEF, "router_sc": "203.0.113.10"},
        COMMON_B | AS_B | {"flags1": 0x5C, "flags2": 0x1357, "router_sc": "198.18.0.1"},
    ],
}
TIME_HEADER = {
    "count": 2,
    "sys_uptime": 500_000_000,
    "unix_secs": 1_795_439_045,
    "unix_nsecs": 123_456_789,
}
EXPECTED_HEADERS = {
    1: TIME_HEADER | {"flow_sequence": 0, "engine_type": 0, "engine_id": 0}
    | {"sampling_interval": 0, "sampling_mode": 0},
    5: TIME_HEADER | {"flow_sequence": 0x11223344, "engine_type": 0x21, "engine_id": 0x42}
    | {"sampling_interval": 0x0ABC, "sampling_mode": 2},
    6: TIME_HEADER | {"flow_sequence": 0x11223344, "engine_type": 0x21, "engine_id": 0x42}
    | {"sampling_interval": 0x0ABC, "sampling_mode": 2},
    # v7's bytes 20-23 (0xDEADBEEF here) are reserved: no engine, no sampling.
    7: TIME_HEADER | {"flow_sequence": 0x11223344, "engine_type": 0, "engine_id": 0}
    | {"sampling_interval": 0, "sampling_mode": 0},
}  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_every_field_of_every_version(version: int) -> None:
    packet = decode(datagram(version, [REC_A, REC_B], header=HDR, fill=0xEE))
    assert packet.version == version
    assert header_dict(packet) == {"version": version} | EXPECTED_HEADERS[version]
    assert record_dicts(packet) == EXPECTED_RECORDS[version]
    assert packet.warnings == ()
    assert packet.trailing_bytes == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_record_fields_are_spec_keys_in_spec_order(version: int) -> None:
    packet = decode(datagram(version, [REC_A], header=HDR))
    assert packet.records[0]._fields == (*RECORD_FIELDS, *EXTRAS[version])


@pytest.mark.parametrize("version", VERSIONS)
def test_padding_is_never_read(version: int) -> None:
    zero = decode(datagram(version, [REC_A, REC_B], header=HDR, fill=0x00))
    ones = decode(datagram(version, [REC_A, REC_B], header=HDR, fill=0xFF))
    assert zero == ones


@pytest.mark.parametrize(
    ("word", "mode", "interval"),
    [
        (0b01_00000000000101, 1, 5),
        (0x3FFF, 0, 0x3FFF),
        (0xC000, 3, 0),
        (0xFFFF, 3, 0x3FFF),
        (0x8000 | 1000, 2, 1000),
        (0x0000, 0, 0),
    ],
)
@pytest.mark.parametrize("version", [5, 6])
def test_sampling_word_splits_into_mode_and_interval(
    version: int, word: int, mode: int, interval: int
) -> None:
    packet = decode(datagram(version, [REC_A], header=Header(sampling_word=word)))
    assert (packet.header.sampling_mode, packet.header.sampling_interval) == (mode, interval)


@pytest.mark.parametrize("reserved", [0xFFFFFFFF, 0x01020304])
def test_v7_reserved_header_bytes_are_not_engine_fields(reserved: int) -> None:
    packet = decode(datagram(7, [REC_A], header=Header(flow_sequence=99, reserved=reserved)))
    h = packet.header
    assert (h.flow_sequence, h.engine_type, h.engine_id) == (99, 0, 0)
    assert (h.sampling_interval, h.sampling_mode) == (0, 0)


# --- absolute times ---------------------------------------------------------------------

WRAP = 2**32
TIME_CASES = [
    # (id, SysUptime, First, Last, First - export ms, Last - export ms)
    ("ordinary", 10_000_000, 9_000_000, 9_990_000, -1_000_000, -10_000),
    # SysUptime just wrapped (5 ms past 2**32), First just before the wrap, Last after it.
    ("uptime_wrap", 5, WRAP - 10, 3, -15, -2),
    ("wrap_both_before", 2, WRAP - 1000, WRAP - 1, -1002, -3),
    ("first_is_uptime_max", 1, WRAP - 1, 0, -2, -1),
    ("first_equals_uptime", 123_456, 123_456, 123_456, 0, 0),
    # Flow cache clock a little ahead of the export path: a few ms *after* export time.
    ("clock_skew", 1000, 1003, 1010, 3, 10),
    ("clock_skew_across_wrap", WRAP - 1, 0, 4, 1, 5),
    ("uptime_zero", 0, 0, 0, 0, 0),
    ("uptime_zero_first_before_wrap", 0, WRAP - 250, 0, -250, 0),
    ("uptime_max", WRAP - 1, WRAP - 1 - 3_600_000, WRAP - 1, -3_600_000, 0),
    ("twenty_days", 3_000_000_000, 3_000_000_000 - 1_728_000_000, 3_000_000_000, -1_728_000_000, 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("uptime", "first", "last", "d_first", "d_last"),
    [case[1:] for case in TIME_CASES],
    ids=[case[0] for case in TIME_CASES],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_absolute_times(
    version: int, uptime: int, first: int, last: int, d_first: int, d_last: int
) -> None:
    header = Header(sys_uptime=uptime, unix_secs=1_795_439_045, unix_nsecs=987_654_321)
    export = 1_795_439_045_987
    packet = decode(datagram(version, [Record(first=first, last=last)], header=header))
    rec = packet.records[0]
    assert (rec.first - export, rec.last - export) == (d_first, d_last)


@pytest.mark.parametrize(
    ("secs", "nsecs", "export"),
    [
        (1_795_439_045, 999_999_999, 1_795_439_045_999),  # truncated, not rounded up
        (1_795_439_045, 0, 1_795_439_045_000),
        (1_795_439_045, 1_000_000, 1_795_439_045_001),
        (0, 0, 0),
    ],
)
def test_export_time_is_secs_plus_nsecs_in_ms(secs: int, nsecs: int, export: int) -> None:
    header = Header(sys_uptime=7000, unix_secs=secs, unix_nsecs=nsecs)
    rec = decode(datagram(5, [Record(first=7000, last=7000)], header=header)).records[0]
    assert (rec.first, rec.last) == (export, export)


# --- errors ------------------------------------------------------------------------------


def _hdr(version: int, count: int) -> bytes:
    return datagram(version, [], header=HDR, count=count)


def _with(version: int, count: int, n_records: int, cut: int = 0) -> bytes:
    data = datagram(version, [REC_A] * n_records, header=HDR, count=count)
    return data[: len(data) - cut]


ERROR_CASES = [
    ("empty", b"", "empty"),
    ("one_byte_zero", b"\x00", "short_header"),
    ("one_byte_five", b"\x05", "short_header"),
    *[(f"v{v}_version_only", struct.pack("!H", v), "short_header") for v in VERSIONS],
    *[(f"v{v}_header_minus_1", _hdr(v, 1)[:-1], "short_header") for v in VERSIONS],
    ("v5_sized_like_v1", _hdr(5, 1)[:16], "short_header"),
    *[
        (f"unknown_{v}", struct.pack("!H", v) + _hdr(5, 1)[2:] + bytes(48), "unknown_version")
        for v in (0, 2, 3, 4, 8, 9, 10, 0x0500, 0xFFFF)
    ],
    ("bitkeks_invalid", b"\xff" * 21, "unknown_version"),
    *[(f"v{v}_zero_count", _hdr(v, 0), "zero_count") for v in VERSIONS],
    *[(f"v{v}_zero_count_with_record", _with(v, 0, 1), "zero_count") for v in VERSIONS],
    *[(f"v{v}_count1_no_record", _hdr(v, 1), "short_records") for v in VERSIONS],
    *[(f"v{v}_count2_one_record", _with(v, 2, 1), "short_records") for v in VERSIONS],
    *[(f"v{v}_last_record_cut", _with(v, 2, 2, cut=1), "short_records") for v in VERSIONS],
    *[(f"v{v}_count_65535", _with(v, 0xFFFF, 3), "short_records") for v in VERSIONS],
    *[(f"v{v}_over_max_short", _with(v, 40, 39), "short_records") for v in VERSIONS],
    # logstash netflow5_test_invalid01: count 55582 in a datagram of 30 records.
    ("v5_count_55582", _with(5, 55582, 30), "short_records"),
]


@pytest.mark.parametrize(
    ("data", "reason"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_decode_error_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(data)
    err = info.value
    assert err.reason == reason
    assert isinstance(err, RelayError)
    assert str(err)
    with pytest.raises(DecodeError) as hot:
        Renderer().render_datagram(data, "10.0.0.1")
    assert hot.value.reason == reason


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("reason", ["zero_count", "short_records"])
def test_decode_error_names_the_version(version: int, reason: str) -> None:
    data = _hdr(version, 0) if reason == "zero_count" else _hdr(version, 3)
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert info.value.reason == reason
    assert info.value.version == version


# --- counts above Cisco's maximum and trailing bytes ------------------------------------


def numbered(n: int) -> list[Record]:
    return [Record(packets=i + 1, src_port=i + 1, src_addr=f"10.0.{i}.1") for i in range(n)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("extra", [0, 1, 6])
def test_count_above_documented_maximum_is_decoded_with_warning(version: int, extra: int) -> None:
    n = MAX_COUNT[version] + extra
    packet = decode(datagram(version, numbered(n), header=HDR))
    assert packet.header.count == n
    assert [r.packets for r in packet.records] == list(range(1, n + 1))
    assert [r.src_addr for r in packet.records] == [f"10.0.{i}.1" for i in range(n)]
    assert packet.warnings == (("over_max_count",) if extra else ())
    assert packet.trailing_bytes == 0


def test_softflowd_thirty_record_v1() -> None:
    packet = decode(datagram(1, numbered(30), header=HDR))
    assert len(packet.records) == 30
    assert packet.warnings == ("over_max_count",)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("n_trailing", [1, 3, 47, 48, 52, 1000])
def test_trailing_bytes_are_tolerated_and_counted(version: int, n_trailing: int) -> None:
    # Even a whole record's worth of trailing bytes is not a record: the count decides.
    data = datagram(version, [REC_A, REC_B], header=HDR, trailing=b"\xab" * n_trailing)
    packet = decode(data)
    assert record_dicts(packet) == EXPECTED_RECORDS[version]
    assert packet.warnings == ("trailing_bytes",)
    assert packet.trailing_bytes == n_trailing


@pytest.mark.parametrize("version", VERSIONS)
def test_over_max_and_trailing_both_flagged(version: int) -> None:
    n = MAX_COUNT[version] + 1
    packet = decode(datagram(version, numbered(n), header=HDR, trailing=b"\x00\x01"))
    assert len(packet.records) == n
    assert sorted(packet.warnings) == ["over_max_count", "trailing_bytes"]
    assert packet.trailing_bytes == 2


# --- truncation: every prefix of valid datagrams ----------------------------------------


def expected_reason(version: int, count: int, length: int) -> str | None:
    """SPEC's verdict on the first ``length`` bytes of a ``count``-record datagram."""
    if length == 0:
        return "empty"
    if length < HEADER_SIZE[version]:
        return "short_header"
    if length < HEADER_SIZE[version] + count * RECORD_SIZE[version]:
        return "short_records"
    return None


@pytest.mark.parametrize("version", VERSIONS)
def test_every_truncation(version: int) -> None:
    renderer = Renderer()
    records = [REC_A, REC_B, REC_A]
    whole = datagram(version, records, header=HDR, trailing=b"\x01\x02\x03\x04\x05")
    needed = HEADER_SIZE[version] + 3 * RECORD_SIZE[version]
    for length in range(len(whole) + 1):
        prefix = whole[:length]
        want = expected_reason(version, 3, length)
        assert reason_of(prefix) == want, length
        assert reason_of(prefix, renderer) == want, length
        if want is None:
            packet = decode(prefix)
            assert len(packet.records) == 3
            assert packet.trailing_bytes == length - needed


# --- hypothesis -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(built=built_datagrams())
def test_round_trip(built: Built) -> None:
    version, header, records, trailing = built.version, built.header, built.records, built.trailing
    packet = decode(built.data)
    assert header_dict(packet) == expected_header(version, header, len(records))
    assert record_dicts(packet) == [expected_record(version, header, r) for r in records]
    want = set()
    if len(records) > MAX_COUNT[version]:
        want.add("over_max_count")
    if trailing:
        want.add("trailing_bytes")
    assert set(packet.warnings) == want
    assert len(packet.warnings) == len(want)
    assert packet.trailing_bytes == len(trailing)


def test_time_oracle_follows_spec_words() -> None:
    # The oracle itself, on the SPEC's words: export time minus (SysUptime - First).
    h = Header(sys_uptime=10, unix_secs=100, unix_nsecs=5_000_000)
    assert export_ms(h) == 100_005
    assert absolute_ms(h, 4) == 99_999
    assert absolute_ms(h, 2**32 - 1) == 100_005 - 11
    assert absolute_ms(h, 12) == 100_007


@settings(max_examples=400, deadline=None)
@given(data=any_bytes)
def test_any_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    reason = reason_of(data)
    if reason is not None:
        assert reason in REASONS
        return
    packet = decode(data)
    version = packet.version
    assert version in VERSIONS
    needed = HEADER_SIZE[version] + packet.header.count * RECORD_SIZE[version]
    assert packet.header.count == len(packet.records) >= 1
    assert packet.trailing_bytes == len(data) - needed >= 0


_RENDERER = Renderer()


@settings(max_examples=300, deadline=None)
@given(data=any_bytes)
def test_any_bytes_through_render_datagram(data: bytes) -> None:
    reason = reason_of(data, _RENDERER)
    if reason is not None:
        assert reason in REASONS
        return
    rendered = _RENDERER.render_datagram(data, "192.0.2.1")
    assert len(rendered.lines) == rendered.header.count


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(built=built_datagrams(), data=st.data())
def test_random_truncation_of_built_datagrams(built: Built, data: st.DataObject) -> None:
    length = data.draw(st.integers(0, len(built.data)))
    want = expected_reason(built.version, len(built.records), length)
    assert reason_of(built.data[:length]) == want
