"""Element values by IANA abstract data type (RFC 7011 §6), reduced-size encoding included."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.flows.elements import (
    NTP_UNIX_OFFSET,
    datatype,
    decode_element,
    decode_value,
    kind_for,
    ntp_ms,
)
from relay.flows.layout import Kind

NTP_2015 = (1444384067 + NTP_UNIX_OFFSET) << 32


@pytest.mark.parametrize(
    ("element", "raw", "value"),
    [
        (1, bytes.fromhex("0000000000000400"), 1024),  # unsigned64 in 8 bytes
        (1, bytes.fromhex("0400"), 1024),  # reduced to 2
        (1, bytes.fromhex("010000"), 65536),  # reduced to 3: no struct size
        (1, bytes.fromhex("00000001000000"), 1 << 24),  # reduced to 7
        (4, b"\x06", 6),
        (48, b"\x00\x01", 1),  # samplerId (unsigned8) sent in 2 bytes, as goflow2's vector
        (434, b"\xff\xff\xff\xfe", -2),  # signed32
        (434, b"\xfe", -2),  # signed32 reduced to 1
        (311, struct.pack("!d", 0.25), 0.25),  # float64
        (311, struct.pack("!f", 0.5), 0.5),  # float64 reduced to float32
        (311, struct.pack("!d", float("nan")), "7ff8000000000000"),  # not a JSON number
        (276, b"\x01", True),
        (276, b"\x02", False),
        (276, b"\x00", "00"),  # neither 1 nor 2
        (276, b"\x03", "03"),
        (56, bytes.fromhex("0a1b2c3d4e5f"), "0a:1b:2c:3d:4e:5f"),
        (8, bytes([192, 0, 2, 1]), "192.0.2.1"),
        (27, ipaddress.IPv6Address("2001:db8::1").packed, "2001:db8::1"),
        (27, ipaddress.IPv6Address("2001:db8:0:1:1:1:1:1").packed, "2001:db8:0:1:1:1:1:1"),
        (27, ipaddress.IPv6Address("2001:0:0:1::1").packed, "2001:0:0:1::1"),
        (27, ipaddress.IPv6Address("::ffff:192.0.2.1").packed, "::ffff:192.0.2.1"),
        (27, bytes(16), "::"),
        (82, b"Gi0/0/1", "Gi0/0/1"),
        (82, b"eth0\x00\x00\x00\x00", "eth0"),  # NUL padding of a fixed-length field
        (82, b"caf\xc3\xa9", "café"),
        (82, b"bad\xff", "bad\ufffd"),  # invalid UTF-8 replaced
        (82, b"", ""),
        (95, bytes.fromhex("0d000050"), "0d000050"),  # octetArray
        (291, bytes.fromhex("ff0001"), "ff0001"),  # basicList: hex
        (150, (1444384067).to_bytes(4, "big"), 1444384067000),  # dateTimeSeconds
        (152, (1444384067569).to_bytes(8, "big"), 1444384067569),  # dateTimeMilliseconds
        (156, (NTP_2015 | (1 << 31)).to_bytes(8, "big"), 1444384067500),  # NTP, half a second
        (154, (NTP_2015 | (1 << 31)).to_bytes(8, "big"), 1444384067500),
        (152, bytes([0xFF] * 8), "ffffffffffffffff"),  # a time no line can write
        (156, bytes(8), "0000000000000000"),  # NTP 0 is 1900: before 1970
        (8, bytes(5), "0000000000"),  # an address of the wrong length stays bytes
        (152, bytes(4), "00000000"),
        (40005, b"\x02", "02"),  # a v9 vendor type: not IANA's
        (65, b"\x02", "02"),  # a number IANA names nothing
    ],
)
def test_iana_elements_decode_by_their_abstract_data_type(
    element: int, raw: bytes, value: object
) -> None:
    decoded = decode_element(element, raw)
    assert decoded == value
    assert type(decoded) is type(value)


def test_an_enterprise_element_is_hex_whatever_its_number() -> None:
    assert datatype(8, enterprise=9) == "octetArray"
    assert decode_element(8, bytes([192, 0, 2, 1]), enterprise=9) == "c0000201"


@pytest.mark.parametrize(
    ("type_name", "length", "kind"),
    [
        ("unsigned64", 8, Kind.UNSIGNED),
        ("unsigned64", 3, Kind.UNSIGNED),
        ("unsigned8", 2, Kind.UNSIGNED),
        ("unsigned64", 9, Kind.OCTETS),
        ("unsigned256", 32, Kind.OCTETS),
        ("unsigned16", 0, Kind.OCTETS),
        ("signed32", 4, Kind.SIGNED),
        ("float64", 4, Kind.FLOAT),
        ("float32", 2, Kind.OCTETS),
        ("boolean", 1, Kind.BOOLEAN),
        ("macAddress", 6, Kind.MAC),
        ("ipv6Address", 16, Kind.IPV6),
        ("ipv6Address", 4, Kind.OCTETS),
        ("string", 0, Kind.STRING),
        ("dateTimeMicroseconds", 8, Kind.DATETIME_US),
        ("dateTimeNanoseconds", 4, Kind.OCTETS),
        ("subTemplateList", 12, Kind.OCTETS),
        ("someFutureType", 4, Kind.OCTETS),
    ],
)
def test_the_length_decides_the_kind_as_much_as_the_type(
    type_name: str, length: int, kind: Kind
) -> None:
    assert kind_for(type_name, length) is kind


def test_microsecond_times_ignore_the_lowest_eleven_fraction_bits() -> None:
    # RFC 7011 §6.1.9: those bits carry nothing at microsecond precision.
    assert ntp_ms(NTP_2015 | 0x7FF, Kind.DATETIME_US) == 1444384067000
    assert ntp_ms(NTP_2015 | 0xFFFFFFFF, Kind.DATETIME_NS) == 1444384067999


@given(st.integers(0, (1 << 64) - 1), st.integers(1, 8))
def test_reduced_size_unsigned_is_the_number_in_its_low_bytes(number: int, size: int) -> None:
    number &= (1 << (8 * size)) - 1
    assert decode_value(Kind.UNSIGNED, number.to_bytes(size, "big")) == number


@given(st.integers(1, 8), st.data())
def test_reduced_size_signed_keeps_its_sign(size: int, data: st.DataObject) -> None:
    number = data.draw(st.integers(-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1))
    assert decode_value(Kind.SIGNED, number.to_bytes(size, "big", signed=True)) == number


@given(st.binary(min_size=16, max_size=16))
def test_ipv6_text_is_the_address_it_came_from(raw: bytes) -> None:
    assert ipaddress.IPv6Address(decode_value(Kind.IPV6, raw)).packed == raw


@given(st.sampled_from(list(Kind)), st.binary(max_size=20))
def test_any_bytes_of_a_length_the_kind_allows_decode_to_a_value(kind: Kind, raw: bytes) -> None:
    fits = {
        Kind.IPV4: 4, Kind.UPTIME_MS: 4, Kind.BOOLEAN: 1, Kind.MAC: 6, Kind.IPV6: 16,
        Kind.DATETIME_S: 4, Kind.DATETIME_MS: 8, Kind.DATETIME_US: 8, Kind.DATETIME_NS: 8,
    }  # fmt: skip
    if kind in fits:
        raw = (raw + bytes(20))[: fits[kind]]
    elif kind is Kind.FLOAT:
        raw = (raw + bytes(8))[:8]
    elif kind in (Kind.UNSIGNED, Kind.SIGNED):
        raw = (raw + b"\x00")[:8]
    assert isinstance(decode_value(kind, raw), int | float | bool | str)
