"""NetFlow v1: 16-byte header (no sequence, engine or sampling), 48-byte records."""

from __future__ import annotations

from relay.flows.layout import Kind, Layout
from relay.flows.legacy import HEADER_16, ExportFormat, fields
from relay.flows.model import FlowRecord

IPV4, UPTIME = Kind.IPV4, Kind.UPTIME_MS

LAYOUT = ExportFormat(
    version=1,
    header=HEADER_16,
    layout=Layout(
        name="netflow v1",
        size=48,
        # offset, size, name, IANA element, kind. Bytes 36-37 (pad), 41 (pad), 42-43 (pad)
        # and 44-47 (reserved) are never read. v1 has no AS numbers or masks: they read as 0.
        fields=fields(
            (0, 4, "src_addr", 8, IPV4),
            (4, 4, "dst_addr", 12, IPV4),
            (8, 4, "next_hop", 15, IPV4),
            (12, 2, "input_if", 10),
            (14, 2, "output_if", 14),
            (16, 4, "packets", 2),
            (20, 4, "bytes", 1),
            (24, 4, "first", 22, UPTIME),
            (28, 4, "last", 21, UPTIME),
            (32, 2, "src_port", 7),
            (34, 2, "dst_port", 11),
            (38, 1, "protocol", 4),
            (39, 1, "tos", 5),
            (40, 1, "tcp_flags", 6),
        ),
    ),
    record_type=FlowRecord,
    max_count=24,
    has_sequence=False,
    has_engine=False,
)
decode = LAYOUT.decode
