"""Wire layouts of NetFlow v1/v5/v6/v7 and the checks every datagram passes.

Each version module declares one :class:`Layout`: its header and record ``struct`` formats
and the names of the values a record unpacks to, in wire order. From that one declaration
this module builds the record decoder, and :mod:`relay.render` builds the fused
bytes-to-lines renderer, so the byte offsets are written down exactly once per version.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from socket import inet_ntoa

from relay.errors import DecodeError
from relay.flows.model import (
    WARN_OVER_MAX_COUNT,
    WARN_TRAILING_BYTES,
    AnyFlowRecord,
    Packet,
    PacketHeader,
)

UPTIME_MASK = 0xFFFFFFFF
_HALF = 1 << 31
ADDRESS_FIELDS = frozenset({"src_addr", "dst_addr", "next_hop", "peer_next_hop", "router_sc"})
TIME_FIELDS = frozenset({"first", "last"})

HEADER_16 = struct.Struct("!HHIII")
# v5, v6 and v7 share 24 bytes; v7 has 4 reserved bytes where v5 has engine and sampling.
HEADER_24 = struct.Struct("!HHIIIIBBH")

RecordBuilder = Callable[[memoryview, int, int], list[AnyFlowRecord]]


def time_bases(sys_uptime: int, export_time_ms: int) -> tuple[int, int]:
    """Constants that turn a record's First/Last uptime into absolute UNIX milliseconds.

    A record's time is ``export_time - (SysUptime - First)``. The difference is taken modulo
    2**32 and read as a signed 32-bit number, so a flow that started just before the uptime
    counter wrapped (every 49.7 days: SysUptime small, First close to 2**32) is a few ms in
    the past rather than 49 days in the future, and a First a little *after* SysUptime (clock
    skew between the exporter's flow cache and its export path) is a few ms later, not 49 days
    earlier. With ``k_time, k_up = time_bases(...)`` the absolute time of uptime ``t`` is
    ``k_time - ((k_up - t) & 0xFFFFFFFF)``: one subtraction and one mask per field.
    """
    return export_time_ms + _HALF, sys_uptime + _HALF


def absolute_ms(uptime_ms: int, sys_uptime: int, export_time_ms: int) -> int:
    """The absolute UNIX time in ms of a record's First/Last (the readable form)."""
    k_time, k_up = time_bases(sys_uptime, export_time_ms)
    return k_time - ((k_up - uptime_ms) & UPTIME_MASK)


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    version: int
    header: struct.Struct
    record: struct.Struct
    # Names of the values ``record.unpack`` yields, in wire order (pads are ``x`` in the
    # format and yield nothing). Record fields a version lacks (v1: AS numbers and masks)
    # are 0.
    wire_fields: tuple[str, ...]
    record_type: type[AnyFlowRecord]
    # Cisco's documented maximum; exceeding it is a warning, the length decides.
    max_count: int
    has_sequence: bool
    has_engine: bool
    build_records: RecordBuilder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.wire_fields) - set(self.record_type._fields)
        if unknown or len(set(self.wire_fields)) != len(self.wire_fields):
            raise ValueError(f"v{self.version}: bad wire fields {sorted(unknown)}")
        if len(struct.unpack(self.record.format, bytes(self.record.size))) != len(self.wire_fields):
            raise ValueError(f"v{self.version}: record format and wire fields disagree")
        object.__setattr__(self, "build_records", _compile_records(self))

    def parse_header(self, data: bytes) -> tuple[PacketHeader, int]:
        """Validate lengths and parse the header; returns it and the trailing byte count."""
        if len(data) < self.header.size:
            raise DecodeError(
                "short_header",
                f"{len(data)} bytes is shorter than the {self.header.size}-byte header",
                version=self.version,
                offset=len(data),
            )
        if self.header is HEADER_16:
            _, count, uptime, secs, nsecs = HEADER_16.unpack_from(data)
            sequence = engine_type = engine_id = sampling = 0
        else:
            _, count, uptime, secs, nsecs, sequence, engine_type, engine_id, sampling = (
                HEADER_24.unpack_from(data)
            )
            if not self.has_engine:
                engine_type = engine_id = sampling = 0
        if count == 0:
            raise DecodeError("zero_count", "header count is 0", version=self.version, offset=2)
        needed = self.header.size + count * self.record.size
        if len(data) < needed:
            raise DecodeError(
                "short_records",
                f"count {count} needs {needed} bytes, datagram has {len(data)}",
                version=self.version,
                offset=len(data),
            )
        header = PacketHeader(
            version=self.version,
            count=count,
            sys_uptime=uptime,
            unix_secs=secs,
            unix_nsecs=nsecs,
            flow_sequence=sequence,
            engine_type=engine_type,
            engine_id=engine_id,
            # The top two bits are the sampling mode, the low fourteen the interval.
            sampling_interval=sampling & 0x3FFF,
            sampling_mode=sampling >> 14,
        )
        return header, len(data) - needed

    def body(self, data: bytes, count: int) -> memoryview:
        start = self.header.size
        return memoryview(data)[start : start + count * self.record.size]

    def warnings(self, header: PacketHeader, trailing: int) -> tuple[str, ...]:
        found = []
        if header.count > self.max_count:
            found.append(WARN_OVER_MAX_COUNT)
        if trailing:
            found.append(WARN_TRAILING_BYTES)
        return tuple(found)

    def decode(self, data: bytes) -> Packet:
        header, trailing = self.parse_header(data)
        k_time, k_up = time_bases(header.sys_uptime, header.export_time_ms)
        records = self.build_records(self.body(data, header.count), k_time, k_up)
        return Packet(
            header=header,
            records=tuple(records),
            warnings=self.warnings(header, trailing),
            trailing_bytes=trailing,
        )


def value_expression(name: str, layout: Layout) -> str:
    """Python expression turning the unpacked wire value ``name`` into the model's value."""
    if name not in layout.wire_fields:
        return "0"
    if name in TIME_FIELDS:
        return f"(k_time - ((k_up - {name}) & {UPTIME_MASK}))"
    if name in ADDRESS_FIELDS:
        return f"inet_ntoa({name})"
    return name


def _compile_records(layout: Layout) -> RecordBuilder:
    # A generated comprehension (like namedtuple's generated __new__) is three times faster
    # than a generic loop over field descriptors: no per-field dispatch on the hot path.
    values = ", ".join(value_expression(n, layout) for n in layout.record_type._fields)
    source = (
        "def build_records(body, k_time, k_up):\n"
        f"    return [new(Record, ({values},))\n"
        f"            for ({', '.join(layout.wire_fields)},) in unpack(body)]\n"
    )
    namespace = {
        "new": tuple.__new__,
        "Record": layout.record_type,
        "unpack": layout.record.iter_unpack,
        "inet_ntoa": inet_ntoa,
    }
    exec(compile(source, f"<netflow v{layout.version} records>", "exec"), namespace)  # noqa: S102
    builder: RecordBuilder = namespace["build_records"]  # type: ignore[assignment]
    return builder
