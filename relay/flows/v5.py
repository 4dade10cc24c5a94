"""NetFlow v5: 24-byte header with sequence, engine and sampling; 48-byte records."""

from __future__ import annotations

import struct

from relay.flows.layout import HEADER_24, Layout
from relay.flows.model import FlowRecord

LAYOUT = Layout(
    version=5,
    header=HEADER_24,
    # 0 srcaddr, 4 dstaddr, 8 nexthop, 12 input, 14 output, 16 dPkts, 20 dOctets,
    # 24 First, 28 Last, 32 srcport, 34 dstport, 36 pad1, 37 tcp_flags, 38 prot, 39 tos,
    # 40 src_as, 42 dst_as, 44 src_mask, 45 dst_mask, 46 pad2(2)
    record=struct.Struct("!4s4s4sHHIIIIHHxBBBHHBB2x"),
    wire_fields=(
        "src_addr", "dst_addr", "next_hop", "input_if", "output_if", "packets", "bytes",
        "first", "last", "src_port", "dst_port", "tcp_flags", "protocol", "tos",
        "src_as", "dst_as", "src_mask", "dst_mask",
    ),
    record_type=FlowRecord,
    max_count=30,
    has_sequence=True,
    has_engine=True,
)  # fmt: skip
decode = LAYOUT.decode
