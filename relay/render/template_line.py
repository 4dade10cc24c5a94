"""The line of a v9/IPFIX record: which key each template field fills, and the readable body.

SPEC "The line": the 25 common keys of the legacy line first, in the same order, so that one
table serves every version; then ``source_id`` (v9) or ``observation_domain_id`` (IPFIX);
then every other element of the record in template order under its key
(:mod:`relay.flows.names`: snake_case IANA name, ``ie<ID>``, ``e<PEN>_<ID>``, a repeat as
``name_2``). A common key is filled by element identity (SPEC's table), an enterprise element
never fills one, and an element that fills one is not repeated under its own name.

This is the readable form, the oracle a compiled template path will be held to. Not here yet
(they need the options the template cache and the ingest path hold): sampling from options
records, ``input_if_name``/``output_if_name``, IPFIX times relative to
systemInitTimeMilliseconds (IE 160), and times from deltas (158/159) or durations (161/162).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.flows.elements import Value
from relay.flows.layout import Kind
from relay.flows.legacy import absolute_ms
from relay.flows.model import PacketHeader
from relay.flows.records import RecordPlan
from relay.render import generic
from relay.render.keys import COMMON_KEYS
from relay.render.options import Body

# Common key -> the elements that can fill it, the first one a template has winning.
_FILLED_BY: dict[str, tuple[int, ...]] = {
    "engine_type": (38,),
    "engine_id": (39,),
    "sampling_interval": (34,),
    "sampling_mode": (35,),
    "src_addr": (8, 27),
    "dst_addr": (12, 28),
    "next_hop": (15, 62),
    "input_if": (10,),
    "output_if": (14,),
    "packets": (2, 86),
    "bytes": (1, 85),
    "src_port": (7,),
    "dst_port": (11,),
    "protocol": (4,),
    "tcp_flags": (6,),
    "tos": (5,),
    "src_as": (16,),
    "dst_as": (17,),
    "src_mask": (9, 29),
    "dst_mask": (13, 30),
}
# first/last: v9 uptime, then IPFIX absolute times (ms, s, us, ns), then observationTime*
# (e.g. Cisco ASA NSEL's event time), then (no element) the export time.
_OBSERVATION = (323, 322, 324, 325)
_TIME_ELEMENTS = {
    "first": (22, 152, 150, 154, 156, *_OBSERVATION),
    "last": (21, 153, 151, 155, 157, *_OBSERVATION),
}
_ADDRESSES = frozenset({"src_addr", "dst_addr", "next_hop"})
_TIME_KINDS = frozenset(
    {Kind.UPTIME_MS, Kind.DATETIME_S, Kind.DATETIME_MS, Kind.DATETIME_US, Kind.DATETIME_NS}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateSlot:
    """One key of a template record's line and what fills it: a field of the record
    (``index``), the datagram's header (``header``), or its kind's zero."""

    key: str
    kind: Kind
    index: int | None = None
    header: str | None = None


def template_slots(plan: RecordPlan) -> tuple[TemplateSlot, ...]:
    """Every key of the line in order, for the records of one template."""
    fields = plan.template.fields
    iana: dict[int, int] = {}
    for i, spec in enumerate(fields):
        if not spec.enterprise:
            iana.setdefault(spec.element, i)
    ipv6 = 27 in iana or 28 in iana
    used: set[int] = set()
    slots = []
    for key in COMMON_KEYS:
        if key in ("version", "exporter", "flow_sequence"):
            slots.append(TemplateSlot(key=key, kind=Kind.UNSIGNED, header=key))
            continue
        elements = _TIME_ELEMENTS.get(key) or _FILLED_BY[key]
        index = next(
            (iana[e] for e in elements if e in iana and _fits(key, plan.kinds[iana[e]])), None
        )
        if index is not None:
            used.add(index)
            slots.append(TemplateSlot(key=key, kind=plan.kinds[index], index=index))
        elif key in _TIME_ELEMENTS:
            slots.append(TemplateSlot(key=key, kind=Kind.DATETIME_MS, header="export_time"))
        elif key in _ADDRESSES:
            slots.append(TemplateSlot(key=key, kind=Kind.IPV6 if ipv6 else Kind.IPV4))
        else:
            slots.append(TemplateSlot(key=key, kind=Kind.UNSIGNED))
    domain_key = "source_id" if plan.version == 9 else "observation_domain_id"
    slots.append(TemplateSlot(key=domain_key, kind=Kind.UNSIGNED, header="domain"))
    taken = {slot.key for slot in slots}
    for i, (key, kind) in enumerate(zip(plan.keys, plan.kinds, strict=True)):
        if i in used:
            continue
        # 149 observationDomainId in a record would take the header's key: number it.
        slots.append(TemplateSlot(key=key if key not in taken else f"{key}_2", kind=kind, index=i))
    return tuple(slots)


def _fits(key: str, kind: Kind) -> bool:
    """Whether a field of this kind can fill the key (a 5-byte "address" cannot)."""
    if key in _TIME_ELEMENTS:
        return kind in _TIME_KINDS
    if key in _ADDRESSES:
        return kind in (Kind.IPV4, Kind.IPV6)
    return kind is Kind.UNSIGNED


def template_body(
    slots: Sequence[TemplateSlot],
    record: Sequence[Value],
    *,
    header: PacketHeader,
    exporter: str,
    body: Body,
    iso: generic.IsoFormat = generic.iso_utc,
) -> str:
    """One record's body, value by value (the readable path)."""
    pairs = []
    export_ms = header.export_time_ms
    for slot in slots:
        if slot.header == "exporter":
            text = generic.string_text(exporter, body)
        elif slot.header == "export_time":
            text = generic.value_text(export_ms, Kind.DATETIME_MS, body, iso)
        elif slot.header == "domain":
            text = str(header.domain)
        elif slot.header is not None:
            text = str(getattr(header, slot.header))
        elif slot.index is None:
            text = generic.value_text(_zero(slot.kind), slot.kind, body, iso)
        else:
            value = record[slot.index]
            if slot.kind is Kind.UPTIME_MS and isinstance(value, int):
                value = absolute_ms(value, header.sys_uptime, export_ms)
            text = generic.value_text(value, slot.kind, body, iso)
        pairs.append((slot.key, text))
    return generic.body_text([], pairs, body)


def _zero(kind: Kind) -> Value:
    return {Kind.IPV4: "0.0.0.0", Kind.IPV6: "::"}.get(kind, 0)
