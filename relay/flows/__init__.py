"""Sans-IO flow decoding of NetFlow v1/v5/v6/v7: bytes in, a Packet or a DecodeError out (v9 and
IPFIX, whose records need templates, are :mod:`relay.flows.messages` and the template decoder)."""

from __future__ import annotations

from relay.errors import DecodeError
from relay.flows import v1, v5, v6, v7
from relay.flows.legacy import ExportFormat
from relay.flows.model import Datagram, Packet

__all__ = [
    "LAYOUTS",
    "SUPPORTED_VERSIONS",
    "Datagram",
    "DecodeError",
    "Packet",
    "decode",
    "layout_for",
    "split",
]

LAYOUTS: dict[int, ExportFormat] = {m.LAYOUT.version: m.LAYOUT for m in (v1, v5, v6, v7)}
SUPPORTED_VERSIONS = tuple(LAYOUTS)


def layout_for(data: bytes) -> ExportFormat:
    """The export format of the datagram's version, or DecodeError (empty, short, unknown)."""
    size = len(data)
    if size == 0:
        raise DecodeError("empty", "empty datagram", offset=0)
    if size < 2:
        raise DecodeError("short_header", "1 byte is too short for a version field", offset=0)
    version = (data[0] << 8) | data[1]
    layout = LAYOUTS.get(version)
    if layout is None:
        hint = " (v9/IPFIX take the template path)" if version in (9, 10) else ""
        raise DecodeError("unknown_version", f"unsupported version {version}{hint}", offset=0)
    return layout


def decode(data: bytes) -> Packet:
    """Decode one UDP payload.

    Raises DecodeError (and nothing else, whatever the input) with a stable ``reason``:
    ``empty``, ``short_header``, ``unknown_version``, ``zero_count`` or ``short_records``.
    """
    return layout_for(data).decode(bytes(data))


def split(data: bytes) -> Datagram:
    """Cut one UDP payload into its header and record batches, decoding no record (the
    renderer's hot path); raises DecodeError exactly where :func:`decode` does."""
    return layout_for(data).split(data)
