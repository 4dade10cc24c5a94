"""NetFlow v6: the v5 header; 52-byte records = v5 plus the encapsulation sizes and the BGP
peer next hop."""

from __future__ import annotations

import struct

from relay.flows.layout import HEADER_24, Layout
from relay.flows.model import FlowRecordV6

LAYOUT = Layout(
    version=6,
    header=HEADER_24,
    # As v5 up to byte 45, then 46 in_encaps, 47 out_encaps, 48 peer_nexthop(4).
    record=struct.Struct("!4s4s4sHHIIIIHHxBBBHHBBBB4s"),
    wire_fields=(
        "src_addr", "dst_addr", "next_hop", "input_if", "output_if", "packets", "bytes",
        "first", "last", "src_port", "dst_port", "tcp_flags", "protocol", "tos",
        "src_as", "dst_as", "src_mask", "dst_mask", "in_encaps", "out_encaps", "peer_next_hop",
    ),
    record_type=FlowRecordV6,
    max_count=27,
    has_sequence=True,
    has_engine=True,
)  # fmt: skip
decode = LAYOUT.decode
