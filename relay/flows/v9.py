"""NetFlow v9 (RFC 3954): the 20-byte header, then FlowSets walked by their lengths.

Header (RFC 3954 §5.1), big-endian::

    0  version (9)     2  count (records + templates; not trusted)
    4  SysUptime (ms)  8  UNIX seconds
    12 sequence (counts export packets: +1 per datagram)
    16 Source ID (the exporting engine: half of a template's scope)

FlowSet IDs: 0 template, 1 options template, 2-255 reserved, 256 and up data.
"""

from __future__ import annotations

import struct

from relay.errors import DecodeError
from relay.flows import sets
from relay.flows.model import WARN_TRAILING_BYTES, Message, PacketHeader

VERSION = 9
HEADER = struct.Struct("!HHIIII")
TEMPLATE_SET = 0
OPTIONS_TEMPLATE_SET = 1


def parse_header(data: bytes) -> PacketHeader:
    if len(data) < HEADER.size:
        raise DecodeError(
            "short_header",
            f"{len(data)} bytes is shorter than the {HEADER.size}-byte header",
            version=VERSION,
            offset=len(data),
        )
    version, count, uptime, secs, sequence, source_id = HEADER.unpack_from(data)
    if version != VERSION:
        raise DecodeError("unknown_version", f"version {version} is not 9", offset=0)
    return PacketHeader(
        version=VERSION,
        count=count,
        sys_uptime=uptime,
        unix_secs=secs,
        unix_nsecs=0,
        flow_sequence=sequence,
        has_sequence=True,
        sequence_step=1,
        domain=source_id,
    )


def parse(data: bytes) -> Message:
    """Cut one v9 datagram into templates, data sets and problems; DecodeError only for a
    header that is not there."""
    data = bytes(data)
    header = parse_header(data)
    out = sets.SetContents()
    end = len(data)
    at = HEADER.size
    for item in sets.walk(data, at, end):
        if not isinstance(item, tuple):
            out.problems.append(item)
            at = end
            break
        part, set_id, body, at = item
        out.set_count += 1
        if set_id == TEMPLATE_SET:
            sets.v9_templates(out, part, data, body, at)
        elif set_id == OPTIONS_TEMPLATE_SET:
            sets.v9_options_templates(out, part, data, body, at)
        elif set_id >= sets.FIRST_DATA_SET:
            sets.data_set(out, part, set_id, data[body:at], body)
        else:
            out.problem(part, "reserved_set_id", f"FlowSet ID {set_id}", body - 4)
    trailing = end - at
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
