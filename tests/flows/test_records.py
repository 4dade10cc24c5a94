"""Data sets decoded with their templates: fixed and variable length, repeats, layouts."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.ipfix_builder import record, records_of, templates, varlen

from relay.flows.layout import Kind
from relay.flows.records import decode_records, plan_for, record_count
from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template


def template(*fields: tuple[int, int] | tuple[int, int, int], options: int = 0) -> Template:
    return Template(
        template_id=256,
        fields=tuple(FieldSpec(element=f[0], length=f[1], enterprise=(f[2] if len(f) > 2 else 0))
                     for f in fields),
        options=bool(options),
        scope_fields=options,
    )  # fmt: skip


V4 = template((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (22, 4), (21, 4))
ONE = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 1, 187, 6, 0, 0, 0, 9]) + struct.pack("!II", 5, 6)


def test_fixed_records_decode_to_values_in_template_order() -> None:
    plan = plan_for(V4, 9)
    records, problems = decode_records(plan, ONE + ONE)
    assert records == [("10.0.0.1", "10.0.0.2", 80, 443, 6, 9, 5, 6)] * 2
    assert problems == ()
    assert plan.keys == (
        "source_ipv4_address", "destination_ipv4_address", "source_transport_port",
        "destination_transport_port", "protocol_identifier", "packet_delta_count",
        "flow_start_sys_up_time", "flow_end_sys_up_time",
    )  # fmt: skip


def test_v9_uptime_times_are_uptime_kinds_and_ipfix_ones_plain_numbers() -> None:
    assert plan_for(V4, 9).kinds[-2:] == (Kind.UPTIME_MS, Kind.UPTIME_MS)
    assert plan_for(V4, 10).kinds[-2:] == (Kind.UNSIGNED, Kind.UNSIGNED)


def test_a_fixed_template_has_a_layout_for_the_fast_path() -> None:
    layout = plan_for(V4, 9).layout
    assert layout is not None
    assert layout.size == 25
    assert [(f.offset, f.size, f.element) for f in layout.fields][:3] == [(0, 4, 8), (4, 4, 12),
                                                                         (8, 2, 7)]  # fmt: skip
    assert layout.struct.unpack(ONE)[:2] == (bytes([10, 0, 0, 1]),
                                                           bytes([10, 0, 0, 2]))  # fmt: skip


def test_two_exporters_sending_the_same_template_share_a_fingerprint() -> None:
    a = plan_for(V4, 9).layout
    b = plan_for(Template(template_id=999, fields=V4.fields), 9).layout
    assert a is not None
    assert b is not None
    assert a.fingerprint == b.fingerprint


def test_a_repeated_element_is_kept_each_time() -> None:
    # logstash-codec-netflow#93, nfdump#320: a second occurrence must not overwrite the first.
    plan = plan_for(template((8, 4), (8, 4), (2, 2), (8, 4)), 10)
    records, _ = decode_records(plan, bytes([1, 1, 1, 1, 2, 2, 2, 2, 0, 3, 4, 4, 4, 4]))
    assert plan.keys == ("source_ipv4_address", "source_ipv4_address_2", "packet_delta_count",
                         "source_ipv4_address_3")  # fmt: skip
    assert records == [("1.1.1.1", "2.2.2.2", 3, "4.4.4.4")]


def test_zero_padding_after_the_last_record_is_not_a_record() -> None:
    records, problems = decode_records(plan_for(V4, 9), ONE + bytes(3))
    assert len(records) == 1
    assert problems == ()


def test_a_tail_shorter_than_a_record_is_a_short_record_and_the_others_are_kept() -> None:
    records, problems = decode_records(plan_for(V4, 9), ONE + b"\x01\x02", part=2, offset=40)
    assert len(records) == 1
    assert [(p.reason, p.part, p.offset) for p in problems] == [("short_record", 2, 65)]


VAR = template((82, VARIABLE_LENGTH), (7, 2), (12235, VARIABLE_LENGTH, 9))


def test_variable_length_values_take_one_or_three_length_bytes() -> None:
    plan = plan_for(VAR, 10)
    assert plan.layout is None
    assert plan.variable
    long_name = b"x" * 300
    data = (
        varlen(b"eth0") + b"\x00\x50" + varlen(b"\xab")
        + varlen(long_name) + b"\x01\xbb" + varlen(b"", long=True)
    )  # fmt: skip
    records, problems = decode_records(plan, data)
    assert records == [("eth0", 80, "ab"), ("x" * 300, 443, "")]
    assert problems == ()
    assert plan.keys == ("interface_name", "source_transport_port", "e9_12235")


@pytest.mark.parametrize(
    "data",
    [
        varlen(b"eth0") + b"\x00\x50" + b"\x05ab",  # the length says 5, the set holds 2
        varlen(b"eth0") + b"\x00\x50" + b"\xff\x00",  # a 3-byte length cut short
        b"\x09eth0",  # the first value runs past the set
    ],
)
def test_a_variable_length_running_past_the_set_ends_it_there(data: bytes) -> None:
    records, problems = decode_records(plan_for(VAR, 10), varlen(b"a") + b"\x00\x01\x00" + data)
    assert records == [("a", 1, "")]
    assert [p.reason for p in problems] == ["varlen_past_set"]


def test_padding_after_variable_length_records_is_not_a_record() -> None:
    records, problems = decode_records(plan_for(VAR, 10), varlen(b"a") + b"\x00\x01\x00" + bytes(3))
    assert records == [("a", 1, "")]
    assert problems == ()


def test_a_v9_options_template_names_its_scope_by_type() -> None:
    plan = plan_for(template((1, 4), (34, 4), (35, 1), options=1), 9)
    assert plan.keys == ("scope_system", "sampling_interval", "sampling_algorithm")
    records, _ = decode_records(plan, bytes([192, 0, 2, 1, 0, 0, 0, 100, 2]))
    assert records == [("c0000201", 100, 2)]


@given(st.data())
def test_any_records_of_any_template_decode_to_one_value_per_field(data: st.DataObject) -> None:
    t = data.draw(templates(ipfix=True))
    encoded = data.draw(records_of(t, max_records=5))
    plan = plan_for(t, 10)
    records, problems = decode_records(plan, b"".join(encoded))
    assert problems == ()
    assert len(records) == len(encoded)
    assert all(len(r) == len(t.fields) for r in records)
    assert record_count(plan, b"".join(encoded)) == len(encoded)


def test_a_record_of_only_empty_variable_values_still_takes_bytes() -> None:
    t = template((82, VARIABLE_LENGTH))
    records, _ = decode_records(plan_for(t, 10), record(t, [b""]) * 5)
    assert len(records) == 5


@given(st.data())
def test_record_count_of_a_variable_length_set_is_how_many_records_decode(
    data: st.DataObject,
) -> None:
    t = data.draw(templates(ipfix=True, options=False))
    body = b"".join(data.draw(records_of(t, max_records=5)))
    body += data.draw(st.binary(max_size=8))  # a tail: padding, a cut record, or junk
    plan = plan_for(t, 10)
    records, _ = decode_records(plan, body)
    assert record_count(plan, body) == len(records)
