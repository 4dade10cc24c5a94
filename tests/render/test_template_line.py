"""The line of a v9/IPFIX record: common keys by element, the domain, then the rest."""

from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st
from support.ipfix_builder import records_of, templates

from relay.flows.elements import NTP_UNIX_OFFSET
from relay.flows.model import PacketHeader
from relay.flows.options_state import Sampling
from relay.flows.records import decode_records, plan_for
from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template
from relay.render.generic import iso_utc
from relay.render.keys import COMMON_KEYS
from relay.render.options import Body
from relay.render.template_line import NO_OPTIONS, LineContext, template_body, template_line

V9 = PacketHeader(
    version=9, count=1, sys_uptime=100_000, unix_secs=1_700_000_000, unix_nsecs=0,
    flow_sequence=77, has_sequence=True, sequence_step=1, domain=5,
)  # fmt: skip
IPFIX = PacketHeader(
    version=10, count=0, sys_uptime=0, unix_secs=1_700_000_000, unix_nsecs=0,
    flow_sequence=9, has_sequence=True, domain=3,
)  # fmt: skip


def template(*fields: tuple[int, int] | tuple[int, int, int]) -> Template:
    specs = tuple(FieldSpec(element=f[0], length=f[1], enterprise=f[2] if len(f) > 2 else 0)
                  for f in fields)  # fmt: skip
    return Template(template_id=256, fields=specs)


def line(
    t: Template,
    header: PacketHeader,
    data: bytes,
    body: Body = "json",
    context: LineContext = NO_OPTIONS,
) -> str:
    plan = plan_for(t, header.version)
    records, problems = decode_records(plan, data)
    assert problems == ()
    assert len(records) == 1
    return template_body(template_line(plan), records[0], header=header, exporter="192.0.2.9",
                         body=body, context=context)  # fmt: skip


SOFTFLOWD = template((8, 4), (12, 4), (22, 4), (21, 4), (1, 4), (2, 4), (10, 2), (14, 2),
                     (7, 2), (11, 2), (6, 1), (4, 1), (5, 1), (136, 1))  # fmt: skip
RECORD = (bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!IIIIHHHHBBBB", 99_000, 99_500,
          1500, 3, 1, 2, 5353, 53, 0x18, 17, 0, 2))  # fmt: skip


def test_a_v9_record_fills_the_common_keys_by_element_and_keeps_the_rest() -> None:
    body = json.loads(line(SOFTFLOWD, V9, RECORD))
    assert list(body)[:25] == list(COMMON_KEYS)
    assert body["version"] == 9
    assert body["exporter"] == "192.0.2.9"
    assert body["flow_sequence"] == 77
    assert (body["src_addr"], body["dst_addr"], body["next_hop"]) == ("10.0.0.1", "10.0.0.2",
                                                                    "0.0.0.0")  # fmt: skip
    assert body["packets"] == 3
    assert body["bytes"] == 1500
    assert body["src_port"] == 5353
    assert body["protocol"] == 17
    # export time 1_700_000_000 s, uptime 100 s: 99.0 s of uptime is 1 s before the export.
    assert body["first"] == "2023-11-14T22:13:19.000Z"
    assert body["last"] == "2023-11-14T22:13:19.500Z"
    assert list(body)[25:] == ["source_id", "flow_end_reason"]
    assert body["source_id"] == 5
    assert body["flow_end_reason"] == 2


def test_an_ipv6_record_has_ipv6_zeros_and_ipfix_the_observation_domain() -> None:
    t = template((27, 16), (28, 16), (152, 8))
    data = bytes(15) + b"\x01" + bytes(15) + b"\x02" + (1_700_000_000_123).to_bytes(8, "big")
    body = json.loads(line(t, IPFIX, data))
    assert (body["src_addr"], body["dst_addr"], body["next_hop"]) == ("::1", "::2", "::")
    assert body["first"] == "2023-11-14T22:13:20.123Z"
    assert body["last"] == "2023-11-14T22:13:20.000Z"  # no end element: the export time
    assert list(body)[25:] == ["observation_domain_id"]


