"""End to end for NetFlow v9 and IPFIX, all real programs on 127.0.0.1: softflowd and pmacct's
pmacctd (nfprobe) read a dual-stack capture of known flows (``support.known_flows``) and
export v9 or IPFIX, sampled or not, to a ``python -m relay run`` subprocess, which forwards
over mutual TLS to Debian's rsyslogd. Every flow fed must arrive once, every line checked
field by field by its JSON keys, as SPEC "NetFlow v9 (RFC 3954) and IPFIX" / "The line"
gives them: the 25 common keys first in their order, then ``source_id`` /
``observation_domain_id`` (and the interface names the options gave), then the record's
other elements in template order by snake_case IANA name; ``sampling_interval`` /
``sampling_mode`` from the exporter's options.

Which elements each exporter sends, and in which order, is established (and checked on
the wire) by test_exporters_v9.py; the values here are computed from the packets fed.

softflowd runs one case per relay (all its runs share one address and domain). The four
pmacctd cases run at once into one relay, each with its own ``nfprobe_engine`` (Source ID
/ Observation Domain ID 1-4), which keeps their templates and sampling apart.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.exporters import find_binary, run_pmacctd, run_softflowd
from support.known_flows import (
    ICMP_PROTOCOLS,
    Direction,
    FlowKey,
    could_be_sampled,
    directions,
    dual_stack_traffic,
    every_nth,
    write_capture,
)
from support.relayproc import LOOPBACK, RelayProcess, relay_processes, tls_args
from support.rsyslog import Rsyslog, RsyslogFactory
from support.syslog import DEFAULT_LINE_RE

from relay.certs import TlsFiles

SOFTFLOWD = find_binary("softflowd")
PMACCTD = find_binary("pmacctd")
SAMPLING = 4

# Checked on their own: the times (each exporter's precision differs) and the sequence.
APART = ("first", "last", "flow_sequence")


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    exporter: str
    version: int
    sampling: int | None
    domain: int = 0

    def owns(self, body: dict[str, Any]) -> bool:
        """Whether a line is this case's: its version and its exporter's domain."""
        domain_key = "source_id" if self.version == 9 else "observation_domain_id"
        return body["version"] == self.version and body.get(domain_key) == self.domain

    @property
    def name(self) -> str:
        return f"{self.exporter}-v{self.version}{'-sampled' if self.sampling else ''}"


def iso_ms(text: str) -> int:
    """``2026-11-22T12:34:56.789Z`` as UNIX milliseconds (the format is checked exactly)."""
    match = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z", text)
    assert match, f"not ISO-8601 UTC with milliseconds: {text!r}"
    y, mo, d, h, mi, s, ms = map(int, match.groups())
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000 + ms


def sampling_keys(case: Case) -> tuple[int, int]:
    """(sampling_interval, sampling_mode) from the options each exporter sends: softflowd
    always sends them (interval 1 unsampled), deterministic (v9 samplingAlgorithm 1; IPFIX
    selectorAlgorithm 1, interval (305 + 306) / 305); pmacct only when it samples, at
    random (samplerMode 2) for its sampler ID 1, which every record names."""
    if case.exporter == "softflowd":
        return case.sampling or 1, 1
    return (case.sampling, 2) if case.sampling else (0, 0)


def expected_line(case: Case, d: Direction, interface: str) -> list[tuple[str, Any]]:
    """The line's keys and values for ``d``, times and sequence apart, in SPEC's order."""
    icmp = d.protocol in ICMP_PROTOCOLS
    no_ports = icmp and case.exporter == "softflowd"  # its ICMP templates have no 7/11
    interval, mode = sampling_keys(case)
    common: dict[str, Any] = {
        "version": case.version, "exporter": LOOPBACK, "flow_sequence": None,
        "engine_type": 0, "engine_id": 0, "sampling_interval": interval,
        "sampling_mode": mode, "first": None, "last": None, "src_addr": d.src,
        "dst_addr": d.dst, "next_hop": "0.0.0.0" if d.ip_version == 4 else "::",
        "input_if": 0, "output_if": 0, "packets": d.packets, "bytes": d.bytes,
        "src_port": 0 if no_ports else d.src_port, "dst_port": 0 if no_ports else d.dst_port,
        "protocol": d.protocol, "tcp_flags": 0 if icmp else d.tcp_flags, "tos": d.tos,
        "src_as": 0, "dst_as": 0, "src_mask": 0, "dst_mask": 0,
    }  # fmt: skip
    line = list(common.items())
    line.append(("source_id" if case.version == 9 else "observation_domain_id", case.domain))
    if case.exporter == "softflowd":
        if case.version == 9:
            # Its v9 options name interface 0 (scope interface) after the capture file.
            line += [("input_if_name", interface), ("output_if_name", interface)]
        line += [("flow_direction", int(d.reverse)), ("flow_end_reason", 3 if d.closed else 1)]
        if icmp:
            line.append((f"icmp_type_code_ipv{d.ip_version}", d.dst_port))
        line.append(("ip_version", d.ip_version))
    else:
        line += [("ip_version", d.ip_version), ("flow_direction", 0)]
        if case.sampling:
            line.append(("sampler_id", 1))
    return line


def line_key(body: dict[str, Any]) -> FlowKey:
    dport = body["dst_port"]
    for name in ("icmp_type_code_ipv4", "icmp_type_code_ipv6"):
        dport = body.get(name, dport)
    return (body["src_addr"], body["dst_addr"], body["protocol"], body["src_port"], dport)


def check_lines(
    case: Case,
    bodies: Sequence[dict[str, Any]],
    expected: dict[FlowKey, Direction],
    base_ns: int,
    interface: str,
) -> list[str]:
    """Every problem with one case's lines, as readable lines."""
    problems: list[str] = []
    seen: dict[FlowKey, dict[str, Any]] = {}
    offsets: dict[int, list[int]] = {}
    random = case.exporter == "pmacct" and case.sampling
    for body in bodies:
        key = line_key(body)
        if key in seen:
            problems.append(f"{case.name}: {key} arrived twice")
        seen[key] = body
        d = expected.get(key)
        if d is None:
            problems.append(f"{case.name}: a line for no flow fed: {body}")
            continue
        want = expected_line(case, d, interface)
        if [k for k, _ in want] != list(body):
            problems.append(f"{case.name} {key}: keys {list(body)}, SPEC: {[k for k, _ in want]}")
            continue
        counted = ("packets", "bytes", "tcp_flags", "tos") if random else ()
        got = [(k, v) for k, v in body.items() if k not in APART + counted]
        if got != [(k, v) for k, v in want if k not in APART + counted]:
            diff = {k: (v, w) for (k, v), (_, w) in zip(body.items(), want, strict=True)
                    if v != w and k not in APART + counted}  # fmt: skip
            problems.append(f"{case.name} {key}: (line, fed) differ: {diff}")
        first, last = iso_ms(body["first"]), iso_ms(body["last"])
        if random:
            problems += could_be_sampled(d, base_ns, packets=body["packets"],
                                         octets=body["bytes"], tcp_flags=body["tcp_flags"],
                                         first_ms=first, last_ms=last)  # fmt: skip
            if body["tos"] not in {0, d.sent[0].tos if d.ip_version == 4 else 0}:
                problems.append(f"{case.name} {key}: tos {body['tos']} was never sent")
        elif case.exporter == "softflowd" and case.version == 9:
            # The v9 header has whole seconds only: up to 1 s early, the same in a datagram.
            for got_ms, want_ms in ((first, d.first_ms), (last, d.last_ms)):
                if not want_ms - 1001 <= got_ms <= want_ms + 1:
                    problems.append(f"{case.name} {key}: {got_ms - want_ms} ms off")
                offsets.setdefault(body["flow_sequence"], []).append(got_ms - want_ms)
        else:
            slack = 1 if case.exporter == "softflowd" else 0  # uptime ms vs absolute ms
            if abs(first - d.first_ms) > slack or abs(last - d.last_ms) > slack:
                problems.append(f"{case.name} {key}: times {body['first']} {body['last']}, "
                                f"fed {d.first_ms} {d.last_ms}")  # fmt: skip
    problems += [f"{case.name}: {o} ms apart in one datagram" for o in offsets.values()
                 if max(o) - min(o) > 2]  # fmt: skip
    if not random:
        problems += [f"{case.name}: {k} never arrived" for k in expected.keys() - seen.keys()]
    elif not seen:
        problems.append(f"{case.name}: not one sampled flow arrived")
    problems += check_sequence(case, [b["flow_sequence"] for b in bodies])
    return problems


