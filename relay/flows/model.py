"""The decoded form of a NetFlow v1/v5/v6/v7 export datagram.

Flow records are NamedTuples rather than frozen dataclasses: they are built once per flow on
the hot path (hundreds of thousands per second), and a tuple is both immutable and several
times cheaper to create. The field order is the order of the syslog body, so the renderer can
format a record positionally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# Keys every rendered line carries, in the order of the product contract (SPEC "The syslog
# line"). The first seven come from the datagram header, the rest from the record.
HEADER_KEYS = (
    "version",
    "exporter",
    "flow_sequence",
    "engine_type",
    "engine_id",
    "sampling_interval",
    "sampling_mode",
)
RECORD_KEYS = (
    "first",
    "last",
    "src_addr",
    "dst_addr",
    "next_hop",
    "input_if",
    "output_if",
    "packets",
    "bytes",
    "src_port",
    "dst_port",
    "protocol",
    "tcp_flags",
    "tos",
    "src_as",
    "dst_as",
    "src_mask",
    "dst_mask",
)
EXTRA_KEYS: dict[int, tuple[str, ...]] = {
    1: (),
    5: (),
    6: ("in_encaps", "out_encaps", "peer_next_hop"),
    7: ("flags1", "flags2", "router_sc"),
}

# Warnings a datagram can carry and still be decoded.
WARN_OVER_MAX_COUNT = "over_max_count"
WARN_TRAILING_BYTES = "trailing_bytes"


class FlowRecord(NamedTuple):
    """One v1 or v5 flow. ``first``/``last`` are absolute UNIX times in milliseconds."""

    first: int
    last: int
    src_addr: str
    dst_addr: str
    next_hop: str
    input_if: int
    output_if: int
    packets: int
    bytes: int
    src_port: int
    dst_port: int
    protocol: int
    tcp_flags: int
    tos: int
    src_as: int
    dst_as: int
    src_mask: int
    dst_mask: int


class FlowRecordV6(NamedTuple):
    """A v6 flow: v5 plus encapsulation sizes and the BGP peer next hop."""

    first: int
    last: int
    src_addr: str
    dst_addr: str
    next_hop: str
    input_if: int
    output_if: int
    packets: int
    bytes: int
    src_port: int
    dst_port: int
    protocol: int
    tcp_flags: int
    tos: int
    src_as: int
    dst_as: int
    src_mask: int
    dst_mask: int
    in_encaps: int
    out_encaps: int
    peer_next_hop: str


class FlowRecordV7(NamedTuple):
    """A v7 (Catalyst switch) flow: v5 plus validity flags and the shortcut router."""

    first: int
    last: int
    src_addr: str
    dst_addr: str
    next_hop: str
    input_if: int
    output_if: int
    packets: int
    bytes: int
    src_port: int
    dst_port: int
    protocol: int
    tcp_flags: int
    tos: int
    src_as: int
    dst_as: int
    src_mask: int
    dst_mask: int
    flags1: int
    flags2: int
    router_sc: str


AnyFlowRecord = FlowRecord | FlowRecordV6 | FlowRecordV7


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketHeader:
    """The export header. Fields a version lacks are 0 (v1: everything after unix_nsecs;
    v7: engine and sampling). ``sampling_interval`` and ``sampling_mode`` are already split
    (v5: low 14 bits and top 2 bits of the wire field)."""

    version: int
    count: int
    sys_uptime: int
    unix_secs: int
    unix_nsecs: int
    flow_sequence: int = 0
    engine_type: int = 0
    engine_id: int = 0
    sampling_interval: int = 0
    sampling_mode: int = 0

    @property
    def export_time_ms(self) -> int:
        """Export time in UNIX milliseconds (truncated, as the records' times are)."""
        return self.unix_secs * 1000 + self.unix_nsecs // 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Packet:
    """A decoded datagram: its header, its records, and what was odd but tolerated."""

    header: PacketHeader
    records: tuple[AnyFlowRecord, ...]
    warnings: tuple[str, ...] = ()
    trailing_bytes: int = 0

    @property
    def version(self) -> int:
        return self.header.version