def test_values_are_written_by_their_kind() -> None:
    ntp = ((1_700_000_000 + NTP_UNIX_OFFSET) << 32).to_bytes(8, "big")
    t = template((56, 6), (276, 1), (311, 8), (82, VARIABLE_LENGTH), (434, 4), (95, 4),
                 (156, 8), (12235, 2, 9), (40005, 1))  # fmt: skip
    data = b"".join([
        bytes.fromhex("0a1b2c3d4e5f"), b"\x01", struct.pack("!d", 0.5), b"\x04eth0",
        struct.pack("!i", -3), b"\xde\xad\xbe\xef", ntp, b"\x00\x07", b"\x02",
    ])  # fmt: skip
    body = json.loads(line(t, IPFIX, data))
    assert body["source_mac_address"] == "0a:1b:2c:3d:4e:5f"
    assert body["data_records_reliability"] is True
    assert body["sampling_probability"] == 0.5
    assert body["interface_name"] == "eth0"
    assert body["mib_object_value_integer"] == -3
    assert body["application_id"] == "deadbeef"
    assert body["first"] == "2023-11-14T22:13:20.000Z"  # flowStartNanoseconds fills first
    assert "flow_start_nanoseconds" not in body  # used for a common key: not repeated
    assert body["e9_12235"] == "0007"
    assert body["ie40005"] == "02"


def test_an_enterprise_element_never_fills_a_common_key() -> None:
    body = json.loads(line(template((8, 4, 9), (8, 4)), IPFIX, bytes([1, 1, 1, 1, 2, 2, 2, 2])))
    assert body["src_addr"] == "2.2.2.2"
    assert body["e9_8"] == "01010101"


def test_a_repeated_element_fills_its_key_once_and_keeps_the_others() -> None:
    body = json.loads(line(template((8, 4), (8, 4), (8, 4)), IPFIX, bytes(range(12))))
    assert body["src_addr"] == "0.1.2.3"
    assert body["source_ipv4_address_2"] == "4.5.6.7"
    assert body["source_ipv4_address_3"] == "8.9.10.11"


def test_a_field_that_cannot_hold_its_common_key_is_kept_under_its_own_name() -> None:
    body = json.loads(line(template((8, 5)), IPFIX, bytes(range(5))))
    assert body["src_addr"] == "0.0.0.0"
    assert body["source_ipv4_address"] == "0001020304"


def test_the_kv_body_has_the_same_keys_in_the_same_order() -> None:
    kv = line(SOFTFLOWD, V9, RECORD, body="kv")
    keys = [pair.split("=", 1)[0] for pair in kv.split(" ")]
    assert keys == list(json.loads(line(SOFTFLOWD, V9, RECORD)))


@given(st.data())
def test_every_record_of_any_template_becomes_one_json_object_with_unique_keys(
    data: st.DataObject,
) -> None:
    t = data.draw(templates(ipfix=True, options=False))
    encoded = data.draw(records_of(t, max_records=2))
    plan = plan_for(t, 10)
    line = template_line(plan)
    slots = line.slots
    assert len({s.key for s in slots}) == len(slots)
    records, _ = decode_records(plan, b"".join(encoded))
    for r in records:
        text = template_body(line, r, header=IPFIX, exporter="192.0.2.9", body="json")
        assert list(json.loads(text)) == [s.key for s in slots]


EXPORT_MS = 1_700_000_000_000
INIT_MS = 1_699_999_000_000  # the exporter booted 1000 s before the export


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def iso_of(ms: int) -> str:
    return iso_utc(ms)


def with_init(ms: int | None) -> LineContext:
    return LineContext(sampling=lambda _: None, interface_name=lambda _: None, system_init_ms=ms)


def test_ipfix_sys_up_times_count_from_the_record_s_own_system_init_time() -> None:
    t = template((22, 4), (21, 4), (160, 8))
    body = json.loads(line(t, IPFIX, u32(5_000) + u32(6_000) + u64(INIT_MS), context=with_init(1)))
    assert body["first"] == iso_of(INIT_MS + 5_000)
    assert body["last"] == iso_of(INIT_MS + 6_000)
    # Used for first/last: none of the three is repeated under its own name.
    assert list(body)[25:] == ["observation_domain_id"]


