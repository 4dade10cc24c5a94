"""Real NetFlow v9 and IPFIX exporters from Debian against the v9/IPFIX decoder.

softflowd (``-v 9``, ``-v 10``, each also with ``-s 4`` sampling) and pmacct's pmacctd with
its nfprobe plugin (``nfprobe_version: 9`` / ``10``, each also with ``sampling_rate: 4``)
read a capture this test writes (``support.known_flows``: IPv4 and IPv6 TCP, UDP and ICMP
flows) and export to a UDP socket on 127.0.0.1 the test owns. The datagrams are cut with
``relay.flows.messages.parse``, templates from earlier datagrams kept in a plain dict (the
real template cache is not this module's), and the data sets decoded with
``relay.flows.records``. Then:

- the templates and options templates are the ones each exporter sends (written out below,
  so a new exporter release that changes them is noticed, not silently passed);
- the options records say what the run was (sampling interval and algorithm, softflowd's
  pid and start time, the capture's name as the interface);
- every data record equals, field by field, what the fed packets give (addresses, ports or
  ICMP type and code, protocol, packets, bytes, TCP flags, TOS, direction, end reason,
  times); pmacct samples at random, so a sampled pmacct record is checked to be what some
  subset of its direction's packets gives.

What each exporter really sends, found by running them (softflowd 1.1.0, pmacct 1.7.7):
- softflowd: times as flowStart/EndSysUpTime (22/21) in both v9 and IPFIX, against its own
  start, so a capture from the past wraps below 2^32; the v9 header's export time has whole
  seconds only, so a v9 absolute time is up to one second early; IPFIX gives its start as
  systemInitTimeMilliseconds (160) in an options record. flowDirection (61) is 1 when the
  source address sorts after the destination. Its IPFIX sequence number counts the data
  records of the message itself too (RFC 7011 §3.1 says: those before it).
- pmacct: absolute flowStart/EndMilliseconds (152/153), 8-byte counters, ICMP type and code
  in the destination port; options (sampler 48/49/50) only when sampling.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.exporters import UdpCollector, find_binary, run_pmacctd, run_softflowd
from support.known_flows import (
    ICMP_PROTOCOLS,
    Direction,
    FlowKey,
    Sent,
    could_be_sampled,
    directions,
    dual_stack_traffic,
    every_nth,
    write_capture,
)

from relay.errors import DecodeError
from relay.flows import messages
from relay.flows.elements import Value
from relay.flows.model import Message, PacketHeader
from relay.flows.records import decode_records, plan_for
from relay.flows.template import Template

SOFTFLOWD = find_binary("softflowd")
PMACCTD = find_binary("pmacctd")
SAMPLING = 4

needs_softflowd = pytest.mark.skipif(
    SOFTFLOWD is None, reason="softflowd is not installed (apt-get install softflowd)"
)
needs_pmacctd = pytest.mark.skipif(
    PMACCTD is None, reason="pmacctd is not installed (apt-get install pmacct)"
)

Fields = list[tuple[int, int]]


# softflowd 1.1.0: IPv4 (1024: TCP/UDP, 1025: ICMP) and IPv6 (2048, 2049) data templates,
# the same in v9 and IPFIX; one options template, 256, whose scope is its first field.
_SF_TAIL = [(22, 4), (21, 4), (1, 4), (2, 4), (10, 4), (14, 4), (61, 1), (136, 1)]
_SF_PORTS = [(7, 2), (11, 2), (4, 1), (6, 1), (60, 1), (5, 1)]
SOFTFLOWD_TEMPLATES: dict[int, Fields] = {
    1024: [(8, 4), (12, 4), *_SF_TAIL, *_SF_PORTS],
    1025: [(8, 4), (12, 4), *_SF_TAIL, (32, 2), (4, 1), (60, 1), (5, 1)],
    2048: [(27, 16), (28, 16), *_SF_TAIL, *_SF_PORTS],
    2049: [(27, 16), (28, 16), *_SF_TAIL, (139, 2), (4, 1), (60, 1), (5, 1)],
}
SOFTFLOWD_OPTIONS = {
    9: [(2, 4), (34, 4), (35, 1), (82, 16)],
    10: [(143, 4), (160, 8), (305, 4), (306, 4), (304, 2), (82, 16)],
}
# pmacct 1.7.7: 1024 and 1025 are the same IPv4 template, 2048 and 2049 the same IPv6 one;
# sampling adds samplerId (48) to each and an options template 4096 (scope: v9 System, IPFIX
# exportingProcessId).
_PM_HEAD = [(153, 8), (152, 8), (1, 8), (2, 8), (60, 1), (10, 4), (14, 4), (61, 1)]
_PM_V4 = [*_PM_HEAD, (8, 4), (12, 4), (7, 2), (11, 2), (5, 1), (6, 1), (4, 1)]
_PM_V6 = [*_PM_HEAD, (27, 16), (28, 16), (5, 1), (7, 2), (11, 2), (6, 1), (4, 1)]
PMACCT_OPTIONS = {9: [(1, 4), (48, 1), (49, 1), (50, 4)], 10: [(144, 4), (48, 1), (49, 1), (50, 4)]}


def pmacct_templates(sampled: bool) -> dict[int, Fields]:
    extra = [(48, 1)] if sampled else []
    v4, v6 = _PM_V4 + extra, _PM_V6 + extra
    return {1024: v4, 1025: v4, 2048: v6, 2049: v6}


@dataclass(frozen=True, slots=True, kw_only=True)
class Decoded:
    """One record, as the decoder gave it, with the datagram it came in."""

    index: int  # of the datagram
    header: PacketHeader
    template: Template
    values: dict[str, Value]


@dataclass(frozen=True, slots=True, kw_only=True)
class Export:
    version: int
    base_ns: int
    capture: Path
    started_ns: int
    finished_ns: int
    pid: int
    sent: list[Message]
    flows: list[Decoded]
    options: list[Decoded]


def decode_export(payloads: Sequence[bytes]) -> tuple[list[Message], list[Decoded], list[Decoded]]:
    """Every datagram in order; templates first seen in an earlier datagram serve the later
    ones (keyed by domain and template ID, as a collector scopes them for one exporter).
    Any decode error, problem, warning or data set without a known template fails."""
    known: dict[tuple[int, int], Template] = {}
    sent: list[Message] = []
    flows: list[Decoded] = []
    options: list[Decoded] = []
    for n, payload in enumerate(payloads):
        try:
            message = messages.parse(payload)
        except DecodeError as exc:
            pytest.fail(f"datagram {n}: {exc.reason}: {exc}; {payload[:64].hex()}")
        assert (message.problems, message.warnings, message.withdrawals) == ((), (), ()), n
        assert message.trailing_bytes == 0, n
        sent.append(message)
        domain = message.header.domain
        for template in message.templates:
            known[(domain, template.template_id)] = template
        for data_set in message.data_sets:
            used = known.get((domain, data_set.template_id))
            assert used is not None, f"datagram {n}: no template {data_set.template_id}"
            plan = plan_for(used, message.header.version)
            records, problems = decode_records(plan, data_set.data, part=data_set.part)
            assert problems == (), f"datagram {n}: {problems}"
            out = options if used.options else flows
            out += [
                Decoded(index=n, header=message.header, template=used,
                        values=dict(zip(plan.keys, record, strict=True)))
                for record in records
            ]  # fmt: skip
    return sent, flows, options


def export(
    tmp_path: Path, exporter: str, version: int, sampling: int | None
) -> tuple[Export, list[Sent]]:
    pkts = dual_stack_traffic()
    # softflowd measures packet times against its own start; a capture dated an hour ago
    # makes its uptime-relative times wrap below 2^32 (within 49.7 days the wrap is undone).
    base_ns = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000 + 123_456_789
    capture = write_capture(tmp_path / "fed.pcap", pkts, base_ns)
    with UdpCollector() as collector:
        if exporter == "softflowd":
            assert SOFTFLOWD is not None
            run = run_softflowd(SOFTFLOWD, capture, collector.address, version=version,
                                sampling=sampling)  # fmt: skip
            assert run.returncode == 0, f"softflowd failed: {run.stderr}{run.stdout}"
            started, finished, pid = run.started_ns, run.finished_ns, run.pid
        else:
            assert PMACCTD is not None
            pm = run_pmacctd(PMACCTD, capture, collector.address, version=version,
                             config_dir=tmp_path, sampling_rate=sampling)  # fmt: skip
            assert pm.finished, f"pmacctd failed: {pm.log}"
            started, finished, pid = pm.started_ns, pm.finished_ns, 0
        # Both have sent everything before they exit; the socket buffer holds it.
        received = collector.receive(until_idle=0.3, deadline=time.monotonic() + 5)
    assert received, f"{exporter} sent nothing"
    sent, flows, options = decode_export([r.payload for r in received])
    result = Export(
        version=version, base_ns=base_ns, capture=capture, started_ns=started,
        finished_ns=finished, pid=pid, sent=sent, flows=flows, options=options,
    )  # fmt: skip
    return result, pkts


def flow_key(values: dict[str, Value]) -> FlowKey:
    def get(*names: str) -> Value:
        return next((values[n] for n in names if n in values), 0)

    protocol = values["protocol_identifier"]
    dport = get("destination_transport_port", "icmp_type_code_ipv4", "icmp_type_code_ipv6")
    return (
        str(get("source_ipv4_address", "source_ipv6_address")),
        str(get("destination_ipv4_address", "destination_ipv6_address")),
        int(protocol), int(get("source_transport_port")), int(dport),
    )  # fmt: skip


def addresses(d: Direction) -> dict[str, Value]:
    family = "ipv4" if d.ip_version == 4 else "ipv6"
    return {f"source_{family}_address": d.src, f"destination_{family}_address": d.dst}


def softflowd_values(d: Direction) -> dict[str, Value]:
    """A softflowd record for ``d``, times apart, from the traffic."""
    out: dict[str, Value] = {
        **addresses(d), "octet_delta_count": d.bytes, "packet_delta_count": d.packets,
        "ingress_interface": 0, "egress_interface": 0, "flow_direction": int(d.reverse),
        "flow_end_reason": 3 if d.closed else 1,  # end of flow detected, else idle timeout
    }  # fmt: skip
    if d.protocol in ICMP_PROTOCOLS:
        out[f"icmp_type_code_ipv{d.ip_version}"] = d.dst_port
    else:
        out |= {"source_transport_port": d.src_port, "destination_transport_port": d.dst_port}
    out["protocol_identifier"] = d.protocol
    if d.protocol not in ICMP_PROTOCOLS:
        out["tcp_control_bits"] = d.tcp_flags
    return out | {"ip_version": d.ip_version, "ip_class_of_service": d.tos}


def pmacct_values(d: Direction, *, sampled: bool) -> dict[str, Value]:
    """A pmacct record for ``d``, times and counters apart, from the traffic."""
    out: dict[str, Value] = {
        "ip_version": d.ip_version, "ingress_interface": 0, "egress_interface": 0,
        "flow_direction": 0, **addresses(d), "source_transport_port": d.src_port,
        "destination_transport_port": d.dst_port, "protocol_identifier": d.protocol,
    }  # fmt: skip
    return out | ({"sampler_id": 1} if sampled else {})


def signed32(value: int) -> int:
    return value - (1 << 32) if value & (1 << 31) else value


def check_templates(
    sent: Sequence[Message], data: dict[int, Fields], options: Fields | None
) -> None:
    got_data: dict[int, Fields] = {}
    got_options: list[tuple[int, int, Fields]] = []
    for message in sent:
        for t in message.templates:
            fields = [(f.element, f.length) for f in t.fields]
            assert all(f.enterprise == 0 for f in t.fields)
            if t.options:
                got_options.append((t.template_id, t.scope_fields, fields))
            else:
                assert got_data.setdefault(t.template_id, fields) == fields
    assert got_data == data
    assert {tuple(o[2]) for o in got_options} == ({tuple(options)} if options else set())
    assert all(scope == 1 for _, scope, _ in got_options)
    assert sent[0].templates, "the first datagram carries the templates"


def check_header(exp: Export, message: Message) -> None:
    h = message.header
    assert (h.version, h.domain) == (exp.version, 0)
    lo, hi = exp.started_ns // 1_000_000_000 - 1, exp.finished_ns // 1_000_000_000 + 1
    assert lo <= h.unix_secs <= hi, f"export time {h.unix_secs} outside the run {lo}..{hi}"


def match(flows: Sequence[Decoded], expected: dict[FlowKey, Direction]) -> dict[FlowKey, Decoded]:
    by_key: dict[FlowKey, Decoded] = {}
    for r in flows:
        key = flow_key(r.values)
        assert key not in by_key, f"exported twice: {key}"
        assert key in expected, f"a record for no flow fed: {r.values}"
        by_key[key] = r
    return by_key


# --------------------------------------------------------------------------------------------
# softflowd
# --------------------------------------------------------------------------------------------


@needs_softflowd
@pytest.mark.parametrize("sampling", [None, SAMPLING], ids=["all", "sampled"])
@pytest.mark.parametrize("version", [9, 10])
def test_softflowd_exports_every_fed_flow_field_by_field(
    tmp_path: Path, version: int, sampling: int | None
) -> None:
    exp, pkts = export(tmp_path, "softflowd", version, sampling)
    fed = every_nth(pkts, sampling) if sampling else pkts
    expected = directions(fed, exp.base_ns)
    assert len(expected) == (10 if sampling else 17)  # the scenario itself
    check_templates(exp.sent, SOFTFLOWD_TEMPLATES, SOFTFLOWD_OPTIONS[version])
    for message in exp.sent:
        check_header(exp, message)

    # Options: the sampling, the capture file as the interface, IPFIX the pid and start.
    assert exp.options, "softflowd sends its options with its templates"
    interface = str(exp.capture)[:16]  # an interfaceName of 16 bytes, cut
    for o in exp.options:
        if version == 9:
            assert o.values == {"scope_interface": "00000000", "sampling_interval": sampling or 1,
                                "sampling_algorithm": 1, "interface_name": interface}  # fmt: skip
        else:
            values = dict(o.values)
            init_ms = values.pop("system_init_time_milliseconds")
            assert isinstance(init_ms, int)
            # Its start, which it counts uptime from: within the run.
            assert exp.started_ns // 1_000_000 <= init_ms <= exp.finished_ns // 1_000_000
            assert values == {"metering_process_id": exp.pid, "sampling_packet_interval": 1,
                              "sampling_packet_space": (sampling or 1) - 1,
                              "selector_algorithm": 1, "interface_name": interface}  # fmt: skip

    by_key = match(exp.flows, expected)
    assert sorted(by_key) == sorted(expected)
    offsets: dict[int, list[int]] = {}
    for key, d in expected.items():
        r = by_key[key]
        values = dict(r.values)
        start, end = values.pop("flow_start_sys_up_time"), values.pop("flow_end_sys_up_time")
        assert values == softflowd_values(d), key
        assert isinstance(start, int)
        assert isinstance(end, int)
        if version == 9:
            export_ms = r.header.unix_secs * 1000
            first = export_ms - signed32(r.header.sys_uptime - start & 0xFFFFFFFF)
            last = export_ms - signed32(r.header.sys_uptime - end & 0xFFFFFFFF)
            # Whole seconds in the header: up to 1 s early (and 1 ms of truncations either way).
            for got, want in ((first, d.first_ms), (last, d.last_ms)):
                assert want - 1001 <= got <= want + 1, (key, got, want)
                offsets.setdefault(r.index, []).append(got - want)
        else:
            init = exp.options[0].values["system_init_time_milliseconds"]
            assert isinstance(init, int)
            assert abs(init + signed32(start) - d.first_ms) <= 1, key
            assert abs(init + signed32(end) - d.last_ms) <= 1, key
    # Within one datagram every time is off by the same fraction of the export second.
    assert all(max(o) - min(o) <= 2 for o in offsets.values()), offsets

    # v9 counts datagrams from 1; softflowd's IPFIX counts the records up to this message's end.
    if version == 9:
        assert [m.header.flow_sequence for m in exp.sent] == list(range(1, len(exp.sent) + 1))
    else:
        counts = [sum(1 for r in exp.flows if r.index == n) for n in range(len(exp.sent))]
        ends = [sum(counts[: n + 1]) for n in range(len(counts))]
        assert [m.header.flow_sequence for m in exp.sent] == ends


# --------------------------------------------------------------------------------------------
# pmacct
# --------------------------------------------------------------------------------------------


PMACCT_CASES = [(9, None), (10, None), (9, SAMPLING), (10, SAMPLING)]


@pytest.fixture(scope="module")
def pmacct_exports(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[int, int | None], tuple[Export, list[Sent]]]:
    """The four pmacctd runs, at once (each takes some 4.5 s, mostly its own sleeps), each
    to its own collector socket."""
    if PMACCTD is None:
        pytest.skip("pmacctd is not installed (apt-get install pmacct)")

    def one(case: tuple[int, int | None]) -> tuple[Export, list[Sent]]:
        version, sampling = case
        where = tmp_path_factory.mktemp(f"pmacct-v{version}-{sampling or 1}")
        return export(where, "pmacct", version, sampling)

    with ThreadPoolExecutor(len(PMACCT_CASES)) as pool:
        return dict(zip(PMACCT_CASES, pool.map(one, PMACCT_CASES), strict=True))


@needs_pmacctd
@pytest.mark.parametrize("sampling", [None, SAMPLING], ids=["all", "sampled"])
@pytest.mark.parametrize("version", [9, 10])
def test_pmacct_nfprobe_exports_every_fed_flow_field_by_field(
    pmacct_exports: dict[tuple[int, int | None], tuple[Export, list[Sent]]],
    version: int,
    sampling: int | None,
) -> None:
    exp, pkts = pmacct_exports[(version, sampling)]
    expected = directions(pkts, exp.base_ns)
    assert len(expected) == 17
    check_templates(exp.sent, pmacct_templates(sampling is not None),
                    PMACCT_OPTIONS[version] if sampling else None)  # fmt: skip
    for message in exp.sent:
        check_header(exp, message)
    scope = {"scope_system": "00000000"} if version == 9 else {"exporting_process_id": 0}
    # Random sampling, 1 in N on average (samplerMode 2); no options without sampling.
    assert [o.values for o in exp.options] == [
        scope | {"sampler_id": 1, "sampler_mode": 2, "sampler_random_interval": sampling}
    ] * len(exp.options)
    assert bool(exp.options) == bool(sampling)

    by_key = match(exp.flows, expected)
    if not sampling:
        assert sorted(by_key) == sorted(expected)
    for key, r in by_key.items():
        d = expected[key]
        values = dict(r.values)
        counters = {name: values.pop(name) for name in (
            "flow_start_milliseconds", "flow_end_milliseconds", "packet_delta_count",
            "octet_delta_count", "tcp_control_bits", "ip_class_of_service")}  # fmt: skip
        assert values == pmacct_values(d, sampled=sampling is not None), key
        if not sampling:
            assert counters == {
                "flow_start_milliseconds": d.first_ms, "flow_end_milliseconds": d.last_ms,
                "packet_delta_count": d.packets, "octet_delta_count": d.bytes,
                "tcp_control_bits": d.tcp_flags, "ip_class_of_service": d.tos,
            }, key  # fmt: skip
            continue
        # The TOS of the last packet sampled, if it went this way (see support.known_flows).
        sent_tos = d.sent[0].tos if d.ip_version == 4 else 0
        assert counters["ip_class_of_service"] in {0, sent_tos}, key
        problems = could_be_sampled(
            d, exp.base_ns, packets=int(counters["packet_delta_count"]),
            octets=int(counters["octet_delta_count"]),
            tcp_flags=int(counters["tcp_control_bits"]),
            first_ms=int(counters["flow_start_milliseconds"]),
            last_ms=int(counters["flow_end_milliseconds"]),
        )  # fmt: skip
        assert problems == [], (key, problems)
    if sampling:
        # Not scaled up: the packets counted are the packets sampled, some but not all.
        total = sum(int(r.values["packet_delta_count"]) for r in exp.flows)
        assert 0 < total < len(pkts)

    # v9 counts datagrams from 1; IPFIX the data records (options records too) before.
    seqs = [m.header.flow_sequence for m in exp.sent]
    if version == 9:
        assert seqs == list(range(1, len(exp.sent) + 1))
    else:
        records = [sum(1 for r in [*exp.flows, *exp.options] if r.index == n)
                   for n in range(len(exp.sent))]  # fmt: skip
        assert seqs == [sum(records[:n]) for n in range(len(records))]
