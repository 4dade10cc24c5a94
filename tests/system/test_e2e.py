"""End to end, all real programs on 127.0.0.1: softflowd reads a capture this test writes and
exports NetFlow v5 to a ``python -m relay run`` subprocess, which forwards over mutual TLS to
Debian's rsyslogd. Every flow fed must arrive once, field for field, as rsyslog parsed it:
tag ``netstat.netflow.lt``, HOST the exporter's address, the JSON body in the contract's key
order. Both wire framings are run.
"""

from __future__ import annotations

import calendar
import json
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.exporters import find_binary, run_softflowd
from support.pcapgen import (
    ACK,
    FIN,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    PSH,
    SYN,
    Captured,
    icmp,
    link_frame,
    pcap_bytes,
    tcp,
    udp,
)
from support.relayproc import LOOPBACK, RelayProcess, relay_processes, tls_args
from support.rsyslog import RsyslogFactory
from support.syslog import DEFAULT_LINE_RE, SPEC_COMMON_KEYS

from relay.certs import TlsFiles

SOFTFLOWD = find_binary("softflowd")
pytestmark = pytest.mark.skipif(
    SOFTFLOWD is None, reason="softflowd is not installed (apt-get install softflowd)"
)

# softflowd keeps First, Last and SysUptime as truncated millisecond offsets from its start and
# the export time separately, so a decoded absolute time may be 1 ms off the packet's time.
TIME_TOLERANCE_MS = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Pkt:
    """One packet of the capture. For ICMP, ``sport``/``dport`` hold type and code."""

    at_us: int
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    flags: int = 0
    payload: int = 0
    tos: int = 0

    def packet(self) -> bytes:
        data = bytes(i % 251 for i in range(self.payload))
        if self.proto == PROTO_TCP:
            return tcp(self.src, self.dst, self.sport, self.dport, self.flags, data, tos=self.tos)
        if self.proto == PROTO_UDP:
            return udp(self.src, self.dst, self.sport, self.dport, data, tos=self.tos)
        return icmp(self.src, self.dst, self.sport, self.dport, data, tos=self.tos)

    def ports(self) -> tuple[int, int]:
        """As softflowd (and Cisco) report them: ICMP type*256+code in the destination port."""
        if self.proto == PROTO_ICMP:
            return 0, self.sport * 256 + self.dport
        return self.sport, self.dport


def traffic() -> list[Pkt]:
    """A TCP conversation (flags both ways), a DNS exchange, a one-way marked UDP stream, ICMP
    echo requests and replies, and 30 one-packet flows, so the export takes two datagrams."""
    client, server = ("10.1.1.10", 49152), ("192.0.2.80", 80)
    script = [
        (0, True, SYN, 0),
        (12_345, False, SYN | ACK, 0),
        (12_500, True, ACK, 0),
        (13_001, True, PSH | ACK, 300),
        (41_003, False, PSH | ACK, 1200),
        (50_005, True, ACK, 0),
        (1_234_567, True, FIN | ACK, 0),
        (1_235_001, False, FIN | ACK, 0),
    ]
    pkts = []
    for at, from_client, flags, size in script:
        a, b = (client, server) if from_client else (server, client)
        pkts.append(
            Pkt(
                at_us=at,
                src=a[0],
                dst=b[0],
                proto=PROTO_TCP,
                sport=a[1],
                dport=b[1],
                flags=flags,
                payload=size,
                tos=0x10 if from_client else 0,
            )
        )
    pkts.append(Pkt(at_us=300_100, src="10.1.1.12", dst="192.0.2.53", proto=PROTO_UDP,
                    sport=53001, dport=53, payload=40))  # fmt: skip
    pkts.append(Pkt(at_us=309_976, src="192.0.2.53", dst="10.1.1.12", proto=PROTO_UDP,
                    sport=53, dport=53001, payload=120))  # fmt: skip
    pkts += [
        Pkt(at_us=400_000 + 20_000 * i, src="10.1.1.13", dst="198.51.100.7", proto=PROTO_UDP,
            sport=5004, dport=5004, payload=172, tos=0xB8)
        for i in range(20)
    ]  # fmt: skip
    for i in range(3):
        at = 500_000 + 1_000_000 * i
        pkts.append(Pkt(at_us=at, src="10.1.1.14", dst="192.0.2.1", proto=PROTO_ICMP,
                        sport=8, dport=0, payload=56))  # fmt: skip
        pkts.append(Pkt(at_us=at + 3_210, src="192.0.2.1", dst="10.1.1.14", proto=PROTO_ICMP,
                        sport=0, dport=0, payload=56))  # fmt: skip
    pkts += [
        Pkt(at_us=3_000_000 + i * 777, src="10.2.0.1", dst=f"10.3.0.{i + 1}", proto=PROTO_UDP,
            sport=20_000 + i, dport=53, payload=i)
        for i in range(30)
    ]  # fmt: skip
    return sorted(pkts, key=lambda p: p.at_us)


