"""IPFIX (RFC 7011): the 16-byte message header, then sets walked by their lengths.

Header (RFC 7011 §3.1), big-endian::

    0  version (10)     2  message length (header included)
    4  export time (UNIX seconds)
    8  sequence (counts data records sent before this message, mod 2**32)
    12 Observation Domain ID (half of a template's scope)

Set IDs: 2 template, 3 options template, 0, 1 and 4-255 reserved, 256 and up data.
"""

from __future__ import annotations

import struct

from relay.errors import DecodeError
from relay.flows import sets
from relay.flows.model import WARN_TRAILING_BYTES, Message, PacketHeader

VERSION = 10
HEADER = struct.Struct("!HHIII")
TEMPLATE_SET = 2
OPTIONS_TEMPLATE_SET = 3


def parse_header(data: bytes) -> tuple[PacketHeader, int]:
    """The header and the message length it gives (checked against the datagram)."""
    if len(data) < HEADER.size:
        raise DecodeError(
            "short_header",
            f"{len(data)} bytes is shorter than the {HEADER.size}-byte header",
            version=VERSION,
            offset=len(data),
        )
    version, length, export_time, sequence, domain = HEADER.unpack_from(data)
    if version != VERSION:
        raise DecodeError("unknown_version", f"version {version} is not 10", offset=0)
    if length < HEADER.size:
        raise DecodeError(
            "bad_length", f"message length {length} is shorter than its header",
            version=VERSION, offset=2,
        )  # fmt: skip
    if length > len(data):
        raise DecodeError(
            "short_message",
            f"message length {length}, datagram has {len(data)} bytes",
            version=VERSION,
            offset=len(data),
        )
    header = PacketHeader(
        version=VERSION,
        count=0,
        sys_uptime=0,
        unix_secs=export_time,
        unix_nsecs=0,
        flow_sequence=sequence,
        has_sequence=True,
        # The step is the message's data record count: known once its sets are decoded.
        sequence_step=0,
        domain=domain,
    )
    return header, length


def parse(data: bytes) -> Message:
    """Cut one IPFIX message into templates, withdrawals, data sets and problems;
    DecodeError only for a header that is missing or whose length cannot be."""
    data = bytes(data)
    header, end = parse_header(data)
    out = sets.SetContents()
    at = HEADER.size
    for item in sets.walk(data, at, end):
        if not isinstance(item, tuple):
            out.problems.append(item)
            at = end
            break
        part, set_id, body, at = item
        out.set_count += 1
        if set_id in (TEMPLATE_SET, OPTIONS_TEMPLATE_SET):
            options = set_id == OPTIONS_TEMPLATE_SET
            sets.ipfix_templates(out, part, data, body, at, options=options)
        elif set_id >= sets.FIRST_DATA_SET:
            sets.data_set(out, part, set_id, data[body:at], body)
        else:
            out.problem(part, "reserved_set_id", f"set ID {set_id}", body - 4)
    # Bytes after the message (the header's length) and a short tail inside it.
    trailing = len(data) - at
    return Message(
        header=header,
        templates=tuple(out.templates),
        withdrawals=tuple(out.withdrawals),
        data_sets=tuple(out.data_sets),
        problems=tuple(out.problems),
        warnings=(WARN_TRAILING_BYTES,) if trailing else (),
        trailing_bytes=trailing,
        set_count=out.set_count,
    )
