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

    v1/v5/v6/v7 need only these three; v9/IPFIX add strings, IPv6 and MAC addresses,
    absolute times, octet arrays and variable-length fields as new kinds.
    """

    UNSIGNED = "unsigned"  # big-endian unsigned integer of 1, 2, 4 or 8 bytes
    IPV4 = "ipv4"  # 4 bytes, written as a dotted quad
    UPTIME_MS = "uptime_ms"  # 4 bytes, ms of the exporter's SysUptime: an absolute time


_UNSIGNED_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One field of a record.

    ``element`` is the field's identity: its IANA IPFIX information element number (the
    NetFlow v9 field type numbers are the same for 1-127), or None for a field that only
    one legacy version has and no element describes (v6 ``in_encaps``, v7 ``flags1``).
    ``name`` is what the decoded record calls it.
    """

    name: str
    offset: int
    size: int
    kind: Kind = Kind.UNSIGNED
    element: int | None = None

    def __post_init__(self) -> None:
        if self.kind is Kind.UNSIGNED and self.size not in _UNSIGNED_CODES:
            raise ValueError(f"{self.name}: no unsigned integer of {self.size} bytes")
        if self.kind is not Kind.UNSIGNED and self.size != 4:
            raise ValueError(f"{self.name}: a {self.kind.value} field has 4 bytes")

    @property
    def struct_code(self) -> str:
        # An address stays 4 bytes (decoded by inet_ntoa); uptime ms are an unsigned int.
        return "4s" if self.kind is Kind.IPV4 else _UNSIGNED_CODES[self.size]


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
    text = (
        ";".join(f"{f.name},{f.offset},{f.size},{f.kind.value},{f.element}" for f in fields)
        + f";size={size}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
