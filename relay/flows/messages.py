"""v9 and IPFIX datagrams by their version field: bytes in, a Message or a DecodeError out."""

from __future__ import annotations

from relay.errors import DecodeError
from relay.flows import ipfix, v9
from relay.flows.model import Message

TEMPLATE_VERSIONS = (v9.VERSION, ipfix.VERSION)


def parse(data: bytes) -> Message:
    """Raises DecodeError (and nothing else, whatever the input) for ``empty``,
    ``short_header``, ``unknown_version``, ``bad_length`` or ``short_message``; every other
    fault is a Problem of the set it is in."""
    if len(data) < 2:
        reason = "empty" if not data else "short_header"
        raise DecodeError(reason, f"{len(data)} bytes has no version field", offset=0)
    version = (data[0] << 8) | data[1]
    if version == v9.VERSION:
        return v9.parse(data)
    if version == ipfix.VERSION:
        return ipfix.parse(data)
    raise DecodeError("unknown_version", f"version {version} is neither 9 nor 10", offset=0)
