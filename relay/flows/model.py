"""The decoded form of a NetFlow export datagram: v1/v5/v6/v7, and v9/IPFIX messages.

Flow records are NamedTuples rather than frozen dataclasses: they are built once per flow on
the hot path (hundreds of thousands per second), and a tuple is both immutable and several
times cheaper to create. Their field order is SPEC's key order, for readers of a record;
the syslog keys and their order are the renderer's, found from each field's element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from relay.flows.layout import Layout
from relay.flows.template import Template

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
    (the step is the record count), v9 counts datagrams (1), IPFIX data records (known only
    once its data sets are decoded with their templates: 0 until then).

    v9 and IPFIX: ``domain`` is the v9 Source ID or the IPFIX Observation Domain ID; v9's
    header count (records plus templates) is kept in ``count`` but trusted for nothing, and
    an IPFIX header has none (0); IPFIX has no SysUptime (0) and exports whole seconds.
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
    domain: int = 0

    @property
    def export_time_ms(self) -> int:
        """Export time in UNIX milliseconds (truncated, as the records' times are)."""
        return self.unix_secs * 1000 + self.unix_nsecs // 1_000_000

    @property
    def sequence_scope(self) -> tuple[int, int, int]:
        """What, besides the exporter, one sequence counter belongs to (SPEC: per exporter
        and engine; v9 its Source ID, IPFIX its Observation Domain)."""
        if self.version in (9, 10):
            return (self.version, self.domain, 0)
        return (self.version, self.engine_type, self.engine_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One part of a datagram that could not be decoded (the other parts still are).

    v1/v5/v6/v7 have one part, so a problem there is the whole datagram's and raises
    DecodeError instead; v9/IPFIX sets are dropped one by one with a Problem each. ``part``
    is the set's index in the datagram, ``offset`` where in the datagram it went wrong.
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


# --- NetFlow v9 / IPFIX -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSet:
    """One data set as it came: its template ID and its body, set padding included (only
    the template tells where the records end, and the template may not be known yet)."""

    template_id: int
    part: int
    offset: int  # of the body (after the 4-byte set header) in the datagram
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Withdrawal:
    """An IPFIX template withdrawal (a template record with no fields, RFC 7011 §8.1).

    ``template_id`` 2 (or 3) withdraws every (options) template of the domain. Over UDP
    withdrawals are to be ignored and counted (RFC 7011 §8.4): it is reported, never applied
    here, and never mistaken for a template.
    """

    template_id: int
    options: bool
    part: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """A v9 or IPFIX datagram cut into what it carries, no data record decoded yet.

    Templates are listed in wire order; a consumer applies them before decoding this
    message's data sets, so a template serves the data sets of its own datagram.
    """

    header: PacketHeader
    templates: tuple[Template, ...] = ()
    withdrawals: tuple[Withdrawal, ...] = ()
    data_sets: tuple[DataSet, ...] = ()
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()
    trailing_bytes: int = 0
    set_count: int = 0
