"""The compiled path of v9/IPFIX templates gives the readable path's bytes, for any template
and any set, with and without the exporter's options."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from support.ipfix_builder import field_specs, record, records_of

from relay.flows.model import PacketHeader
from relay.flows.options_state import Sampling
from relay.flows.records import RecordPlan, plan_for
from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template
from relay.render import Renderer, RenderOptions
from relay.render.options import BODIES, Body
from relay.render.template_line import NO_OPTIONS, LineContext

# The elements whose meaning the line depends on: times of every rule, sampling, sampler
# IDs, system init, engine, interfaces, and the common keys' elements at odd lengths.
_MEANINGFUL = [1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 14, 15, 21, 22, 27, 28, 34, 35, 38, 39, 48, 56,
               62, 82, 96, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162,
               302, 322, 323, 324, 325]  # fmt: skip
_LENGTHS = [1, 2, 3, 4, 5, 6, 8, 16]


@st.composite
def meaningful_specs(draw: st.DrawFn, *, ipfix: bool) -> FieldSpec:
    lengths = _LENGTHS + ([VARIABLE_LENGTH] if ipfix else [])
    return FieldSpec(
        element=draw(st.sampled_from(_MEANINGFUL)), length=draw(st.sampled_from(lengths))
    )


@st.composite
def any_templates(draw: st.DrawFn, *, ipfix: bool) -> Template:
    specs = field_specs(ipfix=ipfix) | meaningful_specs(ipfix=ipfix)
    fields = tuple(draw(st.lists(specs, min_size=1, max_size=10)))
    options = draw(st.booleans())
    return Template(
        template_id=draw(st.integers(256, 0xFFFF)),
        fields=fields,
        options=options,
        scope_fields=draw(st.integers(1, len(fields))) if options else 0,
    )


def sampling(sampler: int | None) -> Sampling | None:
    if sampler is None:
        return Sampling(interval=100, mode=1)
    return None if sampler % 3 == 0 else Sampling(interval=sampler + 1, mode=sampler % 4)


def interface_name(index: int) -> str | None:
    # Names that need escaping in both bodies, and interfaces with no name.
    return None if index % 2 else f'ge-0/0/{index} "uplink"\\='


CONTEXTS = [
    NO_OPTIONS,
    LineContext(sampling=sampling, interface_name=interface_name, system_init_ms=1_699_000_000_000),
    LineContext(sampling=lambda _: None, interface_name=lambda _: "x", system_init_ms=None),
]


def headers(version: int) -> st.SearchStrategy[PacketHeader]:
    return st.builds(
        PacketHeader,
        version=st.just(version),
        count=st.just(1),
        sys_uptime=st.integers(0, 0xFFFFFFFF) if version == 9 else st.just(0),
        unix_secs=st.integers(0, 0xFFFFFFFF),
        unix_nsecs=st.just(0),
        flow_sequence=st.integers(0, 0xFFFFFFFF),
        domain=st.integers(0, 0xFFFFFFFF),
    )


RENDERERS = {body: Renderer(RenderOptions(body=body)) for body in BODIES}
RFC5424 = Renderer(RenderOptions(body="kv", header="rfc5424"))


def assert_same(renderer: Renderer, plan: RecordPlan, data: bytes, header: PacketHeader) -> None:
    for context in CONTEXTS:
        fast = renderer.render_template(plan, data, header, "192.0.2.1", context, part=2,
                                        offset=40)  # fmt: skip
        readable = renderer.render_template_readable(plan, data, header, "192.0.2.1", context,
                                                     part=2, offset=40)  # fmt: skip
        assert fast == readable


@settings(max_examples=150, deadline=None)
@given(st.data(), st.sampled_from([9, 10]), st.sampled_from([*BODIES, "rfc5424"]))
def test_the_fast_path_writes_what_the_readable_one_does_for_well_formed_sets(
    data: st.DataObject, version: int, style: str
) -> None:
    template = data.draw(any_templates(ipfix=version == 10))
    plan = plan_for(template, version)
    encoded = b"".join(data.draw(records_of(template, max_records=3)))
    pad = data.draw(st.sampled_from([0, 0, 1, 3]))
    encoded += bytes(pad if pad < template.minimum_length else 0)
    renderer = RFC5424 if style == "rfc5424" else RENDERERS[style]  # type: ignore[index]
    assert renderer.compiled_template(plan) is not None
    assert_same(renderer, plan, encoded, data.draw(headers(version)))


@settings(max_examples=100, deadline=None)
@given(st.data(), st.sampled_from([9, 10]), st.sampled_from(BODIES))
def test_the_fast_path_writes_what_the_readable_one_does_for_any_bytes(
    data: st.DataObject, version: int, body: Body
) -> None:
    template = data.draw(any_templates(ipfix=version == 10))
    plan = plan_for(template, version)
    encoded = data.draw(st.binary(max_size=200))
    assert_same(RENDERERS[body], plan, encoded, data.draw(headers(version)))


def test_a_truncated_variable_field_ends_the_set_with_the_records_before_it() -> None:
    fields = (FieldSpec(element=8, length=4), FieldSpec(element=96, length=VARIABLE_LENGTH))
    template = Template(template_id=300, fields=fields)
    plan = plan_for(template, 10)
    good = record(template, [bytes([10, 0, 0, 1]), b"ssh"])
    data = good + bytes([10, 0, 0, 2]) + b"\x09abc"
    header = PacketHeader(version=10, count=0, sys_uptime=0, unix_secs=1_700_000_000, unix_nsecs=0)
    lines, problems = RENDERERS["json"].render_template(plan, data, header, "192.0.2.1", NO_OPTIONS)
    assert len(lines) == 1
    assert b'"application_name":"ssh"' in lines[0]
    assert [(p.reason, p.offset) for p in problems] == [("varlen_past_set", len(good))]


def test_a_short_record_is_reported_where_the_readable_path_reports_it() -> None:
    template = Template(template_id=301, fields=(FieldSpec(element=8, length=4),))
    plan = plan_for(template, 9)
    header = PacketHeader(version=9, count=1, sys_uptime=0, unix_secs=1_700_000_000, unix_nsecs=0)
    data = struct.pack("!I", 1) + b"\x00\x01"
    fast = RENDERERS["kv"].render_template(plan, data, header, "192.0.2.1", NO_OPTIONS, offset=8)
    assert fast == RENDERERS["kv"].render_template_readable(plan, data, header, "192.0.2.1",
                                                            NO_OPTIONS, offset=8)  # fmt: skip
    assert [(p.reason, p.offset) for p in fast[1]] == [("short_record", 12)]


def test_templates_with_the_same_fields_share_one_compiled_function() -> None:
    renderer = Renderer()
    fields = (FieldSpec(element=8, length=4), FieldSpec(element=82, length=VARIABLE_LENGTH))
    first = renderer.compiled_template(plan_for(Template(template_id=400, fields=fields), 10))
    twin = renderer.compiled_template(plan_for(Template(template_id=401, fields=fields), 10))
    assert first is not None
    assert twin is first
    # The same fields in v9 are other code (no variable length there, another domain key).
    other = renderer.compiled_template(plan_for(Template(template_id=400, fields=fields[:1]), 9))
    assert other is not first


def test_options_are_looked_up_once_per_distinct_value_in_a_set() -> None:
    calls: list[object] = []

    def sampling(sampler: int | None) -> Sampling | None:
        calls.append(("sampler", sampler))
        return Sampling(interval=50, mode=2)

    def name(index: int) -> str | None:
        calls.append(("if", index))
        return f"if{index}"

    template = Template(template_id=402, fields=(FieldSpec(element=48, length=1),
                                                 FieldSpec(element=10, length=2)))  # fmt: skip
    plan = plan_for(template, 10)
    data = b"\x01\x00\x05" * 3 + b"\x02\x00\x05"
    header = PacketHeader(version=10, count=0, sys_uptime=0, unix_secs=1_700_000_000, unix_nsecs=0)
    context = LineContext(sampling=sampling, interface_name=name, system_init_ms=None)
    lines, _ = RENDERERS["json"].render_template(plan, data, header, "192.0.2.1", context)
    assert len(lines) == 4
    assert all(b'"sampling_interval":50,"sampling_mode":2' in line for line in lines)
    assert all(b'"input_if_name":"if5"' in line for line in lines)
    assert sorted(calls, key=str) == [("if", 5), ("sampler", 1), ("sampler", 2)]
