"""The template decoder: templates, options and held data of v9/IPFIX exporters together.

Messages are built with the test-only encoder (tests/support/ipfix_builder.py, written from
the RFCs), parsed by the product's message parser and decoded with fixed times.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ipfix_builder as b

from relay.errors import DecodeError
from relay.flows import messages
from relay.flows.model import Message
from relay.flows.options_state import OptionsKey, Sampling
from relay.flows.template import FieldSpec, Template, TemplateScope
from relay.flows.template_decoder import TemplateDecoder, needs_system_init
from relay.flows.templates import StoredTemplate, TemplateCache

EXPORTER = "192.0.2.1"
FLOW = Template(
    template_id=300,
    fields=(
        FieldSpec(element=8, length=4),
        FieldSpec(element=12, length=4),
        FieldSpec(element=2, length=4),
    ),
)


def flow(src: int, packets: int) -> bytes:
    return b.record(
        FLOW, [bytes([10, 0, 0, src]), bytes([10, 0, 1, 1]), struct.pack("!I", packets)]
    )


def v9(*sets: bytes, sequence: int = 1, source_id: int = 0) -> Message:
    return messages.parse(b.v9_message(list(sets), sequence=sequence, source_id=source_id))


def ipfix(*sets: bytes, sequence: int = 0, domain: int = 0) -> Message:
    return messages.parse(b.ipfix_message(list(sets), sequence=sequence, domain=domain))


def templates_of(t: Template, *, ipfix_: bool = False) -> bytes:
    return b.template_set([t], ipfix=ipfix_)


def test_a_template_serves_the_data_of_its_own_datagram() -> None:
    d = TemplateDecoder()
    out = d.decode(
        v9(templates_of(FLOW), b.data_set(300, [flow(1, 5), flow(2, 6)])), EXPORTER, 9, 0.0
    )
    assert [len(x.data) for x in out.batches] == [24]
    assert out.batches[0].plan.template == FLOW
    assert out.problems == ()
    assert out.data_records == 2


def test_data_before_its_template_is_held_then_decoded_first_with_its_own_header() -> None:
    d = TemplateDecoder()
    early = d.decode(v9(b.data_set(300, [flow(1, 5)]), sequence=7), EXPORTER, 9, 10.0)
    assert early.batches == ()
    assert early.data_records is None
    assert d.statistics().held_sets == 1
    late = d.decode(
        v9(templates_of(FLOW), b.data_set(300, [flow(2, 6)]), sequence=8), EXPORTER, 9, 12.5
    )
    assert [x.header.flow_sequence for x in late.batches] == [7, 8]
    assert [x.held_for for x in late.batches] == [2.5, 0.0]
    s = d.statistics()
    assert (s.held_sets, s.sets_held, s.sets_released) == (0, 1, 1)


def test_held_sets_in_arrival_order() -> None:
    d = TemplateDecoder()
    for seq in (1, 2, 3):
        d.decode(v9(b.data_set(300, [flow(seq, seq)]), sequence=seq), EXPORTER, 9, float(seq))
    out = d.decode(v9(templates_of(FLOW), sequence=4), EXPORTER, 9, 5.0)
    assert [x.header.flow_sequence for x in out.batches] == [1, 2, 3]


def test_a_held_set_that_expires_is_counted_as_no_template() -> None:
    d = TemplateDecoder(hold_age=60.0)
    d.decode(v9(b.data_set(300, [flow(1, 5)])), EXPORTER, 9, 0.0)
    assert d.tick(59.0).sets == {}
    expired = d.tick(60.0)
    assert expired.sets == {"no_template": 1}
    assert expired.bytes == {"no_template": 12}
    assert d.statistics().sets_expired["no_template"] == 1
    # The template that comes later finds nothing left to release.
    assert d.decode(v9(templates_of(FLOW)), EXPORTER, 9, 61.0).batches == ()


def test_a_set_over_the_holding_bound_is_refused_and_reported() -> None:
    d = TemplateDecoder(hold_bytes_per_exporter=20)
    first = d.decode(v9(b.data_set(300, [flow(1, 5)])), EXPORTER, 9, 0.0)
    second = d.decode(v9(b.data_set(300, [flow(2, 5)])), EXPORTER, 9, 0.0)
    assert first.problems == ()
    assert [p.reason for p in second.problems] == ["hold_refused"]
    assert d.statistics().sets_refused == 1


def test_a_redefinition_replaces_the_template() -> None:
    d = TemplateDecoder()
    d.decode(v9(templates_of(FLOW)), EXPORTER, 9, 0.0)
    wider = Template(template_id=300, fields=(*FLOW.fields, FieldSpec(element=1, length=4)))
    out = d.decode(
        v9(templates_of(wider), b.data_set(300, [flow(1, 1) + b"\0\0\0\x09"])), EXPORTER, 9, 1.0
    )
    assert out.batches[0].plan.template == wider
    assert d.statistics().template_events["replaced"] == 1


def test_an_ipfix_withdrawal_is_ignored_and_counted() -> None:
    d = TemplateDecoder()
    d.decode(ipfix(templates_of(FLOW, ipfix_=True)), EXPORTER, 9, 0.0)
    out = d.decode(
        ipfix(b.set_bytes(2, b.withdrawal(300)), b.data_set(300, [flow(1, 1)])), EXPORTER, 9, 1.0
    )
    assert len(out.batches) == 1  # still decodes: over UDP a template only times out
    assert d.statistics().template_events["withdrawal_ignored"] == 1


def test_a_zero_field_template_is_refused_and_the_rest_of_the_datagram_decodes() -> None:
    d = TemplateDecoder()
    empty = b.set_bytes(0, b.raw_template(400, []))
    out = d.decode(v9(empty, templates_of(FLOW), b.data_set(300, [flow(1, 1)])), EXPORTER, 9, 0.0)
    assert [p.reason for p in out.problems] == ["empty_template"]
    assert len(out.batches) == 1
    s = d.statistics()
    assert s.templates_refused["no_fields"] == 1
    assert s.templates == 1


def restored_decoder() -> TemplateDecoder:
    cache = TemplateCache()
    scope = TemplateScope(exporter=EXPORTER, domain=0, version=9)
    cache.restore(
        [StoredTemplate(scope=scope, template=FLOW, learned_at=0.0, refreshed_at=0.0)], 10.0
    )
    return TemplateDecoder(cache=cache)


def test_a_restored_template_decodes_data_that_fits_and_counts_it_apart() -> None:
    d = restored_decoder()
    out = d.decode(v9(b.data_set(300, [flow(1, 1), flow(2, 2), flow(3, 3)])), EXPORTER, 9, 11.0)
    assert out.batches[0].restored
    assert d.statistics().records_from_restored == 3


def test_data_that_does_not_fit_a_restored_template_drops_it_and_waits_for_the_real_one() -> None:
    d = restored_decoder()
    out = d.decode(v9(b.data_set(300, [b"\x01" * 10])), EXPORTER, 9, 11.0)
    assert out.batches == ()
    s = d.statistics()
    assert s.template_events["restored_mismatch"] == 1
    assert s.held_sets == 1
    assert s.templates == 0


def test_two_exporters_and_two_domains_never_share_templates() -> None:
    d = TemplateDecoder()
    d.decode(v9(templates_of(FLOW), source_id=1), EXPORTER, 9, 0.0)
    assert d.decode(v9(b.data_set(300, [flow(1, 1)]), source_id=2), EXPORTER, 9, 0.0).batches == ()
    assert (
        d.decode(v9(b.data_set(300, [flow(1, 1)]), source_id=1), "192.0.2.2", 9, 0.0).batches == ()
    )
    assert (
        len(d.decode(v9(b.data_set(300, [flow(1, 1)]), source_id=1), EXPORTER, 9, 0.0).batches) == 1
    )


def test_address_port_scope_separates_ports_but_options_stay_per_address() -> None:
    d = TemplateDecoder(scope_port=True)
    d.decode(v9(templates_of(FLOW)), EXPORTER, 1000, 0.0)
    assert d.decode(v9(b.data_set(300, [flow(1, 1)])), EXPORTER, 2000, 0.0).batches == ()
    out = d.decode(v9(b.data_set(300, [flow(1, 1)])), EXPORTER, 1000, 0.0)
    assert out.batches[0].options_key == OptionsKey(exporter=EXPORTER, version=9, domain=0)


# --- options -----------------------------------------------------------------------------


def options_template(template_id: int, scope: list[FieldSpec], fields: list[FieldSpec]) -> Template:
    return Template(
        template_id=template_id, fields=(*scope, *fields), options=True, scope_fields=len(scope)
    )


def u(n: int, size: int) -> bytes:
    return n.to_bytes(size, "big")


def test_v9_system_scoped_sampling_is_domain_wide_and_not_forwarded() -> None:
    t = options_template(
        256,
        [FieldSpec(element=1, length=4)],
        [FieldSpec(element=34, length=4), FieldSpec(element=35, length=1)],
    )
    d = TemplateDecoder()
    out = d.decode(
        v9(
            b.template_set([t], ipfix=False),
            b.data_set(256, [b.record(t, [u(0, 4), u(100, 4), u(2, 1)])]),
        ),
        EXPORTER,
        9,
        0.0,
    )
    assert out.batches == ()
    assert out.data_records == 1
    key = OptionsKey(exporter=EXPORTER, version=9, domain=0)
    assert d.options.sampling_for(key, None) == Sampling(interval=100, mode=2)
    assert d.statistics().options_records == 1


def test_sampling_per_flow_sampler_id() -> None:
    t = options_template(
        257,
        [FieldSpec(element=1, length=4)],
        [
            FieldSpec(element=48, length=1),
            FieldSpec(element=49, length=1),
            FieldSpec(element=50, length=4),
        ],
    )
    d = TemplateDecoder()
    records = [
        b.record(t, [u(0, 4), u(sid, 1), u(1, 1), u(rate, 4)]) for sid, rate in ((3, 10), (4, 1000))
    ]
    d.decode(v9(b.template_set([t], ipfix=False), b.data_set(257, records)), EXPORTER, 9, 0.0)
    key = OptionsKey(exporter=EXPORTER, version=9, domain=0)
    assert d.options.sampling_for(key, 3) == Sampling(interval=10, mode=1)
    assert d.options.sampling_for(key, 4) == Sampling(interval=1000, mode=1)
    assert d.options.sampling_for(key, None) is None


def test_ipfix_selector_sampling_from_packet_interval_and_space() -> None:
    t = options_template(
        258,
        [FieldSpec(element=302, length=4)],
        [FieldSpec(element=305, length=4), FieldSpec(element=306, length=4)],
    )
    d = TemplateDecoder()
    rec = b.record(t, [u(7, 4), u(1, 4), u(99, 4)])
    d.decode(
        ipfix(b.template_set([t], ipfix=True), b.data_set(258, [rec]), domain=5), EXPORTER, 9, 0.0
    )
    key = OptionsKey(exporter=EXPORTER, version=10, domain=5)
    assert d.options.sampling_for(key, 7) == Sampling(interval=100, mode=0)


def test_v9_interface_scope_names_an_interface() -> None:
    t = options_template(259, [FieldSpec(element=2, length=4)], [FieldSpec(element=83, length=8)])
    d = TemplateDecoder()
    rec = b.record(t, [u(12, 4), b"Gi0/1\0\0\0"])
    d.decode(v9(b.template_set([t], ipfix=False), b.data_set(259, [rec])), EXPORTER, 9, 0.0)
    assert (
        d.options.interface_name(OptionsKey(exporter=EXPORTER, version=9, domain=0), 12) == "Gi0/1"
    )


def test_ipfix_interface_name_by_ingress_interface() -> None:
    t = options_template(
        260, [FieldSpec(element=10, length=4)], [FieldSpec(element=82, length=65535)]
    )
    d = TemplateDecoder()
    rec = b.record(t, [u(3, 4), b"eth3"])
    d.decode(ipfix(b.template_set([t], ipfix=True), b.data_set(260, [rec])), EXPORTER, 9, 0.0)
    assert (
        d.options.interface_name(OptionsKey(exporter=EXPORTER, version=10, domain=0), 3) == "eth3"
    )


# --- IPFIX times relative to systemInitTimeMilliseconds -----------------------------------

UPTIME_FLOW = Template(
    template_id=301,
    fields=(
        FieldSpec(element=8, length=4),
        FieldSpec(element=22, length=4),
        FieldSpec(element=21, length=4),
    ),
)
INIT = options_template(261, [FieldSpec(element=144, length=4)], [FieldSpec(element=160, length=8)])


def uptime_flow() -> bytes:
    return b.record(UPTIME_FLOW, [bytes([10, 0, 0, 1]), u(1000, 4), u(2000, 4)])


def test_ipfix_sysuptime_data_waits_for_a_system_init_time_announced_then_decodes() -> None:
    d = TemplateDecoder()
    # The options template announces IE 160; its value comes after the data.
    templates = b.template_set([UPTIME_FLOW], ipfix=True), b.template_set([INIT], ipfix=True)
    first = d.decode(
        ipfix(*templates, b.data_set(301, [uptime_flow()]), sequence=1), EXPORTER, 9, 0.0
    )
    assert first.batches == ()
    assert first.data_records is None
    init = b.data_set(261, [b.record(INIT, [u(0, 4), u(1_700_000_000_000, 8)])])
    second = d.decode(ipfix(init, sequence=2), EXPORTER, 9, 1.0)
    assert [x.header.flow_sequence for x in second.batches] == [1]
    # Once the init time is known, such data decodes at once.
    third = d.decode(ipfix(b.data_set(301, [uptime_flow()]), sequence=3), EXPORTER, 9, 2.0)
    assert len(third.batches) == 1
    assert third.data_records == 1
    assert d.statistics().records_without_system_init == 0


def test_ipfix_sysuptime_data_whose_init_time_never_comes_expires_as_no_system_init() -> None:
    d = TemplateDecoder(hold_age=60.0)
    templates = b.template_set([UPTIME_FLOW], ipfix=True), b.template_set([INIT], ipfix=True)
    d.decode(ipfix(*templates, b.data_set(301, [uptime_flow()])), EXPORTER, 9, 0.0)
    assert d.tick(61.0).sets == {"no_system_init": 1}


def test_sysuptime_data_of_an_exporter_that_never_announced_init_time_decodes_at_once() -> None:
    # MikroTik RouterOS: flowStart/EndSysUpTime, no options at all.
    d = TemplateDecoder()
    templates = b.template_set([UPTIME_FLOW], ipfix=True)
    out = d.decode(ipfix(templates, b.data_set(301, [uptime_flow()] * 2)), EXPORTER, 9, 0.0)
    assert len(out.batches) == 1
    assert out.data_records == 2
    assert d.statistics().records_without_system_init == 2


def test_only_ipfix_data_templates_with_sysuptime_and_no_init_element_wait() -> None:
    d = TemplateDecoder()
    plan = d._plan(UPTIME_FLOW, 10)
    assert needs_system_init(plan)
    assert not needs_system_init(d._plan(UPTIME_FLOW, 9))
    with_init = Template(
        template_id=302, fields=(*UPTIME_FLOW.fields, FieldSpec(element=160, length=8))
    )
    assert not needs_system_init(d._plan(with_init, 10))


# --- bounds and robustness ----------------------------------------------------------------


def test_a_flood_of_templates_from_one_exporter_stays_capped_and_refusals_are_counted() -> None:
    d = TemplateDecoder(cache=TemplateCache(max_templates_per_exporter=100))
    for start in range(256, 256 + 5000, 50):
        ts = [Template(template_id=i, fields=FLOW.fields) for i in range(start, start + 50)]
        d.decode(v9(b.template_set(ts, ipfix=False)), EXPORTER, 9, 0.0)
    s = d.statistics()
    assert s.templates == 100
    assert s.templates_refused["exporter_templates"] == 4900


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_messages_decode_without_raising(data: st.DataObject) -> None:
    d = TemplateDecoder()
    for _ in range(data.draw(st.integers(1, 4))):
        ipfix_ = data.draw(st.booleans())
        raw, _ = data.draw(b.messages(ipfix=ipfix_))
        # Damage some: cut, flip a byte.
        if data.draw(st.booleans()) and raw:
            at = data.draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :]
        if data.draw(st.booleans()):
            raw = raw[: data.draw(st.integers(0, len(raw)))]
        try:
            message = messages.parse(raw)
        except DecodeError:
            continue
        out = d.decode(message, EXPORTER, 9, 0.0)
        for batch in out.batches:
            assert batch.plan.template.template_id >= 256
    d.tick(1e6)
    assert d.statistics().held_sets == 0


def test_a_v9_sampler_table_scoped_by_sampler_id_sets_that_samplers_rate() -> None:
    # Cisco Flexible NetFlow's v9 sampler table: the scope field is FLOW_SAMPLER_ID (48).
    t = options_template(262, [FieldSpec(element=48, length=2)], [FieldSpec(element=50, length=4)])
    d = TemplateDecoder()
    rec = b.record(t, [u(5, 2), u(64, 4)])
    d.decode(v9(b.template_set([t], ipfix=False), b.data_set(262, [rec])), EXPORTER, 9, 0.0)
    key = OptionsKey(exporter=EXPORTER, version=9, domain=0)
    assert d.options.sampling_for(key, 5) == Sampling(interval=64, mode=0)
    assert d.options.sampling_for(key, None) is None


def test_a_v9_line_card_scope_is_not_taken_for_a_sampler() -> None:
    t = options_template(263, [FieldSpec(element=3, length=4)], [FieldSpec(element=34, length=4)])
    d = TemplateDecoder()
    rec = b.record(t, [u(7, 4), u(10, 4)])
    d.decode(v9(b.template_set([t], ipfix=False), b.data_set(263, [rec])), EXPORTER, 9, 0.0)
    key = OptionsKey(exporter=EXPORTER, version=9, domain=0)
    assert d.options.sampling_for(key, None) == Sampling(interval=10, mode=0)