FlowKey = tuple[str, int, str, int, int]


def expected_records(pkts: Sequence[Pkt], base_ns: int) -> dict[FlowKey, dict[str, object]]:
    """What softflowd exports: one record per direction of a conversation, with that
    direction's packets, IP bytes, OR of TCP flags and first TOS, and the conversation's
    First/Last (as UNIX ms)."""
    conversations: dict[tuple[int, frozenset[tuple[str, int]]], list[Pkt]] = {}
    for p in pkts:
        sport, dport = p.ports()
        key = (p.proto, frozenset({(p.src, sport), (p.dst, dport)}))
        conversations.setdefault(key, []).append(p)
    out: dict[FlowKey, dict[str, object]] = {}
    for group in conversations.values():
        first = (base_ns + min(p.at_us for p in group) * 1000) // 1_000_000
        last = (base_ns + max(p.at_us for p in group) * 1000) // 1_000_000
        directions: dict[FlowKey, list[Pkt]] = {}
        for p in group:
            sport, dport = p.ports()
            directions.setdefault((p.src, sport, p.dst, dport, p.proto), []).append(p)
        for (src, sport, dst, dport, proto), mine in directions.items():
            flags = 0
            for p in mine:
                flags |= p.flags
            out[(src, sport, dst, dport, proto)] = {
                "first_ms": first,
                "last_ms": last,
                "packets": len(mine),
                "bytes": sum(len(p.packet()) for p in mine),
                "tcp_flags": flags,
                "tos": mine[0].tos,
            }
    return out


def iso_ms(text: str) -> int:
    """``2026-11-22T12:34:56.789Z`` as UNIX milliseconds (the format is checked exactly)."""
    match = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z", text)
    assert match, f"not ISO-8601 UTC with milliseconds: {text!r}"
    y, mo, d, h, mi, s, ms = map(int, match.groups())
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000 + ms


def rfc3164_age(stamp: str, now: float) -> float:
    """Seconds between an RFC 3164 timestamp (no year, UTC here) and ``now``."""
    year = time.gmtime(now).tm_year
    ages = []
    for y in (year - 1, year, year + 1):
        parsed = time.strptime(f"{y} {stamp}", "%Y %b %d %H:%M:%S")
        ages.append(abs(now - calendar.timegm(parsed)))
    return min(ages)


