"""Information element values by IANA abstract data type (RFC 7011 §6), pure.

Each (element, length) of a template gets one :class:`~relay.flows.layout.Kind` here, once,
from the element's abstract data type in the registry and the length the exporter chose;
every value of that field is then decoded by its kind. The length decides as much as the
type: RFC 7011 §6.2 lets an exporter send an unsigned64 in fewer bytes (reduced-size
encoding), and exporters send types in lengths they do not fit (goflow2's test vector has a
2-byte samplerId, an unsigned8). An integer is read at whatever length of 1-8 bytes it comes
in; a value whose length its type cannot have (a 5-byte address, a 3-byte float) is kept as
its bytes, in hex, rather than guessed at.

Values: integers and floats as numbers; booleans as True/False (1 and 2 on the wire, RFC 7011
§6.1.5; anything else hex); addresses as text (IPv6 in RFC 5952 form); MACs as
``aa:bb:cc:dd:ee:ff``; strings as text (invalid UTF-8 replaced, trailing NUL padding of a
fixed-length field dropped); every dateTime* as UNIX milliseconds (hex when it falls outside
the years 1970-9999 a line can write); octetArray, lists and unknown elements as lowercase
hex.
"""

from __future__ import annotations

import math
import socket
import struct
from collections.abc import Callable

from relay.flows.layout import Kind
from relay.flows.names import IANA_MAX
from relay.flows.registry import ELEMENTS

Value = int | float | bool | str

# NTP time (RFC 7011 §6.1.9/10) counts seconds from 1900-01-01; UNIX from 1970-01-01.
NTP_UNIX_OFFSET = 2_208_988_800
# The times a line can write (ISO-8601 years 1970-9999); another is kept as its bytes.
MAX_TIME_MS = 253_402_300_799_999
# dateTimeMicroseconds: "the lowest 11 bits of the fraction field ... SHOULD be ignored".
_MICRO_FRACTION_MASK = 0xFFFFF800

_INTEGER_TYPES = frozenset({"unsigned8", "unsigned16", "unsigned32", "unsigned64", "unsigned256"})
_SIGNED_TYPES = frozenset({"signed8", "signed16", "signed32", "signed64"})
_FLOAT_TYPES = frozenset({"float32", "float64"})
# Types whose kind holds at one length only; any other length is kept as octets.
_FIXED: dict[str, tuple[Kind, int]] = {
    "boolean": (Kind.BOOLEAN, 1),
    "macAddress": (Kind.MAC, 6),
    "ipv4Address": (Kind.IPV4, 4),
    "ipv6Address": (Kind.IPV6, 16),
    "dateTimeSeconds": (Kind.DATETIME_S, 4),
    "dateTimeMilliseconds": (Kind.DATETIME_MS, 8),
    "dateTimeMicroseconds": (Kind.DATETIME_US, 8),
    "dateTimeNanoseconds": (Kind.DATETIME_NS, 8),
}


def datatype(element: int, enterprise: int = 0) -> str:
    """The element's IANA abstract data type; ``octetArray`` for what IANA does not define
    (enterprise elements, v9 vendor types above 32767)."""
    if enterprise or element > IANA_MAX:
        return "octetArray"
    entry = ELEMENTS.get(element)
    return entry[1] if entry else "octetArray"


def kind_for(type_name: str, length: int) -> Kind:
    """How a value of this abstract data type, in this many bytes, is decoded."""
    if type_name in _INTEGER_TYPES:
        return Kind.UNSIGNED if 1 <= length <= 8 else Kind.OCTETS
    if type_name in _SIGNED_TYPES:
        return Kind.SIGNED if 1 <= length <= 8 else Kind.OCTETS
    if type_name in _FLOAT_TYPES:
        return Kind.FLOAT if length in (4, 8) else Kind.OCTETS
    if type_name == "string":
        return Kind.STRING
    fixed = _FIXED.get(type_name)
    if fixed is not None and fixed[1] == length:
        return fixed[0]
    return Kind.OCTETS


def element_kind(element: int, length: int, enterprise: int = 0) -> Kind:
    return kind_for(datatype(element, enterprise), length)


def ntp_ms(value: int, kind: Kind = Kind.DATETIME_NS) -> int:
    """A 64-bit NTP timestamp (seconds since 1900 . 2**-32 fractions) as UNIX milliseconds."""
    seconds, fraction = value >> 32, value & 0xFFFFFFFF
    if kind is Kind.DATETIME_US:
        fraction &= _MICRO_FRACTION_MASK
    return (seconds - NTP_UNIX_OFFSET) * 1000 + ((fraction * 1000) >> 32)


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def ipv6_text(raw: bytes) -> str:
    # inet_ntop writes RFC 5952 form: lowercase, the longest run of two or more zero groups
    # (the first of equal runs) as "::", and an IPv4-mapped address in mixed notation.
    return socket.inet_ntop(socket.AF_INET6, raw)


def string_text(raw: bytes) -> str:
    return raw.rstrip(b"\x00").decode("utf-8", "replace")


def decode_value(kind: Kind, raw: bytes) -> Value:
    """One value from its bytes; ``raw`` has a length ``kind`` allows (see :func:`kind_for`)."""
    if kind is Kind.UNSIGNED or kind is Kind.UPTIME_MS:
        return int.from_bytes(raw, "big")
    if kind is Kind.SIGNED:
        return int.from_bytes(raw, "big", signed=True)
    if kind is Kind.STRING:
        return string_text(raw)
    if kind is Kind.IPV4:
        return socket.inet_ntoa(raw)
    if kind is Kind.IPV6:
        return ipv6_text(raw)
    if kind is Kind.MAC:
        return mac_text(raw)
    if kind is Kind.FLOAT:
        number: float = struct.unpack("!f" if len(raw) == 4 else "!d", raw)[0]
        # NaN and the infinities are no JSON numbers: their bytes are kept instead.
        return number if math.isfinite(number) else raw.hex()
    if kind is Kind.BOOLEAN:
        return {1: True, 2: False}.get(raw[0], raw.hex()) if len(raw) == 1 else raw.hex()
    if kind in _TIMES:
        ms = _TIMES[kind](int.from_bytes(raw, "big"))
        return ms if 0 <= ms <= MAX_TIME_MS else raw.hex()
    return raw.hex()


_TIMES: dict[Kind, Callable[[int], int]] = {
    Kind.DATETIME_S: lambda n: n * 1000,
    Kind.DATETIME_MS: lambda n: n,
    Kind.DATETIME_US: lambda n: ntp_ms(n, Kind.DATETIME_US),
    Kind.DATETIME_NS: lambda n: ntp_ms(n, Kind.DATETIME_NS),
}


def decode_element(element: int, raw: bytes, enterprise: int = 0) -> Value:
    """One element's value from its bytes, its kind found from the registry."""
    return decode_value(element_kind(element, len(raw), enterprise), raw)
