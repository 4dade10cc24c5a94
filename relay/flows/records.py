"""Data sets decoded with their template: records as values, and layouts for the fast path.

A template is turned, once, into a :class:`RecordPlan`: each field's syslog key (SPEC's
names, a repeated element kept as ``name_2`` ...), its kind (from the IANA type and the
length, :mod:`relay.flows.elements`) and, for a template of fixed-length fields, the
:class:`~relay.flows.layout.Layout` the compiled renderer serves; a template with a
variable-length field has no layout and takes the generic renderer.

Records of one set: a fixed-length template cuts the set into whole records; what is left
is the set's padding if it is all zero, and otherwise a record shorter than its template
(``short_record``), dropped with the records before it kept. A variable-length field carries
its length in 1 byte, or 255 and then 2 bytes (RFC 7011 §7); a length that runs past the set
(``varlen_past_set``) ends the set there. Work is bounded by the set's length: every record
takes at least one byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.flows.elements import Value, decode_value, element_kind
from relay.flows.layout import Field, Kind, Layout
from relay.flows.model import Problem
from relay.flows.names import element_key, unique_keys
from relay.flows.template import Template

Record = tuple[Value, ...]
# v9 FIRST_SWITCHED / LAST_SWITCHED: SysUptime ms, made absolute with the header (SPEC).
UPTIME_ELEMENTS = frozenset({21, 22})
# RFC 3954 §6.1: the scope field types of a v9 options template.
V9_SCOPES = {1: "system", 2: "interface", 3: "line_card", 4: "cache", 5: "template"}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordPlan:
    """How one template's records are decoded: keys and kinds in template order."""

    template: Template
    version: int
    keys: tuple[str, ...]
    kinds: tuple[Kind, ...]
    layout: Layout | None = field(compare=False)

    @property
    def variable(self) -> bool:
        return self.layout is None


def plan_for(template: Template, version: int) -> RecordPlan:
    keys = unique_keys(_key(template, i, version) for i in range(len(template.fields)))
    kinds = tuple(_kind(template, i, version) for i in range(len(template.fields)))
    layout = None
    if template.record_length is not None:
        at = 0
        fields = []
        for spec, key, kind in zip(template.fields, keys, kinds, strict=True):
            fields.append(
                Field(name=key, offset=at, size=spec.length, kind=kind,
                      element=spec.element, enterprise=spec.enterprise)
            )  # fmt: skip
            at += spec.length
        name = f"v{version} {'options ' if template.options else ''}template {template.template_id}"
        layout = Layout(name=name, size=at, fields=tuple(fields))
    return RecordPlan(
        template=template, version=version, keys=tuple(keys), kinds=kinds, layout=layout
    )


def _key(template: Template, index: int, version: int) -> str:
    spec = template.fields[index]
    if version == 9 and index < template.scope_fields:
        return f"scope_{V9_SCOPES.get(spec.element, str(spec.element))}"
    return element_key(spec.element, spec.enterprise)


def _kind(template: Template, index: int, version: int) -> Kind:
    spec = template.fields[index]
    if version == 9 and index < template.scope_fields:
        # A v9 scope value is the exporter's to define (a system's ID, an interface's): hex,
        # as for any element no registry describes.
        return Kind.OCTETS
    if version == 9 and spec.element in UPTIME_ELEMENTS and spec.length == 4:
        return Kind.UPTIME_MS
    if spec.variable:
        # A value that carries its own length is a string or octets (RFC 7011 §7 has them in
        # mind); a variable-length number or address is rare enough to be written as hex, so
        # that one field has one kind whatever each value's length.
        return element_kind(spec.element, 0, spec.enterprise)
    return element_kind(spec.element, spec.length, spec.enterprise)


def decode_records(
    plan: RecordPlan, data: bytes, *, part: int = 0, offset: int = 0
) -> tuple[list[Record], tuple[Problem, ...]]:
    """The records of one data set body, and the problem of its tail if it has one."""
    if plan.layout is not None:
        return _fixed(plan, plan.layout, data, part, offset)
    return _variable(plan, data, part, offset)


def _fixed(
    plan: RecordPlan, layout: Layout, data: bytes, part: int, offset: int
) -> tuple[list[Record], tuple[Problem, ...]]:
    size = layout.size
    count, tail = divmod(len(data), size)
    cuts = [(f.offset, f.offset + f.size, f.kind) for f in layout.fields]
    records = [
        tuple(decode_value(k, data[start + a : start + b]) for a, b, k in cuts)
        for start in range(0, count * size, size)
    ]
    problems: tuple[Problem, ...] = ()
    if tail and any(data[count * size :]):
        problems = (_short(plan, tail, part, offset + count * size),)
    return records, problems


def _variable(
    plan: RecordPlan, data: bytes, part: int, offset: int
) -> tuple[list[Record], tuple[Problem, ...]]:
    template = plan.template
    end = len(data)
    at = 0
    records: list[Record] = []
    while at < end:
        rest = end - at
        # Padding is shorter than any record can be (RFC 7011 §3.3.1), and zero.
        if rest < template.minimum_length:
            if any(data[at:]):
                return records, (_short(plan, rest, part, offset + at),)
            break
        record_start = at
        values: list[Value] = []
        for spec, kind in zip(template.fields, plan.kinds, strict=True):
            length = spec.length
            if spec.variable:
                if at >= end:
                    return records, (_past(plan, part, offset + record_start),)
                length = data[at]
                at += 1
                if length == 255:
                    if end - at < 2:
                        return records, (_past(plan, part, offset + record_start),)
                    length = (data[at] << 8) | data[at + 1]
                    at += 2
            if end - at < length:
                return records, (_past(plan, part, offset + record_start),)
            values.append(decode_value(kind, data[at : at + length]))
            at += length
        records.append(tuple(values))
    return records, ()


def _short(plan: RecordPlan, tail: int, part: int, offset: int) -> Problem:
    detail = (
        f"template {plan.template.template_id}: {tail} bytes after the last whole record "
        "are not padding"
    )
    return Problem(part=part, reason="short_record", detail=detail, offset=offset)


def _past(plan: RecordPlan, part: int, offset: int) -> Problem:
    detail = f"template {plan.template.template_id}: a field runs past the end of its set"
    return Problem(part=part, reason="varlen_past_set", detail=detail, offset=offset)


def record_count(plan: RecordPlan, data: bytes) -> int:
    """How many records a data set body holds (an IPFIX header's sequence step is the sum
    over the message), without decoding their values."""
    if plan.layout is not None:
        return len(data) // plan.layout.size
    return _count_variable(plan.template, data)


def _count_variable(template: Template, data: bytes) -> int:
    """``_variable``'s walk without decoding a value: the IPFIX sequence step costs this for
    every set, and decoding here would double the work of a set the renderer decodes anyway
    (the end-to-end profile had it at 45 % of an IPFIX relay's time)."""
    end = len(data)
    minimum = template.minimum_length
    lengths = [-1 if f.variable else f.length for f in template.fields]
    at = count = 0
    while at < end and end - at >= minimum:
        for fixed in lengths:
            size = fixed
            if fixed < 0:
                if at >= end:
                    return count
                size = data[at]
                at += 1
                if size == 255:
                    if end - at < 2:
                        return count
                    size = (data[at] << 8) | data[at + 1]
                    at += 2
            if end - at < size:
                return count
            at += size
        count += 1
    return count
