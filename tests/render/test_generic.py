"""The readable renderer (relay.render.generic) and the renderer's key plan
(relay.render.keys): SPEC "The syslog line" escaping and key order, and the compiled path
held to the generic one for layouts no version has (fields in another order, fields missing,
fields of its own)."""

from __future__ import annotations

import json
import re
import struct
from socket import inet_ntoa

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.flows import LAYOUTS
from relay.flows.layout import Field, Kind, Layout
from relay.flows.legacy import absolute_ms, time_bases
from relay.render import generic
from relay.render.compiled import compile_lines
from relay.render.keys import COMMON_KEYS, HEADER_KEYS, plan
from relay.render.options import Body

RECORD_COMMON = COMMON_KEYS[len(HEADER_KEYS) :]
KV_PAIR = re.compile(r'([a-z0-9_]+)=("(?:[^"\\]|\\.)*"|[^ "]+)(?: |$)')


def kv_split(body: str) -> list[tuple[str, str]]:
    """A kv body back into its pairs, unquoting and unescaping quoted values."""
    out = []
    at = 0
    while at < len(body):
        found = KV_PAIR.match(body, at)
        assert found, body[at:]
        key, value = found.groups()
        if value.startswith('"'):
            value = json.loads(value)  # SPEC's \" and \\ (and \n, \uXXXX) are JSON's
        out.append((key, value))
        at = found.end()
    return out


# --- escaping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak\ttab\r", '"line\\nbreak\\ttab\\r"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ("\b\f", '"\\b\\f"'),
        ("café ∑", '"café ∑"'),  # RFC 8259: only ", \ and U+0000-U+001F must be escaped
        ("\x7f", '"\x7f"'),
        (b"ok", '"ok"'),
        (b"bad \xff\xfe utf-8", '"bad \ufffd\ufffd utf-8"'),
    ],
)
def test_json_strings_are_escaped_as_rfc_8259_says(value: str | bytes, expected: str) -> None:
    assert generic.json_string(value) == expected


@given(st.text())
def test_any_json_string_parses_back_to_its_text(text: str) -> None:
    assert json.loads(generic.json_string(text)) == text


@given(st.binary())
def test_any_bytes_give_a_json_string_of_their_utf8_with_replacements(data: bytes) -> None:
    assert json.loads(generic.json_string(data)) == data.decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("10.0.0.1", "10.0.0.1"),
        ("", '""'),
        ("two words", '"two words"'),
        ('a"quote', '"a\\"quote"'),
        ("a=b", '"a=b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("new\nline", '"new\\nline"'),  # a raw newline would end the line
    ],
)
def test_kv_values_are_quoted_when_spec_says(value: str, expected: str) -> None:
    assert generic.kv_string(value) == expected


@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), st.text())))
def test_any_kv_line_splits_back_into_the_same_pairs(pairs: list[tuple[str, str]]) -> None:
    written = [(key, generic.kv_string(value)) for key, value in pairs]
    line = generic.pairs_text(written, "kv")
    assert "\n" not in line
    assert kv_split(line) == pairs


# --- the renderer owns the keys -------------------------------------------------------


def test_common_keys_are_spec_s_twenty_five() -> None:
    assert len(COMMON_KEYS) == 25 == len(set(COMMON_KEYS))


def shuffled_v5() -> Layout:
    """v5's fields at other offsets and in another order: the elements are the same."""
    fields = list(reversed(LAYOUTS[5].layout.fields))
    at = 0
    moved = []
    for f in fields:
        moved.append(
            Field(name=f"x_{f.name}", offset=at, size=f.size, kind=f.kind, element=f.element)
        )
        at += f.size
    return Layout(name="shuffled v5", size=at, fields=tuple(moved))


@pytest.mark.parametrize("version", [1, 5, 6, 7])
def test_every_version_has_the_common_keys_then_its_extras(version: int) -> None:
    extras = {1: (), 5: (), 6: ("in_encaps", "out_encaps", "peer_next_hop")}
    extras[7] = ("flags1", "flags2", "router_sc")
    assert plan(LAYOUTS[version].layout).keys == (*RECORD_COMMON, *extras[version])


def test_fields_fill_common_keys_by_element_not_by_order_or_name() -> None:
    assert plan(shuffled_v5()).keys == RECORD_COMMON


