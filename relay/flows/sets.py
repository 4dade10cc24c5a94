"""The set walker shared by NetFlow v9 (RFC 3954) and IPFIX (RFC 7011), pure.

A v9 or IPFIX message is a header and then sets (v9: FlowSets), each ``ID, length`` and a
body. The sets are walked by their own lengths, never by the header's count: v9's count mixes
records and templates and exporters get it wrong, and IPFIX has none. What does not fit
becomes a :class:`~relay.flows.model.Problem` with a stable reason, and the walk goes on
wherever the lengths still say where the next set starts, so one bad set costs only itself:

- ``set_too_short``: a set length below the 4-byte set header (the walk cannot go on);
- ``set_past_end``: a set running past the message (the walk cannot go on);
- ``reserved_set_id``: a set ID that is neither a template set nor a data set;
- ``template_past_set``: a template record running past its set (the rest of the set is lost);
- ``bad_template_id``: a template ID below 256;
- ``empty_template``: a template with no fields (in v9; in IPFIX that is a withdrawal);
- ``field_length``: a field of impossible length (0, or v9's 65535);
- ``bad_scope``: an options template whose scope does not fit its fields.

Like :mod:`relay.spool.codec`, nothing here raises: every input gives a value. The work is
bounded by the message length (every step consumes at least 4 bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from relay.flows.model import DataSet, Problem, Withdrawal
from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template

SET_HEADER = struct.Struct("!HH")
_PAIR = struct.Struct("!HH")
_PEN = struct.Struct("!I")
_V9_OPTIONS = struct.Struct("!HHH")
_ENTERPRISE_BIT = 0x8000
FIRST_DATA_SET = 256


@dataclass(slots=True)
class SetContents:
    """What the sets of one message carried (filled by the walk, then frozen by the caller)."""

    templates: list[Template] = field(default_factory=list)
    withdrawals: list[Withdrawal] = field(default_factory=list)
    data_sets: list[DataSet] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    set_count: int = 0

    def problem(self, part: int, reason: str, detail: str, offset: int) -> None:
        self.problems.append(Problem(part=part, reason=reason, detail=detail, offset=offset))


def walk(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int] | Problem]:
    """``(part, set ID, body start, body end)`` per set from ``start`` to ``end``; a Problem
    where the lengths stop making sense (then nothing more). Fewer than 4 bytes left at the
    end, or only zero bytes (exporters pad datagrams to a fixed size: bitkeks' softflowd
    vector ends in 700 of them), are the message's padding, the caller's to count."""
    at = start
    part = 0
    while end - at >= SET_HEADER.size:
        if _zeros(data, at, end):
            return
        set_id, length = SET_HEADER.unpack_from(data, at)
        if length < SET_HEADER.size:
            yield Problem(
                part=part, reason="set_too_short", detail=f"set {set_id}: length {length}",
                offset=at,
            )  # fmt: skip
            return
        if at + length > end:
            yield Problem(
                part=part,
                reason="set_past_end",
                detail=f"set {set_id}: {length} bytes from offset {at}, message ends at {end}",
                offset=at,
            )
            return
        yield part, set_id, at + SET_HEADER.size, at + length
        at += length
        part += 1


def data_set(out: SetContents, part: int, set_id: int, body: bytes, offset: int) -> None:
    out.data_sets.append(DataSet(template_id=set_id, part=part, offset=offset, data=body))


def _zeros(data: bytes, at: int, end: int) -> bool:
    return not any(data[at:end])


def _template(
    out: SetContents,
    part: int,
    offset: int,
    template_id: int,
    fields: list[FieldSpec],
    *,
    options: bool,
    scope_fields: int = 0,
    scope_required: bool = True,
) -> None:
    """Keep a parsed template record, or the Problem that it is not one. IPFIX requires an
    options template to have a scope (RFC 7011 §3.4.2.2); v9 does not."""
    if template_id < FIRST_DATA_SET:
        out.problem(part, "bad_template_id", f"template ID {template_id}", offset)
        return
    if not fields:
        out.problem(part, "empty_template", f"template {template_id} has no fields", offset)
        return
    bad = next((f for f in fields if f.length == 0), None)
    if bad is not None:
        detail = f"template {template_id}: element {bad.element} has length 0"
        out.problem(part, "field_length", detail, offset)
        return
    if options and (scope_fields > len(fields) or (scope_required and not scope_fields)):
        detail = f"options template {template_id}: {scope_fields} scope of {len(fields)} fields"
        out.problem(part, "bad_scope", detail, offset)
        return
    out.templates.append(
        Template(template_id=template_id, fields=tuple(fields), options=options,
                 scope_fields=scope_fields)
    )  # fmt: skip


def _past_set(out: SetContents, part: int, template_id: int, offset: int) -> None:
    out.problem(part, "template_past_set", f"template {template_id} runs past its set", offset)


# --- IPFIX (RFC 7011 §3.4) ----------------------------------------------------------------


def ipfix_templates(
    out: SetContents, part: int, data: bytes, at: int, end: int, *, options: bool
) -> None:
    """The (options) template records of one IPFIX set 2 (3), then at most padding."""
    while end - at >= 4 and not _zeros(data, at, end):
        record = at
        template_id, count = _PAIR.unpack_from(data, at)
        at += 4
        if count == 0:
            # RFC 7011 §8.1: a withdrawal; IDs 2 and 3 withdraw all templates of the kind.
            if template_id >= FIRST_DATA_SET or template_id == (3 if options else 2):
                out.withdrawals.append(
                    Withdrawal(template_id=template_id, options=options, part=part)
                )
            else:
                out.problem(part, "bad_template_id", f"withdrawal of {template_id}", record)
            continue
        scope = 0
        if options:
            if end - at < 2:
                _past_set(out, part, template_id, record)
                return
            (scope,) = struct.unpack_from("!H", data, at)
            at += 2
        fields = []
        for _ in range(count):
            if end - at < 4:
                _past_set(out, part, template_id, record)
                return
            element, length = _PAIR.unpack_from(data, at)
            at += 4
            enterprise = 0
            if element & _ENTERPRISE_BIT:
                if end - at < 4:
                    _past_set(out, part, template_id, record)
                    return
                (enterprise,) = _PEN.unpack_from(data, at)
                at += 4
                element &= ~_ENTERPRISE_BIT
            fields.append(FieldSpec(element=element, length=length, enterprise=enterprise))
        _template(out, part, record, template_id, fields, options=options, scope_fields=scope)


# --- NetFlow v9 (RFC 3954 §5.2, §6.1) -----------------------------------------------------


def v9_templates(out: SetContents, part: int, data: bytes, at: int, end: int) -> None:
    """The template records of one v9 FlowSet 0, then at most padding."""
    while end - at >= 4 and not _zeros(data, at, end):
        record = at
        template_id, count = _PAIR.unpack_from(data, at)
        at += 4
        if 4 * count > end - at:
            _past_set(out, part, template_id, record)
            return
        fields = [
            FieldSpec(element=element, length=length)
            for element, length in _PAIR.iter_unpack(data[at : at + 4 * count])
        ]
        at += 4 * count
        if _v9_impossible(out, part, record, template_id, fields):
            continue
        _template(out, part, record, template_id, fields, options=False)


def v9_options_templates(out: SetContents, part: int, data: bytes, at: int, end: int) -> None:
    """The options template records of one v9 FlowSet 1 (lengths in bytes, not fields).

    The scope fields' types are v9 scope types (1 system, 2 interface, 3 line card, 4 cache,
    5 template), kept as the first ``scope_fields`` field specs.
    """
    while end - at >= _V9_OPTIONS.size and not _zeros(data, at, end):
        record = at
        template_id, scope_length, option_length = _V9_OPTIONS.unpack_from(data, at)
        at += _V9_OPTIONS.size
        if scope_length % 4 or option_length % 4:
            detail = (
                f"options template {template_id}: "
                f"scope {scope_length}, options {option_length} bytes"
            )
            out.problem(part, "bad_scope", detail, record)
            return
        if scope_length + option_length > end - at:
            _past_set(out, part, template_id, record)
            return
        fields = [
            FieldSpec(element=element, length=length)
            for element, length in _PAIR.iter_unpack(data[at : at + scope_length + option_length])
        ]
        at += scope_length + option_length
        if _v9_impossible(out, part, record, template_id, fields):
            continue
        _template(
            out, part, record, template_id, fields, options=True,
            scope_fields=scope_length // 4, scope_required=False,
        )  # fmt: skip


def _v9_impossible(
    out: SetContents, part: int, record: int, template_id: int, fields: list[FieldSpec]
) -> bool:
    # v9 has no variable-length fields: 65535 is a length no datagram can hold.
    bad = next((f for f in fields if f.length == VARIABLE_LENGTH), None)
    if bad is None:
        return False
    detail = f"template {template_id}: element {bad.element} has length {bad.length}"
    out.problem(part, "field_length", detail, record)
    return True
