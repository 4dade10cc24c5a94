"""Parse a rendered syslog line back into its parts, the way a receiver would.

RFC 3164 pads a one-digit day of month with a space (``Dec  2``), so a line must never be
split on single spaces: on days 1-9 every field after the date moves one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# SPEC "The syslog line": the 25 common keys in this order, written out here rather than taken
# from the renderer, so that the end-to-end tests hold the product to the contract.
SPEC_COMMON_KEYS = (
    "version", "exporter", "flow_sequence", "engine_type", "engine_id", "sampling_interval",
    "sampling_mode", "first", "last", "src_addr", "dst_addr", "next_hop", "input_if",
    "output_if", "packets", "bytes", "src_port", "dst_port", "protocol", "tcp_flags", "tos",
    "src_as", "dst_as", "src_mask", "dst_mask",
)  # fmt: skip
# A whole line with the default header, PRI and tag: <14>Mmm dd HH:MM:SS HOST netstat.netflow.lt:
DEFAULT_LINE_RE = re.compile(
    r"<14>(?P<stamp>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d) (?P<host>\S+) "
    r"(?P<tag>netstat\.netflow\.lt): (?P<body>\{.*\})"
)
_RFC3164 = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<timestamp>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) "
    r"(?P<host>\S+) (?P<tag>[!-~]+?): (?P<body>.*)",
    re.DOTALL,
)
_RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<host>\S+) (?P<tag>\S+) - - - (?P<body>.*)",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyslogLine:
    header: str  # "rfc3164" or "rfc5424"
    pri: int
    timestamp: str
    host: str
    tag: str
    body: str


def parse_line(line: str | bytes) -> SyslogLine:
    """The parts of one line without its framing; ValueError if it has neither header."""
    text = line.decode() if isinstance(line, bytes) else line
    for header, pattern in (("rfc5424", _RFC5424), ("rfc3164", _RFC3164)):
        m = pattern.fullmatch(text)
        if m:
            return SyslogLine(
                header=header,
                pri=int(m["pri"]),
                timestamp=m["timestamp"],
                host=m["host"],
                tag=m["tag"],
                body=m["body"],
            )
    raise ValueError(f"not a syslog line: {text[:80]!r}")
