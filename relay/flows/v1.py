"""NetFlow v1: 16-byte header (no sequence, engine or sampling), 48-byte records."""

from __future__ import annotations

import struct

from relay.flows.layout import HEADER_16, Layout
from relay.flows.model import FlowRecord

LAYOUT = Layout(
    version=1,
    header=HEADER_16,
    # 0 srcaddr, 4 dstaddr, 8 nexthop, 12 input, 14 output, 16 dPkts, 20 dOctets,
    # 24 First, 28 Last, 32 srcport, 34 dstport, 36 pad(2), 38 prot, 39 tos, 40 flags,
    # 41 pad(1), 42 pad(2), 44 reserved(4). v1 has no AS numbers or masks: they read as 0.
    record=struct.Struct("!4s4s4sHHIIIIHH2xBBB7x"),
    wire_fields=(
        "src_addr", "dst_addr", "next_hop", "input_if", "output_if", "packets", "bytes",
        "first", "last", "src_port", "dst_port", "protocol", "tos", "tcp_flags",
    ),
    record_type=FlowRecord,
    max_count=24,
    has_sequence=False,
    has_engine=False,
)  # fmt: skip
decode = LAYOUT.decode