def test_ipfix_sys_up_times_take_the_domain_s_system_init_time_from_the_options() -> None:
    t = template((22, 4), (21, 4))
    body = json.loads(line(t, IPFIX, u32(5_000) + u32(6_000), context=with_init(INIT_MS)))
    assert (body["first"], body["last"]) == (iso_of(INIT_MS + 5_000), iso_of(INIT_MS + 6_000))
    # Without a system init time, the export time (the decoder holds such sets; last resort).
    body = json.loads(line(t, IPFIX, u32(5_000) + u32(6_000)))
    assert body["first"] == body["last"] == iso_of(EXPORT_MS)


def test_delta_microseconds_count_back_from_the_export_time() -> None:
    body = json.loads(line(template((158, 4), (159, 4)), IPFIX, u32(2_500_000) + u32(1_000)))
    assert body["first"] == iso_of(EXPORT_MS - 2_500)
    assert body["last"] == iso_of(EXPORT_MS - 1)
    assert "flow_start_delta_microseconds" not in body


def test_a_duration_gives_the_end_the_template_lacks() -> None:
    t = template((152, 8), (161, 4))
    body = json.loads(line(t, IPFIX, u64(EXPORT_MS - 9_000) + u32(4_000)))
    assert (body["first"], body["last"]) == (iso_of(EXPORT_MS - 9_000), iso_of(EXPORT_MS - 5_000))
    assert "flow_duration_milliseconds" not in body
    t = template((162, 4), (153, 8))
    body = json.loads(line(t, IPFIX, u32(1_500_000) + u64(EXPORT_MS)))
    assert body["first"] == iso_of(EXPORT_MS - 1_500)


def test_a_duration_with_both_ends_known_is_kept_under_its_own_name() -> None:
    t = template((152, 8), (153, 8), (161, 4))
    body = json.loads(line(t, IPFIX, u64(EXPORT_MS - 9_000) + u64(EXPORT_MS) + u32(9_000)))
    assert body["flow_duration_milliseconds"] == 9_000


def test_an_observation_time_is_both_ends_of_a_record_without_flow_times() -> None:
    body = json.loads(line(template((323, 8), (8, 4)), IPFIX, u64(EXPORT_MS - 7) + bytes(4)))
    assert body["first"] == body["last"] == iso_of(EXPORT_MS - 7)
    assert "observation_time_milliseconds" not in body


def test_sampling_comes_from_the_record_s_sampler_else_the_domain_else_zero() -> None:
    samplers = {None: Sampling(interval=10, mode=1), 7: Sampling(interval=1000, mode=2)}
    context = LineContext(sampling=samplers.get, interface_name=lambda _: None,
                          system_init_ms=None)  # fmt: skip
    body = json.loads(line(template((48, 1)), IPFIX, b"\x07", context=context))
    assert (body["sampling_interval"], body["sampling_mode"]) == (1000, 2)
    assert body["sampler_id"] == 7  # the sampler ID is no common key: kept
    body = json.loads(line(template((8, 4)), IPFIX, bytes(4), context=context))
    assert (body["sampling_interval"], body["sampling_mode"]) == (10, 1)
    body = json.loads(line(template((8, 4)), IPFIX, bytes(4)))
    assert (body["sampling_interval"], body["sampling_mode"]) == (0, 0)


def test_a_record_s_own_sampling_elements_win_over_the_options() -> None:
    context = LineContext(sampling=lambda _: Sampling(interval=10, mode=1),
                          interface_name=lambda _: None, system_init_ms=None)  # fmt: skip
    body = json.loads(line(template((34, 4), (35, 1)), IPFIX, u32(64) + b"\x02", context=context))
    assert (body["sampling_interval"], body["sampling_mode"]) == (64, 2)


def test_interface_names_follow_the_domain_only_for_named_interfaces() -> None:
    names = {3: 'Gi0/1 "wan"'}
    context = LineContext(sampling=lambda _: None, interface_name=names.get,
                          system_init_ms=None)  # fmt: skip
    t = template((10, 2), (14, 2), (7, 2))
    body = json.loads(line(t, IPFIX, bytes([0, 3, 0, 4, 0, 80]), context=context))
    assert list(body)[25:] == ["observation_domain_id", "input_if_name"]
    assert body["input_if_name"] == 'Gi0/1 "wan"'
    kv = line(t, IPFIX, bytes([0, 3, 0, 4, 0, 80]), body="kv", context=context)
    assert 'observation_domain_id=3 input_if_name="Gi0/1 \\"wan\\""' in kv
    assert "output_if_name" not in kv