def test_a_field_no_common_key_takes_comes_after_them_in_layout_order() -> None:
    layout = Layout(
        name="own",
        size=14,
        fields=(
            Field(name="vlan", offset=0, size=2, element=58),
            Field(name="first", offset=2, size=4, kind=Kind.UPTIME_MS, element=22),
            Field(name="last", offset=6, size=4, kind=Kind.UPTIME_MS, element=21),
            Field(name="octets_total", offset=10, size=4, element=85),
        ),
    )
    # 85 (total octets) fills `bytes` when 1 is absent; the VLAN is a key of its own.
    keys = plan(layout).keys
    assert keys == (*RECORD_COMMON, "vlan")
    assert plan(layout).slots[RECORD_COMMON.index("bytes")].field == layout.fields[3]


def test_a_field_named_like_a_common_key_it_does_not_fill_is_refused() -> None:
    layout = Layout(
        name="clash",
        size=10,
        fields=(
            Field(name="first", offset=0, size=4, kind=Kind.UPTIME_MS, element=22),
            Field(name="last", offset=4, size=4, kind=Kind.UPTIME_MS, element=21),
            Field(name="src_port", offset=8, size=2, element=None),
        ),
    )
    with pytest.raises(ValueError, match="cannot be a key of its own"):
        plan(layout)


# --- compiled == generic, for layouts no version has ----------------------------------


def decode_records(
    layout: Layout, data: bytes, k_up_args: tuple[int, int]
) -> list[dict[str, object]]:
    """An independent decoder of any fixed layout: unpack, then turn each value by kind."""
    out = []
    for values in struct.iter_unpack(layout.struct.format, data):
        record: dict[str, object] = {}
        for f, value in zip(layout.fields, values, strict=True):
            if f.kind is Kind.IPV4:
                record[f.name] = inet_ntoa(value)
            elif f.kind is Kind.UPTIME_MS:
                record[f.name] = absolute_ms(value, *k_up_args)
            else:
                record[f.name] = value
        out.append(record)
    return out


def sparse_layout() -> Layout:
    """Times and a few common fields only, with a field of its own: the rest are zeros."""
    return Layout(
        name="sparse",
        size=20,
        fields=(
            Field(name="last", offset=0, size=4, kind=Kind.UPTIME_MS, element=21),
            Field(name="dport", offset=4, size=2, element=11),
            Field(name="first", offset=8, size=4, kind=Kind.UPTIME_MS, element=22),
            Field(name="peer", offset=12, size=4, kind=Kind.IPV4, element=None),
            Field(name="big", offset=16, size=4, element=None),
        ),
    )


LAYOUT_CASES = [shuffled_v5(), sparse_layout()]


@settings(max_examples=150, deadline=None)
@given(
    which=st.integers(0, len(LAYOUT_CASES) - 1),
    body=st.sampled_from(["json", "kv"]),
    records=st.integers(1, 4),
    data=st.data(),
    uptime=st.integers(0, 2**32 - 1),
    export_ms=st.integers(0, 2**32 * 1000),
)
def test_compiled_lines_equal_generic_lines_for_any_layout_and_bytes(
    which: int, body: Body, records: int, data: st.DataObject, uptime: int, export_ms: int
) -> None:
    layout = LAYOUT_CASES[which]
    raw = data.draw(st.binary(min_size=layout.size * records, max_size=layout.size * records))
    k_time, k_up = time_bases(uptime, export_ms)
    iso: dict[int, str] = {}

    def slow(second: int) -> str:
        iso[second] = generic.iso_utc(second * 1000)[:-5]
        return iso[second]

    compiled = compile_lines(layout, body).build(memoryview(raw), k_time, k_up, "P:", iso, slow)
    line_plan = plan(layout)
    expected = []
    for record in decode_records(layout, raw, (uptime, export_ms)):
        pairs = generic.record_pairs(line_plan, record, body)  # type: ignore[arg-type]
        text = generic.pairs_text(pairs, body)
        expected.append(("P:" + (text + "}" if body == "json" else text)).encode())
    assert compiled == expected
    if which == 1:
        assert b"src_addr" in compiled[0]
        zero = b'"src_addr":"0.0.0.0"' if body == "json" else b"src_addr=0.0.0.0"
        assert zero in compiled[0]
