"""A test-only NetFlow v9 / IPFIX encoder, and hypothesis strategies built on it.

Written from RFC 3954 and RFC 7011 alone, so that the decoder is tested against the RFCs'
layouts and not against itself. Every piece is bytes; a test puts them together, and can as
easily put them together wrong (a set length past the datagram, a zero-field template, a
variable length running past its set).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from hypothesis import strategies as st

from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template

V9_TEMPLATE, V9_OPTIONS = 0, 1
IPFIX_TEMPLATE, IPFIX_OPTIONS = 2, 3


# --- headers and sets ---------------------------------------------------------------------


def v9_message(
    sets: Sequence[bytes],
    *,
    count: int | None = None,
    uptime: int = 1_000_000,
    secs: int = 1_700_000_000,
    sequence: int = 1,
    source_id: int = 0,
) -> bytes:
    """A v9 datagram: the 20-byte header and the sets (``count`` defaults to the sets')."""
    header = struct.pack(
        "!HHIIII", 9, len(sets) if count is None else count, uptime, secs, sequence, source_id
    )
    return header + b"".join(sets)


def ipfix_message(
    sets: Sequence[bytes],
    *,
    export_time: int = 1_700_000_000,
    sequence: int = 0,
    domain: int = 0,
    length: int | None = None,
) -> bytes:
    """An IPFIX message: the 16-byte header (``length`` defaults to the true one)."""
    body = b"".join(sets)
    true_length = 16 + len(body)
    header = struct.pack(
        "!HHIII", 10, true_length if length is None else length, export_time, sequence, domain
    )
    return header + body


def set_bytes(set_id: int, body: bytes, *, pad: int = 0, length: int | None = None) -> bytes:
    """One set: ID, length (the true one unless given), body and ``pad`` zero bytes."""
    body += bytes(pad)
    return struct.pack("!HH", set_id, 4 + len(body) if length is None else length) + body


# --- template records ---------------------------------------------------------------------


def field_bytes(spec: FieldSpec, *, ipfix: bool) -> bytes:
    if spec.enterprise:
        assert ipfix, "v9 has no enterprise bit"
        return struct.pack("!HHI", spec.element | 0x8000, spec.length, spec.enterprise)
    return struct.pack("!HH", spec.element, spec.length)


def template_record(template: Template, *, ipfix: bool) -> bytes:
    """One (options) template record, v9 or IPFIX."""
    fields = b"".join(field_bytes(f, ipfix=ipfix) for f in template.fields)
    if not template.options:
        return struct.pack("!HH", template.template_id, len(template.fields)) + fields
    if ipfix:
        head = struct.pack(
            "!HHH", template.template_id, len(template.fields), template.scope_fields
        )
        return head + fields
    scope = 4 * template.scope_fields
    return struct.pack("!HHH", template.template_id, scope, len(fields) - scope) + fields


def raw_template(template_id: int, fields: Sequence[tuple[int, int]]) -> bytes:
    """A template record with any fields, none at all included (what Template refuses)."""
    return struct.pack("!HH", template_id, len(fields)) + b"".join(
        struct.pack("!HH", e, n) for e, n in fields
    )


def withdrawal(template_id: int) -> bytes:
    """An IPFIX (options) template withdrawal record: the ID and a field count of 0."""
    return struct.pack("!HH", template_id, 0)


def template_set(templates: Sequence[Template], *, ipfix: bool, pad: int = 0) -> bytes:
    options = {t.options for t in templates}
    assert len(options) == 1, "one set holds templates or options templates, not both"
    if ipfix:
        set_id = IPFIX_OPTIONS if options.pop() else IPFIX_TEMPLATE
    else:
        set_id = V9_OPTIONS if options.pop() else V9_TEMPLATE
    body = b"".join(template_record(t, ipfix=ipfix) for t in templates)
    return set_bytes(set_id, body, pad=pad)


# --- data records -------------------------------------------------------------------------


def varlen(value: bytes, *, long: bool = False) -> bytes:
    """A variable-length value: 1 length byte, or 255 and 2 (RFC 7011 §7)."""
    if long or len(value) >= 255:
        return b"\xff" + struct.pack("!H", len(value)) + value
    return bytes([len(value)]) + value


def record(template: Template, values: Sequence[bytes]) -> bytes:
    """One data record: each value is its field's bytes (fixed) or its content (variable)."""
    assert len(values) == len(template.fields)
    out = b""
    for spec, value in zip(template.fields, values, strict=True):
        if spec.variable:
            out += varlen(value)
        else:
            assert len(value) == spec.length, (spec, value)
            out += value
    return out


def data_set(template_id: int, records: Sequence[bytes], *, pad: int = 0) -> bytes:
    return set_bytes(template_id, b"".join(records), pad=pad)


# --- hypothesis ---------------------------------------------------------------------------

# Elements of each abstract type, at their lengths and at reduced or odd ones.
_ELEMENTS = [1, 2, 4, 7, 8, 10, 11, 12, 21, 22, 27, 56, 82, 95, 150, 152, 154, 156, 276, 311]


@st.composite
def field_specs(draw: st.DrawFn, *, ipfix: bool) -> FieldSpec:
    element = draw(st.sampled_from(_ELEMENTS) | st.integers(1, 0x7FFF))
    lengths = st.integers(1, 20) | st.sampled_from([1, 2, 4, 6, 8, 16])
    if ipfix:
        lengths |= st.just(VARIABLE_LENGTH)
    enterprise = draw(st.just(0) | st.integers(1, 0xFFFFFFFF)) if ipfix else 0
    return FieldSpec(element=element, length=draw(lengths), enterprise=enterprise)


@st.composite
def templates(draw: st.DrawFn, *, ipfix: bool, options: bool | None = None) -> Template:
    fields = tuple(draw(st.lists(field_specs(ipfix=ipfix), min_size=1, max_size=8)))
    is_options = draw(st.booleans()) if options is None else options
    scope = draw(st.integers(1, len(fields))) if is_options else 0
    return Template(
        template_id=draw(st.integers(256, 0xFFFF)),
        fields=fields,
        options=is_options,
        scope_fields=scope,
    )


@st.composite
def records_of(draw: st.DrawFn, template: Template, *, max_records: int = 4) -> list[bytes]:
    out = []
    for _ in range(draw(st.integers(0, max_records))):
        values = [
            draw(st.binary(max_size=300)) if f.variable else draw(st.binary(min_size=f.length,
                                                                         max_size=f.length))
            for f in template.fields
        ]  # fmt: skip
        out.append(record(template, values))
    return out


@st.composite
def messages(draw: st.DrawFn, *, ipfix: bool) -> tuple[bytes, list[Template]]:
    """A well-formed message: one template set, then data sets of its templates (some with
    zero padding), in any order; and the templates it defines."""
    defined = draw(
        st.lists(
            templates(ipfix=ipfix, options=False),
            min_size=1,
            max_size=3,
            unique_by=lambda t: t.template_id,
        )
    )
    sets = [template_set(defined, ipfix=ipfix)]
    for template in draw(st.lists(st.sampled_from(defined), max_size=4)):
        body = b"".join(draw(records_of(template)))
        # Padding shorter than any record, as RFC 7011 §3.3.1 requires.
        pad = draw(st.sampled_from([0, 0, 1, 3]))
        pad = pad if pad < template.minimum_length else 0
        sets.append(set_bytes(template.template_id, body, pad=pad))
    build = ipfix_message if ipfix else v9_message
    return build(sets), defined
