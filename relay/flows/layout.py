"""What a flow record looks like on the wire: a :class:`Layout` of :class:`Field` s.

A layout comes from one of two places. A version module (v1/v5/v6/v7) writes its record down
once, field by field with byte offsets; a NetFlow v9 or IPFIX template (the next issue) will
list (element, length) pairs that the exporter chose at run time. Both end up as the same
object, so the decoder and the renderer do not care where a layout came from: the renderer
names the syslog keys from each field's element identity, and compiles its fast path once
per layout, found again by the layout's :attr:`Layout.fingerprint` (two exporters sending
the same template share one compiled renderer).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field


class Kind(enum.Enum):
    """What a field's bytes mean, which decides how they are decoded and written.

    v1/v5/v6/v7 need only the first three. v9/IPFIX templates bring the others, one per
    IANA abstract data type (RFC 7011 §6.1) as :mod:`relay.flows.elements` maps them;
    whatever a type's length does not fit is an octet array, written as hex.
    """

    UNSIGNED = "unsigned"  # big-endian unsigned integer of 1-8 bytes (reduced size included)
    IPV4 = "ipv4"  # 4 bytes, written as a dotted quad
    UPTIME_MS = "uptime_ms"  # 4 bytes, ms of the exporter's SysUptime: an absolute time
    SIGNED = "signed"  # two's complement, 1-8 bytes
    FLOAT = "float"  # IEEE 754, 4 or 8 bytes
    BOOLEAN = "boolean"  # 1 byte: 1 true, 2 false (RFC 7011 §6.1.5), anything else hex
    MAC = "mac"  # 6 bytes, aa:bb:cc:dd:ee:ff
    IPV6 = "ipv6"  # 16 bytes, RFC 5952 text
    STRING = "string"  # UTF-8 (invalid bytes replaced)
    OCTETS = "octets"  # octetArray, lists, unknown elements: lowercase hex
    DATETIME_S = "datetime_s"  # 4 bytes, UNIX seconds
    DATETIME_MS = "datetime_ms"  # 8 bytes, UNIX milliseconds
    DATETIME_US = "datetime_us"  # 8 bytes, NTP timestamp (RFC 7011 §6.1.9)
    DATETIME_NS = "datetime_ns"  # 8 bytes, NTP timestamp (RFC 7011 §6.1.10)


_UNSIGNED_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_SIGNED_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
# The sizes each kind may have (None: any); a reduced-size integer of 3, 5, 6 or 7 bytes has
# no struct code and unpacks as bytes.
_SIZES: dict[Kind, frozenset[int] | None] = {
    Kind.UNSIGNED: frozenset(range(1, 9)),
    Kind.SIGNED: frozenset(range(1, 9)),
    Kind.IPV4: frozenset({4}),
    Kind.UPTIME_MS: frozenset({4}),
    Kind.FLOAT: frozenset({4, 8}),
    Kind.BOOLEAN: frozenset({1}),
    Kind.MAC: frozenset({6}),
    Kind.IPV6: frozenset({16}),
    Kind.STRING: None,
    Kind.OCTETS: None,
    Kind.DATETIME_S: frozenset({4}),
    Kind.DATETIME_MS: frozenset({8}),
    Kind.DATETIME_US: frozenset({8}),
    Kind.DATETIME_NS: frozenset({8}),
}
_FIXED_CODES = {
    Kind.UPTIME_MS: "I",
    Kind.DATETIME_S: "I",
    Kind.DATETIME_MS: "Q",
    Kind.DATETIME_US: "Q",
    Kind.DATETIME_NS: "Q",
    Kind.BOOLEAN: "B",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One field of a record.

    ``element`` is the field's identity: its IANA IPFIX information element number (the
    NetFlow v9 field type numbers are the same for 1-127), or None for a field that only
    one legacy version has and no element describes (v6 ``in_encaps``, v7 ``flags1``).
    ``enterprise`` is the IPFIX Private Enterprise Number of an enterprise element (0: IANA's
    or a v9 type), so that enterprise 9's element 8 never fills ``src_addr``.
    ``name`` is what the decoded record calls it (for a template: its syslog key).
    """

    name: str
    offset: int
    size: int
    kind: Kind = Kind.UNSIGNED
    element: int | None = None
    enterprise: int = 0

    def __post_init__(self) -> None:
        sizes = _SIZES[self.kind]
        if sizes is not None and self.size not in sizes:
            if self.kind is Kind.UNSIGNED:
                raise ValueError(f"{self.name}: no unsigned integer of {self.size} bytes")
            allowed = " or ".join(str(n) for n in sorted(sizes))
            raise ValueError(f"{self.name}: a {self.kind.value} field has {allowed} bytes")
        if self.size < 0:
            raise ValueError(f"{self.name}: a field cannot have {self.size} bytes")

    @property
    def struct_code(self) -> str:
        """How ``struct`` unpacks the field: addresses, strings, octets and integers of no
        struct size as bytes; times as the integers they are on the wire."""
        if self.kind is Kind.UNSIGNED and self.size in _UNSIGNED_CODES:
            return _UNSIGNED_CODES[self.size]
        if self.kind is Kind.SIGNED and self.size in _SIGNED_CODES:
            return _SIGNED_CODES[self.size]
        if self.kind is Kind.FLOAT:
            return "f" if self.size == 4 else "d"
        return _FIXED_CODES.get(self.kind, f"{self.size}s")


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """A fixed-size record: its fields in wire order, checked when built.

    Bytes between fields are padding (never read). ``struct`` unpacks one record into the
    fields' values in wire order (an address as 4 bytes).
    """

    name: str
    size: int
    fields: tuple[Field, ...]
    struct: struct.Struct = field(init=False, repr=False, compare=False)
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = []
        at = 0
        for f in self.fields:
            if f.offset < at:
                raise ValueError(f"{self.name}: {f.name} at {f.offset} overlaps byte {at - 1}")
            if f.offset > at:
                codes.append(f"{f.offset - at}x")
            codes.append(f.struct_code)
            at = f.offset + f.size
        if at > self.size:
            raise ValueError(f"{self.name}: fields end at {at}, past the {self.size}-byte record")
        if at < self.size:
            codes.append(f"{self.size - at}x")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: a field name appears twice")
        record = struct.Struct("!" + "".join(codes))
        if record.size != self.size:
            raise ValueError(f"{self.name}: format {record.format} is not {self.size} bytes")
        object.__setattr__(self, "struct", record)
        object.__setattr__(self, "fingerprint", fingerprint(self.fields, self.size))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


def fingerprint(fields: tuple[Field, ...], size: int) -> str:
    """A short stable digest of what decides the decoding and the rendering of a layout.

    The layout's own name is left out: equal fields are equal code, wherever they came from.
    """
    # The enterprise number is written only when there is one, so that the legacy layouts
    # (and their golden files) keep the fingerprints they always had.
    text = (
        ";".join(
            f"{f.name},{f.offset},{f.size},{f.kind.value},{f.element}"
            + (f",e{f.enterprise}" if f.enterprise else "")
            for f in fields
        )
        + f";size={size}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
