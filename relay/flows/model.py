"""The decoded form of a NetFlow v1/v5/v6/v7 export datagram.

Flow records are NamedTuples rather than frozen dataclasses: they are built once per flow on
the hot path (hundreds of thousands per second), and a tuple is both immutable and several
times cheaper to create. Their field order is SPEC's key order, for readers of a record;
the syslog keys and their order are the renderer's, found from each field's element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from relay.flows.layout import Layout

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
    (v5: low 14 bits and top 2 bits of the wire field).

    ``has_sequence`` says whether ``flow_sequence`` means anything (v1 has none), and
    ``sequence_step`` how far it moves from this datagram to the next: v5/v6/v7 count flows
    (the step is the record count), v9 will count datagrams (1), IPFIX data records.
    """

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
    has_sequence: bool = False
    sequence_step: int = 0

    @property
    def export_time_ms(self) -> int:
        """Export time in UNIX milliseconds (truncated, as the records' times are)."""
        return self.unix_secs * 1000 + self.unix_nsecs // 1_000_000

    @property
    def sequence_scope(self) -> tuple[int, int, int]:
        """What, besides the exporter, one sequence counter belongs to (SPEC: per exporter
        and engine; v9 will use its Source ID, IPFIX its Observation Domain)."""
        return (self.version, self.engine_type, self.engine_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One part of a datagram that could not be decoded (the other parts still are).

    v1/v5/v6/v7 have one part, so a problem there is the whole datagram's and raises
    DecodeError instead; v9/IPFIX sets will be dropped one by one with a Problem each.
    """

    part: int
    reason: str
    detail: str
    offset: int | None = None


class RecordBatch(NamedTuple):
    """Consecutive records of one layout: one v1/v5/v6/v7 body, or one v9/IPFIX data set.

    This and :class:`Datagram` are NamedTuples for the records' reason: the fused renderer
    builds them once per datagram, and a frozen dataclass costs ten times more to build.
    """

    layout: Layout
    data: memoryview  # count * layout.size bytes, padding of a set excluded

    @property
    def record_count(self) -> int:
        return len(self.data) // self.layout.size


class Datagram(NamedTuple):
    """A datagram cut into its parts, no record decoded yet: what the fused renderer reads."""

    header: PacketHeader
    batches: tuple[RecordBatch, ...]
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()
    trailing_bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Packet:
    """A decoded datagram: its header, its records per batch, and what was odd but tolerated."""

    header: PacketHeader
    # Left out of ==: two packets that differ only in padding bytes are the same packet.
    batches: tuple[RecordBatch, ...] = field(compare=False)
    # The records of each batch, in the batches' order.
    batch_records: tuple[tuple[AnyFlowRecord, ...], ...]
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()
    trailing_bytes: int = 0

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def records(self) -> tuple[AnyFlowRecord, ...]:
        """Every record of the datagram, in wire order."""
        if len(self.batch_records) == 1:
            return self.batch_records[0]
        return tuple(r for batch in self.batch_records for r in batch)
