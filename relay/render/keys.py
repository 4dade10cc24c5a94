"""The syslog body's keys and their order: the renderer's, not the decoder's.

SPEC "The syslog line": 25 common keys, always present and always in this order, so that one
table serves every version; then the version's (later: the template's) other fields in
layout order. A record field fills a common key by its element identity (the IANA element
number, SPEC's v9/IPFIX table), never by its position or by what the decoder calls it, so
a v9 template that lists its fields in another order still gives the same line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.flows.layout import Field, Kind, Layout

# The first seven common keys come from the datagram header, in this order.
HEADER_KEYS = (
    "version",
    "exporter",
    "flow_sequence",
    "engine_type",
    "engine_id",
    "sampling_interval",
    "sampling_mode",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommonKey:
    """A common key filled from a record: the elements that can fill it (the first one a
    layout has wins) and what it holds, which decides its value when the layout has none."""

    name: str
    elements: tuple[int, ...]
    kind: Kind = Kind.UNSIGNED


RECORD_KEYS = (
    CommonKey(name="first", elements=(22,), kind=Kind.UPTIME_MS),
    CommonKey(name="last", elements=(21,), kind=Kind.UPTIME_MS),
    CommonKey(name="src_addr", elements=(8,), kind=Kind.IPV4),
    CommonKey(name="dst_addr", elements=(12,), kind=Kind.IPV4),
    CommonKey(name="next_hop", elements=(15,), kind=Kind.IPV4),
    CommonKey(name="input_if", elements=(10,)),
    CommonKey(name="output_if", elements=(14,)),
    CommonKey(name="packets", elements=(2, 86)),
    CommonKey(name="bytes", elements=(1, 85)),
    CommonKey(name="src_port", elements=(7,)),
    CommonKey(name="dst_port", elements=(11,)),
    CommonKey(name="protocol", elements=(4,)),
    CommonKey(name="tcp_flags", elements=(6,)),
    CommonKey(name="tos", elements=(5,)),
    CommonKey(name="src_as", elements=(16,)),
    CommonKey(name="dst_as", elements=(17,)),
    CommonKey(name="src_mask", elements=(9,)),
    CommonKey(name="dst_mask", elements=(13,)),
)
COMMON_KEYS = (*HEADER_KEYS, *(k.name for k in RECORD_KEYS))

# Keys go into generated code and into lines unquoted: keep them to snake_case words.
_KEY_RE = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """One key of a record's part of the line, and the field that fills it (None: the
    layout lacks it, and the key holds its kind's zero: ``0``, or ``0.0.0.0``)."""

    key: str
    kind: Kind
    field: Field | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LinePlan:
    """The record keys of one layout's lines, in line order (after the header keys)."""

    layout: Layout
    slots: tuple[Slot, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(slot.key for slot in self.slots)


def plan(layout: Layout) -> LinePlan:
    """Common record keys first (filled by element), then every other field in layout order."""
    used: set[str] = set()
    slots = []
    for common in RECORD_KEYS:
        found = next((f for e in common.elements for f in layout.fields if f.element == e), None)
        if found is not None:
            if found.kind is not common.kind:
                raise ValueError(f"{layout.name}: {found.name} cannot fill {common.name}")
            used.add(found.name)
        elif common.kind is Kind.UPTIME_MS:
            # SPEC gives v9/IPFIX records without times the export time; no legacy layout
            # lacks them, so that rule comes with the formats that need it.
            raise ValueError(f"{layout.name}: no field fills {common.name}")
        slots.append(Slot(key=common.name, kind=common.kind, field=found))
    for f in layout.fields:
        if f.name in used:
            continue
        if f.name in COMMON_KEYS or not _KEY_RE.fullmatch(f.name):
            raise ValueError(f"{layout.name}: {f.name!r} cannot be a key of its own")
        slots.append(Slot(key=f.name, kind=f.kind, field=f))
    return LinePlan(layout=layout, slots=tuple(slots))