def check_sequence(case: Case, sequences: Sequence[int]) -> list[str]:
    """v9 numbers datagrams from 1; IPFIX counts records: softflowd up to the end of the
    message, pmacct before it (and options records too)."""
    per_value = {s: sequences.count(s) for s in sorted(set(sequences))}
    values = list(per_value)
    if case.version == 9:
        ok = values == list(range(1, len(values) + 1))
    elif case.exporter == "softflowd":
        ok = all(s == sum(n for v, n in per_value.items() if v <= s) for s in values)
    else:
        ok = values[0] == 0 and all(
            s >= sum(n for v, n in per_value.items() if v < s) for s in values
        )
    return [] if ok else [f"{case.name}: flow_sequence values {per_value}"]


@contextmanager
def relay_to_rsyslog(
    tmp_path: Path, platform: Rsyslog, tls_client: TlsFiles
) -> Iterator[RelayProcess]:
    with relay_processes() as made:
        relay = RelayProcess(
            ["--listen", f"{LOOPBACK}:0", "--endpoint", f"{LOOPBACK}:{platform.port}",
             *tls_args(ca=tls_client.ca, cert=tls_client.cert, key=tls_client.key),
             "--spool", str(tmp_path / "spool"), "--metrics", f"{LOOPBACK}:0"],
            tmp_path / "relay.log",
        )  # fmt: skip
        made.append(relay)
        relay.start()
        yield relay


