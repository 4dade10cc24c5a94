"""A synthetic NetFlow exporter: builds v1/v5/v6/v7 datagrams and v9/IPFIX messages with
plausible flows (``relay send-test``, ``relay demo`` and the benchmarks). Pure: the caller
passes the clock and the random generator; v1-v7 packing follows each version's declared
layout, v9/IPFIX go through :mod:`relay.testing.flowgen`.

v9 and IPFIX behave as real exporters do: a datagram of templates (IPv4 and IPv6 flows; the
IPFIX IPv4 template has a variable-length applicationName), options templates and options
data (sampling, IPFIX's systemInitTimeMilliseconds and interface names) comes first and again
every ``templates_every`` data datagrams; v9's sequence counts datagrams, IPFIX's the data
records (options records included) sent before the message.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from relay.flows import LAYOUTS
from relay.flows.legacy import HEADER_16, HEADER_24
from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template
from relay.testing import flowgen
from relay.testing.flowgen import FieldValue

_PROTOCOLS = (6, 6, 6, 17, 17, 1)
_SERVICES = (443, 80, 53, 22, 123, 993, 3389, 8080)
_APPLICATIONS = {443: "https", 80: "http", 53: "dns", 22: "ssh", 123: "ntp", 993: "imaps",
                 3389: "ms-wbt-server", 8080: "http-alt"}  # fmt: skip
TEMPLATE_VERSIONS = (9, 10)
# Flows per v9/IPFIX datagram that keep it within a 1500-byte MTU, and the most that keep
# it within one UDP datagram (and an IPFIX message length).
MTU_RECORDS = 12
MAX_RECORDS = 500
INTERFACES = range(1, 48)  # the ifIndex values the flows use (input_if, output_if)
SAMPLING_INTERVAL = 100  # 1 in 100 packets
SELECTOR_ID = 7


def _template(template_id: int, fields: tuple[tuple[int, int], ...], scopes: int = 0) -> Template:
    specs = tuple(FieldSpec(element=e, length=n) for e, n in fields)
    return Template(
        template_id=template_id, fields=specs, options=bool(scopes), scope_fields=scopes
    )


# Counters, ports, protocol, ToS, TCP flags, interfaces and AS numbers, as (element, length).
_V9_COMMON = ((1, 4), (2, 4), (4, 1), (5, 1), (6, 1), (7, 2), (11, 2), (10, 2), (14, 2),
              (16, 2), (17, 2))  # fmt: skip
_IPFIX_COMMON = ((1, 8), (2, 8), (4, 1), (5, 1), (6, 2), (7, 2), (11, 2), (10, 4), (14, 4),
                 (16, 4), (17, 4))  # fmt: skip
_V4 = ((8, 4), (9, 1), (12, 4), (13, 1), (15, 4))
_V6 = ((27, 16), (29, 1), (28, 16), (30, 1), (62, 16))
V9_TEMPLATES = (
    _template(256, _V9_COMMON + _V4 + ((22, 4), (21, 4))),
    _template(257, _V9_COMMON + _V6 + ((22, 4), (21, 4), (31, 3))),
)
# Scope System (type 1), then SAMPLING_INTERVAL and SAMPLING_ALGORITHM (RFC 3954 §6.1, §8).
V9_OPTIONS = (_template(258, ((1, 4), (34, 4), (35, 1)), scopes=1),)
IPFIX_TEMPLATES = (
    # flowStart/EndMilliseconds, selectorId, applicationName (variable length).
    _template(256, _IPFIX_COMMON + _V4 + ((152, 8), (153, 8), (302, 2), (96, VARIABLE_LENGTH))),
    # flowStart/EndSysUpTime (relative to systemInitTimeMilliseconds), selectorId, flowLabel.
    _template(257, _IPFIX_COMMON + _V6 + ((22, 4), (21, 4), (302, 2), (31, 4))),
)
IPFIX_OPTIONS = (
    _template(260, ((302, 2), (305, 4), (306, 4)), scopes=1),  # sampling per selector
    _template(261, ((149, 4), (160, 8)), scopes=1),  # systemInitTimeMilliseconds
    _template(262, ((10, 4), (82, VARIABLE_LENGTH)), scopes=1),  # interfaceName per ifIndex
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SentRecord:
    """One data record as the exporter meant it: values by element number."""

    template_id: int
    values: Mapping[int, FieldValue]


@dataclass(frozen=True, slots=True, kw_only=True)
class Export:
    """What one export step sends: the datagrams in order (templates first when due)."""

    datagrams: tuple[bytes, ...]
    flows: int  # flow records (options records not included)
    template_datagrams: int = 0
    sent: tuple[SentRecord, ...] = ()  # v9/IPFIX: every data record, in wire order


@dataclass(frozen=True, slots=True)
class _Clock:
    secs: int  # export time, UNIX seconds
    uptime: int  # SysUpTime ms, mod 2**32


@dataclass(slots=True)
class SyntheticExporter:
    """Keeps per-version flow sequences so the relay sees an unbroken stream."""

    rng: random.Random
    boot_time: float
    engine_id: int = 1  # also the v9 Source ID and the IPFIX Observation Domain ID
    templates_every: int = 20  # data datagrams between two template datagrams (v9/IPFIX)
    _sequence: dict[int, int] = field(default_factory=dict)
    _data_datagrams: dict[int, int] = field(default_factory=dict)

    def datagram(self, version: int, count: int, now: float) -> bytes:
        """One v1/v5/v6/v7 datagram of ``count`` flows."""
        layout = LAYOUTS[version]
        uptime = int((now - self.boot_time) * 1000) & 0xFFFFFFFF
        secs, frac = divmod(now, 1)
        nsecs = int(frac * 1e9)
        sequence = self._sequence.get(version, 0)
        self._sequence[version] = (sequence + count) & 0xFFFFFFFF
        if layout.header is HEADER_16:
            header = HEADER_16.pack(version, count, uptime, int(secs), nsecs)
        else:
            engine = (0, self.engine_id, 0) if layout.has_engine else (0, 0, 0)
            header = HEADER_24.pack(version, count, uptime, int(secs), nsecs, sequence, *engine)
        records = b"".join(
            layout.record.pack(*self._values(layout.wire_fields, uptime)) for _ in range(count)
        )
        return header + records

    def export(self, version: int, count: int, now: float) -> Export:
        """``count`` flows of any version: v9/IPFIX with their templates first when due."""
        if version not in TEMPLATE_VERSIONS:
            return Export(datagrams=(self.datagram(version, count, now),), flows=count)
        if not 1 <= count <= MAX_RECORDS:
            raise ValueError(f"{count} flows do not fit one v{version} datagram")
        ipfix = version == 10
        now_ms = int(now * 1000)
        uptime = (now_ms - round(self.boot_time * 1000)) & 0xFFFFFFFF
        # systemInitTimeMilliseconds as the flows' uptimes count from it (past a 2**32 wrap
        # of SysUpTime: the latest wrap).
        init_ms = now_ms - uptime
        clock = _Clock(secs=int(now), uptime=uptime)
        templates = IPFIX_TEMPLATES if ipfix else V9_TEMPLATES
        datagrams: list[bytes] = []
        sent: list[SentRecord] = []
        data_sent = self._data_datagrams.get(version, 0)
        self._data_datagrams[version] = data_sent + 1
        if data_sent % self.templates_every == 0:
            options = self._options(ipfix, init_ms)
            option_templates = IPFIX_OPTIONS if ipfix else V9_OPTIONS
            sets = [
                flowgen.template_set(templates, ipfix=ipfix),
                flowgen.template_set(option_templates, ipfix=ipfix),
                *self._data_sets(option_templates, options),
            ]
            announced = len(templates) + len(option_templates)
            datagrams.append(self._message(version, sets, options, clock, templates=announced))
            sent += options
        flows = [self._flow(ipfix, uptime, init_ms) for _ in range(count)]
        flows.sort(key=lambda r: r.template_id)  # one data set per template, in ID order
        datagrams.append(self._message(version, self._data_sets(templates, flows), flows, clock))
        sent += flows
        return Export(
            datagrams=tuple(datagrams),
            flows=count,
            template_datagrams=len(datagrams) - 1,
            sent=tuple(sent),
        )

    def _message(
        self,
        version: int,
        sets: list[bytes],
        records: list[SentRecord],
        clock: _Clock,
        *,
        templates: int = 0,
    ) -> bytes:
        sequence = self._sequence.get(version, 0)
        if version == 10:
            self._sequence[version] = (sequence + len(records)) & 0xFFFFFFFF
            return flowgen.ipfix_message(
                sets, export_time=clock.secs, sequence=sequence, domain=self.engine_id
            )
        self._sequence[version] = (sequence + 1) & 0xFFFFFFFF
        return flowgen.v9_datagram(
            sets, count=templates + len(records), uptime=clock.uptime, secs=clock.secs,
            sequence=sequence, source_id=self.engine_id,
        )  # fmt: skip

    @staticmethod
    def _data_sets(templates: tuple[Template, ...], records: list[SentRecord]) -> list[bytes]:
        out = []
        for template in templates:
            mine = [flowgen.record(template, r.values) for r in records
                    if r.template_id == template.template_id]  # fmt: skip
            if mine:
                out.append(flowgen.data_set(template, mine))
        return out

    def _options(self, ipfix: bool, init_ms: int) -> list[SentRecord]:
        if not ipfix:
            # SAMPLING_ALGORITHM 1: deterministic (RFC 3954 §8).
            values = {1: self.engine_id, 34: SAMPLING_INTERVAL, 35: 1}
            return [SentRecord(template_id=258, values=values)]
        # interval = (305 + 306) / 305: 1 packet selected, the next 99 skipped.
        sampling = {302: SELECTOR_ID, 305: 1, 306: SAMPLING_INTERVAL - 1}
        return [
            SentRecord(template_id=260, values=sampling),
            SentRecord(template_id=261, values={149: self.engine_id, 160: init_ms}),
            *(SentRecord(template_id=262, values={10: i, 82: f"GigabitEthernet0/{i}"})
              for i in INTERFACES),
        ]  # fmt: skip

    def _flow(self, ipfix: bool, uptime: int, init_ms: int) -> SentRecord:
        flow = self._flow_values(uptime)
        v6 = self.rng.random() < 0.25
        values: dict[int, FieldValue] = {
            1: flow["bytes"], 2: flow["packets"], 4: flow["protocol"], 5: flow["tos"],
            6: flow["tcp_flags"], 7: flow["src_port"], 11: flow["dst_port"],
            10: flow["input_if"], 14: flow["output_if"], 16: flow["src_as"],
            17: flow["dst_as"],
        }  # fmt: skip
        first, last = flow["first"], flow["last"]
        assert isinstance(first, int)
        assert isinstance(last, int)
        if v6:
            rng = self.rng
            values |= {
                27: socket.inet_pton(socket.AF_INET6, f"2001:db8:{rng.randrange(1, 65536):x}::"
                                     f"{rng.randrange(1, 65536):x}"),
                28: socket.inet_pton(socket.AF_INET6,
                                     f"2001:db8:ffff::{rng.randrange(1, 65536):x}"),
                29: rng.choice((48, 56, 64)), 30: rng.choice((64, 128)),
                62: socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                22: first, 21: last,
                31: rng.randrange(1 << 20),
            }  # fmt: skip
        else:
            values |= {8: flow["src_addr"], 9: flow["src_mask"], 12: flow["dst_addr"],
                       13: flow["dst_mask"], 15: flow["next_hop"]}  # fmt: skip
            if ipfix:
                values |= {152: init_ms + first, 153: init_ms + last}
            else:
                values |= {22: first, 21: last}
        if ipfix:
            values[302] = SELECTOR_ID
            if not v6:
                values[96] = _APPLICATIONS.get(flow["dst_port"], "unknown")  # type: ignore[arg-type]
        return SentRecord(template_id=257 if v6 else 256, values=values)

    def _values(self, names: tuple[str, ...], uptime: int) -> list[int | bytes]:
        values = self._flow_values(uptime)
        return [values[n] for n in names]

    def _flow_values(self, uptime: int) -> dict[str, int | bytes]:
        rng = self.rng
        protocol = rng.choice(_PROTOCOLS)
        last = max(0, uptime - rng.randrange(0, 5000))
        packets = rng.randrange(1, 2000)
        return {
            "src_addr": socket.inet_aton(
                f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            ),
            "dst_addr": socket.inet_aton(f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}"),
            "next_hop": socket.inet_aton("10.0.0.1"),
            "input_if": rng.randrange(1, 48),
            "output_if": rng.randrange(1, 48),
            "packets": packets,
            "bytes": packets * rng.randrange(40, 1500),
            "first": max(0, last - rng.randrange(0, 60000)),
            "last": last,
            "src_port": rng.randrange(1024, 65536) if protocol != 1 else 0,
            "dst_port": rng.choice(_SERVICES) if protocol != 1 else 2048,
            "tcp_flags": rng.choice((0x02, 0x12, 0x18, 0x19, 0x1B)) if protocol == 6 else 0,
            "protocol": protocol,
            "tos": rng.choice((0, 0, 0x10, 0xB8)),
            "src_as": rng.choice((0, 64512, 65001)),
            "dst_as": rng.choice((0, 15169, 13335)),
            "src_mask": rng.choice((8, 16, 24)),
            "dst_mask": rng.choice((16, 24, 32)),
            "in_encaps": rng.randrange(0, 20),
            "out_encaps": rng.randrange(0, 20),
            "peer_next_hop": socket.inet_aton("10.255.0.1"),
            "flags1": rng.randrange(0, 4),
            "flags2": rng.randrange(0, 4),
            "router_sc": socket.inet_aton("10.0.0.254"),
        }


__all__ = ["Export", "SentRecord", "SyntheticExporter"]
