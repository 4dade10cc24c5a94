"""NetFlow v1/v5/v6/v7: one fixed header, one fixed record layout, and the checks every
datagram passes.

Each version module declares one :class:`ExportFormat`: its header ``struct`` and its record
:class:`~relay.flows.layout.Layout`, written down once with byte offsets. From that one
declaration this module builds the record decoder, and :mod:`relay.render` builds the fused
bytes-to-lines renderer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from socket import inet_ntoa

from relay.errors import DecodeError
from relay.flows.layout import Field, Kind, Layout
from relay.flows.model import (
    WARN_OVER_MAX_COUNT,
    WARN_TRAILING_BYTES,
    AnyFlowRecord,
    Datagram,
    Packet,
    PacketHeader,
    RecordBatch,
)

UPTIME_MASK = 0xFFFFFFFF
_HALF = 1 << 31

HEADER_16 = struct.Struct("!HHIII")
# v5, v6 and v7 share 24 bytes; v7 has 4 reserved bytes where v5 has engine and sampling.
HEADER_24 = struct.Struct("!HHIIIIBBH")

RecordBuilder = Callable[[memoryview, int, int], list[AnyFlowRecord]]
# (offset, size, name, IANA element or None[, kind]): one row per field of a record table.
Row = tuple[int, int, str, int | None] | tuple[int, int, str, int | None, Kind]


def fields(*rows: Row) -> tuple[Field, ...]:
    """A record table, written as rows so that the byte offsets line up for a reader."""
    return tuple(
        Field(offset=row[0], size=row[1], name=row[2], element=row[3], kind=row[4])
        if len(row) == 5
        else Field(offset=row[0], size=row[1], name=row[2], element=row[3])
        for row in rows
    )


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
class ExportFormat:
    version: int
    header: struct.Struct
    layout: Layout
    record_type: type[AnyFlowRecord]
    # Cisco's documented maximum; exceeding it is a warning, the length decides.
    max_count: int
    has_sequence: bool
    has_engine: bool
    build_records: RecordBuilder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Record fields a version lacks (v1: AS numbers and masks) are 0.
        unknown = set(self.layout.names) - set(self.record_type._fields)
        if unknown:
            raise ValueError(f"v{self.version}: bad wire fields {sorted(unknown)}")
        object.__setattr__(self, "build_records", _compile_records(self))

    @property
    def record(self) -> struct.Struct:
        """One record's ``struct``: the values of ``wire_fields``, addresses as 4 bytes."""
        return self.layout.struct

    @property
    def wire_fields(self) -> tuple[str, ...]:
        return self.layout.names

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
        needed = self.header.size + count * self.layout.size
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
            has_sequence=self.has_sequence,
            # These versions' flow_sequence counts flows: the next datagram's is count later.
            sequence_step=count if self.has_sequence else 0,
        )
        return header, len(data) - needed

    def split(self, data: bytes) -> Datagram:
        """The header and the one record batch (the body), or DecodeError."""
        header, trailing = self.parse_header(data)
        start = self.header.size
        body = memoryview(data)[start : start + header.count * self.layout.size]
        return Datagram(
            header=header,
            batches=(RecordBatch(layout=self.layout, data=body),),
            warnings=self.warnings(header, trailing),
            trailing_bytes=trailing,
        )

    def warnings(self, header: PacketHeader, trailing: int) -> tuple[str, ...]:
        found = []
        if header.count > self.max_count:
            found.append(WARN_OVER_MAX_COUNT)
        if trailing:
            found.append(WARN_TRAILING_BYTES)
        return tuple(found)

    def decode(self, data: bytes) -> Packet:
        parts = self.split(data)
        header = parts.header
        k_time, k_up = time_bases(header.sys_uptime, header.export_time_ms)
        return Packet(
            header=header,
            batches=parts.batches,
            batch_records=tuple(
                tuple(self.build_records(batch.data, k_time, k_up)) for batch in parts.batches
            ),
            problems=parts.problems,
            warnings=parts.warnings,
            trailing_bytes=parts.trailing_bytes,
        )


def value_expression(name: str, layout: Layout) -> str:
    """Python expression turning the unpacked wire value ``name`` into the model's value."""
    f = layout.field(name)
    if f is None:
        return "0"
    if f.kind is Kind.UPTIME_MS:
        return f"(k_time - ((k_up - {name}) & {UPTIME_MASK}))"
    if f.kind is Kind.IPV4:
        return f"inet_ntoa({name})"
    return name


def _compile_records(fmt: ExportFormat) -> RecordBuilder:
    # A generated comprehension (like namedtuple's generated __new__) is three times faster
    # than a generic loop over field descriptors: no per-field dispatch on the hot path.
    values = ", ".join(value_expression(n, fmt.layout) for n in fmt.record_type._fields)
    source = (
        "def build_records(body, k_time, k_up):\n"
        f"    return [new(Record, ({values},))\n"
        f"            for ({', '.join(fmt.layout.names)},) in unpack(body)]\n"
    )
    namespace = {
        "new": tuple.__new__,
        "Record": fmt.record_type,
        "unpack": fmt.layout.struct.iter_unpack,
        "inet_ntoa": inet_ntoa,
    }
    exec(compile(source, f"<netflow v{fmt.version} records>", "exec"), namespace)  # noqa: S102
    builder: RecordBuilder = namespace["build_records"]  # type: ignore[assignment]
    return builder
