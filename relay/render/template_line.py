"""The line of a v9/IPFIX record: which key each template field fills, and the readable body.

SPEC "The line": the 25 common keys of the legacy line first, in the same order, so that one
table serves every version; then ``source_id`` (v9) or ``observation_domain_id`` (IPFIX),
then ``input_if_name`` / ``output_if_name`` where the exporter's options name the record's
interfaces; then every other element of the record in template order under its key
(:mod:`relay.flows.names`: snake_case IANA name, ``ie<ID>``, ``e<PEN>_<ID>``, a repeat as
``name_2``). A common key is filled by element identity (SPEC's table), an enterprise element
never fills one, and an element that fills one is not repeated under its own name.

What a line takes from outside its template (sampling per sampler ID, interface names,
IPFIX systemInitTimeMilliseconds) comes in a :class:`LineContext`. This is the readable form,
the oracle the compiled path (:mod:`relay.render.compiled_template`) is held to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from relay.flows.elements import MAX_TIME_MS, Value
from relay.flows.layout import Kind
from relay.flows.legacy import absolute_ms
from relay.flows.model import PacketHeader, Problem
from relay.flows.options_state import Sampling

# The fast path reports a set's tail as decode_records does: its own problem builders.
from relay.flows.records import RecordPlan, _past, _short
from relay.render import generic
from relay.render.keys import COMMON_KEYS
from relay.render.options import Body


@dataclass(frozen=True, slots=True, kw_only=True)
class LineContext:
    """What a record's line takes from outside its template: the exporter's options.

    ``sampling(None)`` is the domain-wide sampling, ``sampling(id)`` a sampler's (falling
    back to the domain's is the callable's business, as ``OptionsState.sampling_for`` does).
    The fast path calls each at most once per distinct value per set; a domain that names
    no interfaces should pass ``NO_OPTIONS.interface_name``, which it then skips entirely.
    """

    sampling: Callable[[int | None], Sampling | None]  # sampler ID (None: domain-wide)
    interface_name: Callable[[int], str | None]  # ifIndex -> name
    system_init_ms: int | None  # IPFIX IE 160 of the domain


def _no_sampling(_: int | None) -> Sampling | None:
    return None


def _no_name(_: int) -> str | None:
    return None


NO_OPTIONS = LineContext(sampling=_no_sampling, interface_name=_no_name, system_init_ms=None)

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
# The time elements of each end, by rule, in priority order (SPEC "Field decoding").
_ABSOLUTE = {"first": (152, 150, 154, 156), "last": (153, 151, 155, 157)}
_UPTIME = {"first": 22, "last": 21}  # v9 uptime ms; IPFIX flowStart/EndSysUpTime
_DELTA = {"first": 158, "last": 159}  # flowStart/EndDeltaMicroseconds: before the export
_DURATIONS = ((161, False), (162, True))  # flowDurationMilli/Microseconds
_OBSERVATION = (323, 322, 324, 325)  # e.g. Cisco ASA NSEL's event time
_SYSTEM_INIT = 160
_SAMPLER_IDS = (48, 302)  # flowSamplerId, selectorId
_ADDRESSES = frozenset({"src_addr", "dst_addr", "next_hop"})
DATETIME_KINDS = frozenset({Kind.DATETIME_S, Kind.DATETIME_MS, Kind.DATETIME_US, Kind.DATETIME_NS})
_IF_NAMES = {"input_if": "input_if_name", "output_if": "output_if_name"}

TimeRule = Literal["uptime", "absolute", "delta", "sysuptime", "duration", "export"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeSource:
    """How one end (first or last) of a template's records is found: ``uptime`` (v9, the
    wrap rule), ``absolute`` (a dateTime element, observationTime* too), ``delta`` (before
    the export time), ``sysuptime`` (IPFIX: after the system init time), ``duration`` (from
    the other end), ``export`` (the datagram's export time)."""

    rule: TimeRule
    index: int | None = None
    micro: bool = False  # delta and duration: microseconds, not milliseconds


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateSlot:
    """One key of a template record's line and what fills it: a field of the record
    (``index``), the datagram's header (``header``), the record's time (``time``), the
    exporter's options (``option``: sampling, or an interface name from field ``index``),
    or its kind's zero."""

    key: str
    kind: Kind
    index: int | None = None
    header: str | None = None
    time: TimeSource | None = None
    option: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateLine:
    """The keys of one template's lines, and what the per-record options depend on."""

    plan: RecordPlan
    slots: tuple[TemplateSlot, ...]
    first: TimeSource
    last: TimeSource
    sampler: int | None  # the field of the record's sampler ID (48 / 302)
    system_init: int | None  # the record's own IE 160, used by a sysuptime end


def template_slots(plan: RecordPlan) -> tuple[TemplateSlot, ...]:
    """Every key of the line in order, for the records of one template."""
    return template_line(plan).slots


def template_line(plan: RecordPlan) -> TemplateLine:
    fields = plan.template.fields
    iana: dict[int, int] = {}
    for i, spec in enumerate(fields):
        if not spec.enterprise:
            iana.setdefault(spec.element, i)

    def find(elements: Sequence[int], kinds: frozenset[Kind]) -> int | None:
        return next((iana[e] for e in elements if e in iana and plan.kinds[iana[e]] in kinds), None)

    unsigned = frozenset({Kind.UNSIGNED})
    ends = {end: _base_time(plan, end, find) for end in ("first", "last")}
    for index, micro in _DURATIONS:
        duration = find((index,), unsigned)
        known = [end for end, source in ends.items() if source is not None]
        if duration is not None and len(known) == 1:
            ends["last" if known == ["first"] else "first"] = TimeSource(
                rule="duration", index=duration, micro=micro
            )
            break
    observed = find(_OBSERVATION, DATETIME_KINDS)
    for end, source in ends.items():
        if source is None:
            rule: TimeRule = "export" if observed is None else "absolute"
            ends[end] = TimeSource(rule=rule, index=observed)
    first, last = ends["first"], ends["last"]
    assert first is not None
    assert last is not None
    used = {s.index for s in (first, last) if s.index is not None}
    system_init = None
    if "sysuptime" in (first.rule, last.rule):
        system_init = find((_SYSTEM_INIT,), frozenset({Kind.DATETIME_MS}))
        if system_init is not None:
            used.add(system_init)

    ipv6 = 27 in iana or 28 in iana
    slots = []
    for key in COMMON_KEYS:
        if key in ("version", "exporter", "flow_sequence"):
            slots.append(TemplateSlot(key=key, kind=Kind.UNSIGNED, header=key))
            continue
        if key in ("first", "last"):
            source = first if key == "first" else last
            kind = Kind.DATETIME_MS if source.rule != "absolute" else plan.kinds[source.index or 0]
            slots.append(TemplateSlot(key=key, kind=kind, time=source))
            continue
        elements = _FILLED_BY[key]
        filler = next(
            (iana[e] for e in elements if e in iana and _fits(key, plan.kinds[iana[e]])), None
        )
        if filler is not None:
            used.add(filler)
            slots.append(TemplateSlot(key=key, kind=plan.kinds[filler], index=filler))
        elif key in ("sampling_interval", "sampling_mode"):
            slots.append(TemplateSlot(key=key, kind=Kind.UNSIGNED, option=key))
        elif key in _ADDRESSES:
            slots.append(TemplateSlot(key=key, kind=Kind.IPV6 if ipv6 else Kind.IPV4))
        else:
            slots.append(TemplateSlot(key=key, kind=Kind.UNSIGNED))
    domain_key = "source_id" if plan.version == 9 else "observation_domain_id"
    slots.append(TemplateSlot(key=domain_key, kind=Kind.UNSIGNED, header="domain"))
    for common, name_key in _IF_NAMES.items():
        found = next(s for s in slots if s.key == common)
        if found.index is not None:
            slots.append(
                TemplateSlot(key=name_key, kind=Kind.STRING, index=found.index, option=name_key)
            )
    taken = {slot.key for slot in slots} | set(_IF_NAMES.values())
    for i, (key, kind) in enumerate(zip(plan.keys, plan.kinds, strict=True)):
        if i in used:
            continue
        # 149 observationDomainId in a record would take the header's key: number it.
        own, n = key, 1
        while own in taken:
            n += 1
            own = f"{key}_{n}"
        taken.add(own)
        slots.append(TemplateSlot(key=own, kind=kind, index=i))
    sampler = find(_SAMPLER_IDS, unsigned)
    return TemplateLine(
        plan=plan,
        slots=tuple(slots),
        first=first,
        last=last,
        sampler=sampler,
        system_init=system_init,
    )


def _base_time(
    plan: RecordPlan, end: str, find: Callable[[Sequence[int], frozenset[Kind]], int | None]
) -> TimeSource | None:
    """An end's own time element, if the template has one (durations aside)."""
    found = find((_UPTIME[end],), frozenset({Kind.UPTIME_MS}))
    if found is not None:
        return TimeSource(rule="uptime", index=found)
    found = find(_ABSOLUTE[end], DATETIME_KINDS)
    if found is not None:
        return TimeSource(rule="absolute", index=found)
    found = find((_DELTA[end],), frozenset({Kind.UNSIGNED}))
    if found is not None:
        return TimeSource(rule="delta", index=found, micro=True)
    if plan.version == 10:
        found = find((_UPTIME[end],), frozenset({Kind.UNSIGNED}))
        if found is not None:
            return TimeSource(rule="sysuptime", index=found)
    return None


def _fits(key: str, kind: Kind) -> bool:
    """Whether a field of this kind can fill the key (a 5-byte "address" cannot)."""
    if key in _ADDRESSES:
        return kind in (Kind.IPV4, Kind.IPV6)
    return kind is Kind.UNSIGNED


def valid_ms(t: int) -> bool:
    """Whether a computed time is one a line can write (years 1970-9999)."""
    return 0 <= t <= MAX_TIME_MS


def record_times(
    line: TemplateLine, record: Sequence[Value], header: PacketHeader, context: LineContext
) -> tuple[Value, Value]:
    """first and last of one record: UNIX ms, or the hex of an absolute time element that
    falls outside the years a line can write (written as it was decoded).

    A computed time (delta, system init + uptime, duration) that falls outside them is the
    export time instead, as is a duration's when its other end is no time.
    """
    export_ms = header.export_time_ms
    times: dict[str, Value] = {}
    ends = (("first", line.first), ("last", line.last))
    # The duration end is computed from the other one: last in order.
    for end, source in sorted(ends, key=lambda pair: pair[1].rule == "duration"):
        value = None if source.index is None else record[source.index]
        if source.rule == "export" or value is None:
            times[end] = export_ms
        elif source.rule == "absolute":
            times[end] = value
        elif source.rule == "uptime":
            assert isinstance(value, int)
            times[end] = absolute_ms(value, header.sys_uptime, export_ms)
        else:
            assert isinstance(value, int)
            other = times.get("last" if end == "first" else "first")
            t = _computed(line, source, value, record, other=other, export_ms=export_ms,
                          context=context)  # fmt: skip
            times[end] = t if t is not None and valid_ms(t) else export_ms
    return times["first"], times["last"]


def _computed(
    line: TemplateLine,
    source: TimeSource,
    value: int,
    record: Sequence[Value],
    *,
    other: Value | None,
    export_ms: int,
    context: LineContext,
) -> int | None:
    """A delta's, a system init's or a duration's time (the duration's from ``other``)."""
    if source.rule == "delta":
        return (export_ms * 1000 - value) // 1000
    if source.rule == "sysuptime":
        base = context.system_init_ms
        if line.system_init is not None:
            own = record[line.system_init]
            if isinstance(own, int) and valid_ms(own):
                base = own
        return None if base is None else sysuptime_ms(base, value, export_ms)
    if not isinstance(other, int) or not valid_ms(other):
        return None
    sign = 1 if source is line.last else -1
    return (other * 1000 + sign * value) // 1000 if source.micro else other + sign * value


def record_sampling(
    line: TemplateLine, record: Sequence[Value], context: LineContext
) -> Sampling | None:
    """The options sampling of a record's sampler (domain-wide when it names none)."""
    sampler = None if line.sampler is None else record[line.sampler]
    return context.sampling(sampler if isinstance(sampler, int) else None)


def template_body(
    line: TemplateLine,
    record: Sequence[Value],
    *,
    header: PacketHeader,
    exporter: str,
    body: Body,
    context: LineContext = NO_OPTIONS,
    iso: generic.IsoFormat = generic.iso_utc,
) -> str:
    """One record's body, value by value (the readable path)."""
    times = record_times(line, record, header, context)
    sampling = None
    if any(s.option in ("sampling_interval", "sampling_mode") for s in line.slots):
        sampling = record_sampling(line, record, context)
    pairs = []
    export_ms = header.export_time_ms
    for slot in line.slots:
        if slot.header == "exporter":
            text = generic.string_text(exporter, body)
        elif slot.header == "domain":
            text = str(header.domain)
        elif slot.header is not None:
            text = str(getattr(header, slot.header))
        elif slot.time is not None:
            value = times[0 if slot.key == "first" else 1]
            text = generic.value_text(value, slot.kind, body, iso)
        elif slot.option in ("input_if_name", "output_if_name"):
            index = record[slot.index or 0]
            name = context.interface_name(index) if isinstance(index, int) else None
            if name is None:
                continue
            text = generic.string_text(name, body)
        elif slot.option is not None:
            number = 0 if sampling is None else getattr(sampling, slot.key.split("_")[1])
            text = str(number)
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


def record_problem(plan: RecordPlan, reason: str, tail: int, part: int, offset: int) -> Problem:
    """The problem ``decode_records`` reports for a set's tail, for the fast path, which
    cuts the set itself: the same reason, detail and offset (held equal by the tests)."""
    if reason == "short_record":
        return _short(plan, tail, part, offset)
    return _past(plan, part, offset)


def sysuptime_ms(system_init_ms: int, uptime_ms: int, export_ms: int) -> int:
    """An IPFIX flowStart/EndSysUpTime as UNIX ms: system init plus the uptime, taken modulo
    2**32 nearest the export time. The element is an unsigned32 of milliseconds, so it wraps
    every 49.7 days of uptime (goflow2#431 reports flows in the past after that); and an
    exporter replaying a capture older than its own start (softflowd -r) sends times before
    its system init, wrapped below 2**32."""
    return export_ms + ((system_init_ms + uptime_ms - export_ms + _HALF) & 0xFFFFFFFF) - _HALF


_HALF = 1 << 31