def settle(relay: RelayProcess, platform: Rsyslog, *, at_least: int, exact: bool) -> list[str]:
    """Wait for the platform to have ``at_least`` lines and (unless ``exact``, for random
    samples) for the relay to have forwarded no more than that for half a second; stop the
    relay and give the raw lines, each checked for the RFC 3164 header. The exporters have
    exited by now, so everything they sent is in the relay's socket already."""
    platform.wait_lines_blocking(at_least, timeout=20)
    # The platform has them all, so the relay has forwarded at least as many (wait_metric
    # waits for an exact value: right only where the count is known).
    scraped = (
        relay.wait_metric("flowrelay_lines_forwarded_total", at_least, timeout=5)
        if exact
        else relay.scrape()
    )
    deadline = time.monotonic() + 10
    quiet_since = time.monotonic()
    count = len(platform.lines())
    while not exact and time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:
        time.sleep(0.1)
        scraped = relay.scrape()
        now = max(len(platform.lines()), int(scraped.value("flowrelay_lines_forwarded_total")))
        if now != count:
            count, quiet_since = now, time.monotonic()
    assert scraped.total("flowrelay_packets_malformed_total") == 0
    assert relay.terminate(timeout=15) == 0, relay.log_tail()
    time.sleep(0.3)  # anything extra (a duplicate) would have been written by now
    raw = platform.lines()
    for line in raw:
        match = DEFAULT_LINE_RE.fullmatch(line)
        assert match, f"not <14>Mmm dd HH:MM:SS HOST netstat.netflow.lt: {{...}}: {line!r}"
        assert match["host"] == LOOPBACK
    return raw


def capture_now(tmp_path: Path) -> tuple[Path, int]:
    # An hour ago: softflowd's uptime-relative times wrap below 2^32, the relay must undo it.
    base_ns = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000 + 123_456_789
    return write_capture(tmp_path / "fed.pcap", dual_stack_traffic(), base_ns), base_ns


@pytest.mark.skipif(
    SOFTFLOWD is None, reason="softflowd is not installed (apt-get install softflowd)"
)
@pytest.mark.parametrize("sampling", [None, SAMPLING], ids=["all", "sampled"])
@pytest.mark.parametrize("version", [9, 10])
def test_softflowd_v9_and_ipfix_reach_rsyslog_field_by_field(
    version: int,
    sampling: int | None,
    tmp_path: Path,
    rsyslog_factory: RsyslogFactory,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
) -> None:
    assert SOFTFLOWD is not None
    case = Case(exporter="softflowd", version=version, sampling=sampling)
    capture, base_ns = capture_now(tmp_path)
    pkts = dual_stack_traffic()
    expected = directions(every_nth(pkts, sampling) if sampling else pkts, base_ns)
    platform = rsyslog_factory(tls_server)  # mutual TLS: the relay must present its cert
    with relay_to_rsyslog(tmp_path, platform, tls_client) as relay:
        run = run_softflowd(SOFTFLOWD, capture, (LOOPBACK, relay.udp_port), version=version,
                            sampling=sampling)  # fmt: skip
        assert run.returncode == 0, run.stderr
        raw = settle(relay, platform, at_least=len(expected), exact=True)
    assert len(raw) == len(expected), platform.diagnostics()
    bodies = [json.loads(m.body) for m in platform.messages()]
    problems = check_lines(case, bodies, expected, base_ns, str(capture)[:16])
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(PMACCTD is None, reason="pmacctd is not installed (apt-get install pmacct)")
def test_pmacct_v9_and_ipfix_sampled_or_not_reach_rsyslog_field_by_field(
    tmp_path: Path,
    rsyslog_factory: RsyslogFactory,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
) -> None:
    assert PMACCTD is not None
    cases = [
        Case(exporter="pmacct", version=9, sampling=None, domain=1),
        Case(exporter="pmacct", version=10, sampling=None, domain=2),
        Case(exporter="pmacct", version=9, sampling=SAMPLING, domain=3),
        Case(exporter="pmacct", version=10, sampling=SAMPLING, domain=4),
    ]
    capture, base_ns = capture_now(tmp_path)
    expected = directions(dual_stack_traffic(), base_ns)
    platform = rsyslog_factory(tls_server)
    with relay_to_rsyslog(tmp_path, platform, tls_client) as relay:

        def run(case: Case) -> None:
            assert PMACCTD is not None
            done = run_pmacctd(PMACCTD, capture, (LOOPBACK, relay.udp_port),
                               version=case.version, config_dir=tmp_path,
                               sampling_rate=case.sampling, engine=case.domain)  # fmt: skip
            assert done.finished, done.log

        with ThreadPoolExecutor(len(cases)) as pool:
            list(pool.map(run, cases))
        # The unsampled cases give 2 x 17 lines; the sampled ones a random number more.
        settle(relay, platform, at_least=2 * len(expected), exact=False)
    bodies = [json.loads(m.body) for m in platform.messages()]
    problems: list[str] = []
    for case in cases:
        problems += check_lines(case, [b for b in bodies if case.owns(b)], expected, base_ns, "")
    problems += [f"a line of no case: {b}" for b in bodies if not any(c.owns(b) for c in cases)]
    assert not problems, "\n".join(problems)
