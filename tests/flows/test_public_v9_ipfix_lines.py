"""The public v9/IPFIX captures through the daemon's own path (Ingest: template decoder,
options, holding, renderer), line by line against their reference decodes.

``test_public_v9_ipfix`` checks the decoded values element by element; this one checks what
the platform receives: one line per data record (options records are applied, not
forwarded), the 25 common keys first and in order, the common keys filled from the reference's
elements, and nothing dropped but what the reference itself calls undecodable.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from support.syslog import parse_line

from flows.test_public_v9_ipfix import REFUSED_TEMPLATES, SESSIONS
from relay.allow import AllowList
from relay.ingest import Ingest
from relay.metrics import RelayMetrics
from relay.render import Renderer
from relay.render.keys import COMMON_KEYS

pytestmark = pytest.mark.skipif(not SESSIONS, reason="no v9/IPFIX samples in ../shared")

# Common key -> the reference's element that fills it when the record has it (IPv4, IPv6).
FILLED_BY = {
    "src_addr": ("8", "27"), "dst_addr": ("12", "28"), "input_if": ("10",),
    "output_if": ("14",), "src_port": ("7",), "dst_port": ("11",), "protocol": ("4",),
    "tcp_flags": ("6",), "tos": ("5",), "src_as": ("16",), "dst_as": ("17",),
    "packets": ("2", "86"), "bytes": ("1", "85"),
}  # fmt: skip


def expected_records(session: str) -> list[dict[str, Any]]:
    out = []
    for path in SESSIONS[session]:
        ref = json.loads(path.with_suffix(".json").read_text())
        out += [r["fields"] for r in ref["records"] if r["kind"] != "options"]
    return out


@pytest.mark.parametrize("session", sorted(SESSIONS))
def test_a_public_session_becomes_one_line_per_data_record(session: str) -> None:
    paths = SESSIONS[session]
    clock = {"now": 0.0}
    metrics = RelayMetrics()
    relay = Ingest(
        renderer=Renderer(),
        allow=AllowList([ipaddress.ip_network("0.0.0.0/0")]),
        metrics=metrics,
        clock=lambda: clock["now"],
        wall_clock=lambda: 1_800_000_000.0 + clock["now"],
    )
    lines: list[bytes] = []
    for path in paths:
        lines += relay.process(path.read_bytes(), "192.0.2.44", 2055)
        clock["now"] += 0.01
    bodies = [json.loads(parse_line(line.decode()).body) for line in lines]
    expected = [] if session in REFUSED_TEMPLATES else expected_records(session)
    assert len(bodies) == len(expected)
    for body, fields in zip(bodies, expected, strict=True):
        assert tuple(body)[: len(COMMON_KEYS)] == COMMON_KEYS
        for key, elements in FILLED_BY.items():
            present = [fields[e] for e in elements if e in fields]
            if present:
                want = present[0]
                if key in ("src_addr", "dst_addr"):
                    want = str(ipaddress.ip_address(want))
                assert body[key] == want, (session, key)
    assert metrics.packets_malformed.values == {}
