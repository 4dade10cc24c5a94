"""A small NetFlow v9 / IPFIX encoder for the synthetic exporter (pure, bytes out).

Written from RFC 3954 and RFC 7011, not from the relay's decoders, so that what the decoders
read back checks them. The test suite has its own encoder (``tests/support``) for malformed
input; this one only writes what a well-behaved exporter sends.

Layouts, big-endian:

- v9 header (RFC 3954 §5.1): version 9, count (template, options and data records of the
  packet), SysUptime ms, UNIX seconds, sequence (+1 per export packet), Source ID.
- IPFIX header (RFC 7011 §3.1): version 10, message length, export time, sequence (data
  records sent before this message), Observation Domain ID.
- A set: ID, length (header included), body, then zero padding to a 4-byte boundary
  (RFC 3954 §5.3 SHOULD; RFC 7011 §3.3.1 MAY, shorter than any record).
- Template record: ID, field count, (element, length) pairs. Options template record:
  v9 ID, scope length in bytes, option length in bytes; IPFIX ID, field count, scope count.
- A variable-length value (IPFIX, field length 65535): 1 length byte, or 255 and 2 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from relay.flows.template import VARIABLE_LENGTH, Template

V9_TEMPLATE_SET, V9_OPTIONS_SET = 0, 1
IPFIX_TEMPLATE_SET, IPFIX_OPTIONS_SET = 2, 3
V9_HEADER = struct.Struct("!HHIIII")
IPFIX_HEADER = struct.Struct("!HHIII")

FieldValue = int | bytes | str


def set_bytes(set_id: int, body: bytes, *, align: int) -> bytes:
    """One set, padded with zeros to a multiple of 4 bytes when the padding is shorter than
    ``align`` (the shortest record the set can hold: padding must never read as a record)."""
    pad = -(4 + len(body)) % 4
    if pad >= align:
        pad = 0
    return struct.pack("!HH", set_id, 4 + len(body) + pad) + body + bytes(pad)


def template_record(template: Template, *, ipfix: bool) -> bytes:
    fields = b"".join(struct.pack("!HH", f.element, f.length) for f in template.fields)
    if not template.options:
        return struct.pack("!HH", template.template_id, len(template.fields)) + fields
    if ipfix:
        count, scopes = len(template.fields), template.scope_fields
        return struct.pack("!HHH", template.template_id, count, scopes) + fields
    scope_bytes = 4 * template.scope_fields
    option_bytes = 4 * (len(template.fields) - template.scope_fields)
    return struct.pack("!HHH", template.template_id, scope_bytes, option_bytes) + fields


def template_set(templates: Sequence[Template], *, ipfix: bool) -> bytes:
    """The (options) templates in one set: all data templates or all options templates."""
    options = templates[0].options
    if any(t.options != options for t in templates):
        raise ValueError("one set holds data templates or options templates, not both")
    if ipfix:
        set_id = IPFIX_OPTIONS_SET if options else IPFIX_TEMPLATE_SET
    else:
        set_id = V9_OPTIONS_SET if options else V9_TEMPLATE_SET
    body = b"".join(template_record(t, ipfix=ipfix) for t in templates)
    return set_bytes(set_id, body, align=4)  # template records are never shorter than 4


def encode_value(value: FieldValue, length: int) -> bytes:
    """An integer in ``length`` bytes, bytes as they are (fixed length: exactly), text as
    UTF-8 (fixed length: NUL-padded); a variable-length field gets its length prefix."""
    raw = value.encode() if isinstance(value, str) else value
    if length == VARIABLE_LENGTH:
        if isinstance(raw, int):
            raise ValueError("a variable-length field takes bytes or text, not a number")
        if len(raw) < 255:
            return bytes([len(raw)]) + raw
        return b"\xff" + struct.pack("!H", len(raw)) + raw
    if isinstance(raw, int):
        return raw.to_bytes(length, "big")
    if isinstance(value, str):
        raw = raw.ljust(length, b"\x00")
    if len(raw) != length:
        raise ValueError(f"{len(raw)} bytes for a field of {length}")
    return raw


def record(template: Template, values: Mapping[int, FieldValue]) -> bytes:
    """One data record: the value of each template field, by element number (a template
    here names each element once, and every value has its field)."""
    if len(values) != len(template.fields):
        raise ValueError(f"template {template.template_id}: {len(values)} values for "
                         f"{len(template.fields)} fields")  # fmt: skip
    return b"".join(encode_value(values[f.element], f.length) for f in template.fields)


def data_set(template: Template, records: Sequence[bytes]) -> bytes:
    return set_bytes(template.template_id, b"".join(records), align=template.minimum_length)


def v9_datagram(
    sets: Sequence[bytes], *, count: int, uptime: int, secs: int, sequence: int, source_id: int
) -> bytes:
    header = V9_HEADER.pack(9, count, uptime & 0xFFFFFFFF, secs, sequence, source_id)
    return header + b"".join(sets)


def ipfix_message(sets: Sequence[bytes], *, export_time: int, sequence: int, domain: int) -> bytes:
    body = b"".join(sets)
    length = IPFIX_HEADER.size + len(body)
    if length > 0xFFFF:
        raise ValueError(f"an IPFIX message of {length} bytes does not fit its length field")
    return IPFIX_HEADER.pack(10, length, export_time, sequence, domain) + body


__all__ = [
    "FieldValue",
    "data_set",
    "encode_value",
    "ipfix_message",
    "record",
    "set_bytes",
    "template_record",
    "template_set",
    "v9_datagram",
]
