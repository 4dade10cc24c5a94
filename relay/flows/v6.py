"""NetFlow v6: the v5 header; 52-byte records = v5 plus the encapsulation sizes and the BGP
peer next hop."""

from __future__ import annotations

from relay.flows.layout import Kind, Layout
from relay.flows.legacy import HEADER_24, ExportFormat, fields
from relay.flows.model import FlowRecordV6

IPV4, UPTIME = Kind.IPV4, Kind.UPTIME_MS

LAYOUT = ExportFormat(
    version=6,
    header=HEADER_24,
    layout=Layout(
        name="netflow v6",
        size=52,
        # offset, size, name, IANA element, kind. As v5 up to byte 45 (36 is padding), then
        # the encapsulation sizes (no IANA element) and the BGP next hop (element 18).
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
            (37, 1, "tcp_flags", 6),
            (38, 1, "protocol", 4),
            (39, 1, "tos", 5),
            (40, 2, "src_as", 16),
            (42, 2, "dst_as", 17),
            (44, 1, "src_mask", 9),
            (45, 1, "dst_mask", 13),
            (46, 1, "in_encaps", None),
            (47, 1, "out_encaps", None),
            (48, 4, "peer_next_hop", 18, IPV4),
        ),
    ),
    record_type=FlowRecordV6,
    max_count=27,
    has_sequence=True,
    has_engine=True,
)
decode = LAYOUT.decode
