"""NetFlow v7 (Catalyst switches): v5 header with 4 reserved bytes instead of engine and
sampling; 52-byte records = v5 with flags1 where v5 pads, flags2 and the shortcut router."""

from __future__ import annotations

import struct

from relay.flows.layout import HEADER_24, Layout
from relay.flows.model import FlowRecordV7

LAYOUT = Layout(
    version=7,
    header=HEADER_24,
    # As v5 but 36 flags1 (was pad1), 46 flags2(2) (was pad2), 48 router_sc(4).
    record=struct.Struct("!4s4s4sHHIIIIHHBBBBHHBBH4s"),
    wire_fields=(
        "src_addr", "dst_addr", "next_hop", "input_if", "output_if", "packets", "bytes",
        "first", "last", "src_port", "dst_port", "flags1", "tcp_flags", "protocol", "tos",
        "src_as", "dst_as", "src_mask", "dst_mask", "flags2", "router_sc",
    ),
    record_type=FlowRecordV7,
    max_count=27,
    has_sequence=True,
    has_engine=False,
)  # fmt: skip
decode = LAYOUT.decode