@pytest.mark.parametrize("framing", ["newline", "octet-counting"])
def test_softflowd_to_rsyslog_over_mutual_tls(
    framing: str,
    tmp_path: Path,
    rsyslog_factory: RsyslogFactory,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
) -> None:
    assert SOFTFLOWD is not None
    # softflowd, reading a file, measures packet times from its own start, so a capture from
    # an hour ago puts First/Last across the 32-bit uptime wrap, which the relay must undo.
    base_ns = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000 + 123_456_789
    pkts = traffic()
    capture = tmp_path / "flows.pcap"
    capture.write_bytes(
        pcap_bytes(
            Captured(timestamp_ns=base_ns + p.at_us * 1000, data=link_frame(p.packet()))
            for p in pkts
        )
    )
    expected = expected_records(pkts, base_ns)

    platform = rsyslog_factory(tls_server)  # mutual TLS: the relay must present its cert
    with relay_processes() as made:
        relay = RelayProcess(
            [
                "--listen",
                f"{LOOPBACK}:0",
                "--endpoint",
                f"{LOOPBACK}:{platform.port}",
                *tls_args(ca=tls_client.ca, cert=tls_client.cert, key=tls_client.key),
                "--spool",
                str(tmp_path / "spool"),
                "--metrics",
                f"{LOOPBACK}:0",
                "--framing",
                framing,
            ],
            tmp_path / "relay.log",
        )
        made.append(relay)
        relay.start()
        run = run_softflowd(SOFTFLOWD, capture, (LOOPBACK, relay.udp_port), version=5)
        assert run.returncode == 0, run.stderr
        platform.wait_lines_blocking(len(expected), timeout=15)
        # The platform has the lines; the relay learns of it from TCP acknowledgements.
        scraped = relay.wait_metric("flowrelay_lines_forwarded_total", len(expected), timeout=5)
        assert relay.terminate(timeout=15) == 0, relay.log_tail()
    time.sleep(0.3)  # anything extra (a duplicate) would have been written by now

    assert scraped.value("flowrelay_records_decoded_total") == len(expected)
    assert scraped.value("flowrelay_packets_received_total", version="5") == 2
    assert scraped.total("flowrelay_packets_malformed_total") == 0
    assert scraped.value("flowrelay_flows_lost_total") == 0
    assert scraped.value("flowrelay_lines_forwarded_total") == len(expected)

    raw = platform.lines()
    messages = platform.messages()
    assert len(raw) == len(messages) == len(expected), platform.diagnostics()
    now = time.time()
    for line in raw:
        match = DEFAULT_LINE_RE.fullmatch(line)
        assert match, f"not <14>Mmm dd HH:MM:SS HOST netstat.netflow.lt: {{...}}: {line!r}"
        assert match["host"] == LOOPBACK
        # The header carries the export time: softflowd exported moments ago.
        assert rfc3164_age(match["stamp"], now) < 120, line

    problems: list[str] = []
    seen: dict[FlowKey, int] = {}
    sequences: dict[int, int] = {}
    for msg in messages:
        assert msg.pri == 14
        assert msg.hostname == LOOPBACK
        assert msg.tag == "netstat.netflow.lt:"
        assert msg.programname == "netstat.netflow.lt"
        body = json.loads(msg.body)
        assert tuple(body) == SPEC_COMMON_KEYS, f"keys or their order differ: {tuple(body)}"
        assert body["version"] == 5
        assert body["exporter"] == LOOPBACK
        assert (body["sampling_interval"], body["sampling_mode"]) == (0, 0)
        for name in ("next_hop",):
            assert body[name] == "0.0.0.0"
        for name in ("input_if", "output_if", "src_as", "dst_as", "src_mask", "dst_mask"):
            assert body[name] == 0, (name, body)
        sequences[body["flow_sequence"]] = sequences.get(body["flow_sequence"], 0) + 1
        key = (body["src_addr"], body["src_port"], body["dst_addr"], body["dst_port"],
               body["protocol"])  # fmt: skip
        seen[key] = seen.get(key, 0) + 1
        want = expected.get(key)
        if want is None:
            problems.append(f"unexpected record {key}: {body}")
            continue
        got = {name: body[name] for name in ("packets", "bytes", "tcp_flags", "tos")}
        if got != {name: want[name] for name in got}:
            problems.append(f"{key}: got {got}, fed {want}")
        for name in ("first", "last"):
            ms = iso_ms(body[name])
            fed = want[f"{name}_ms"]
            assert isinstance(fed, int)
            if abs(ms - fed) > TIME_TOLERANCE_MS:
                problems.append(f"{key}: {name} {body[name]} is {ms - fed} ms off what was fed")
    problems += [f"{key} arrived {n} times" for key, n in seen.items() if n != 1]
    problems += [f"{key} never arrived" for key in expected.keys() - seen.keys()]
    assert not problems, "\n".join(problems)
    # Two datagrams; the second's flow_sequence follows the first's records.
    (s0, n0), (s1, _) = sorted(sequences.items())
    assert s1 == s0 + n0
    # The relay said why it stopped, and left nothing behind.
    (stopped,) = relay.events("stopped")
    assert stopped["pending_lines"] == 0
    assert relay.events("signal")[0]["signal"] == signal.Signals.SIGTERM.name
