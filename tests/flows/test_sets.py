"""The v9 and IPFIX headers and the set walker: sets by their lengths, problems by reason."""

from __future__ import annotations

import struct

import pytest
from support.ipfix_builder import (
    IPFIX_OPTIONS,
    IPFIX_TEMPLATE,
    V9_OPTIONS,
    V9_TEMPLATE,
    data_set,
    ipfix_message,
    raw_template,
    set_bytes,
    template_set,
    v9_message,
    withdrawal,
)

from relay.errors import DecodeError
from relay.flows import ipfix, messages, v9
from relay.flows.model import WARN_TRAILING_BYTES
from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template

V4 = Template(
    template_id=256,
    fields=(FieldSpec(element=8, length=4), FieldSpec(element=12, length=4),
            FieldSpec(element=2, length=4)),
)  # fmt: skip
PEN = Template(
    template_id=300,
    fields=(FieldSpec(element=12235, length=VARIABLE_LENGTH, enterprise=9),
            FieldSpec(element=82, length=VARIABLE_LENGTH)),
)  # fmt: skip
OPTIONS = Template(
    template_id=257,
    fields=(FieldSpec(element=10, length=4), FieldSpec(element=34, length=4),
            FieldSpec(element=35, length=1)),
    options=True,
    scope_fields=1,
)  # fmt: skip
RECORD = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 7])


def test_the_v9_header_is_read_and_its_count_not_trusted() -> None:
    data = v9_message(
        [template_set([V4], ipfix=False), data_set(256, [RECORD, RECORD])],
        count=99, uptime=5000, secs=1_700_000_123, sequence=42, source_id=7,
    )  # fmt: skip
    message = v9.parse(data)
    h = message.header
    assert (h.version, h.count, h.sys_uptime, h.unix_secs, h.flow_sequence, h.domain) == (
        9, 99, 5000, 1_700_000_123, 42, 7,
    )  # fmt: skip
    assert h.has_sequence
    assert h.sequence_step == 1
    assert h.sequence_scope == (9, 7, 0)
    assert message.templates == (V4,)
    assert [(s.template_id, s.data, s.part) for s in message.data_sets] == [
        (256, RECORD + RECORD, 1)
    ]
    assert message.problems == ()
    assert message.trailing_bytes == 0


def test_the_ipfix_header_gives_length_time_sequence_and_domain() -> None:
    data = ipfix_message(
        [template_set([V4], ipfix=True), data_set(256, [RECORD])],
        export_time=1_700_000_321, sequence=1000, domain=3,
    )  # fmt: skip
    message = ipfix.parse(data)
    h = message.header
    assert (h.version, h.unix_secs, h.flow_sequence, h.domain) == (10, 1_700_000_321, 1000, 3)
    # IPFIX counts data records: the step is known once the data sets are decoded.
    assert h.has_sequence
    assert h.sequence_step == 0
    assert message.templates == (V4,)
    assert message.data_sets[0].data == RECORD


def test_ipfix_enterprise_fields_and_variable_lengths_are_parsed() -> None:
    message = ipfix.parse(ipfix_message([template_set([PEN], ipfix=True)]))
    assert message.templates == (PEN,)
    assert message.templates[0].record_length is None


@pytest.mark.parametrize("ipfix_format", [False, True])
def test_options_templates_keep_their_scope(ipfix_format: bool) -> None:
    build = ipfix_message if ipfix_format else v9_message
    message = messages.parse(build([template_set([OPTIONS], ipfix=ipfix_format)]))
    assert message.templates == (OPTIONS,)


def test_padding_at_the_end_of_a_template_set_is_not_a_template() -> None:
    for build, fmt in ((v9_message, False), (ipfix_message, True)):
        message = messages.parse(build([template_set([V4], ipfix=fmt, pad=3)]))
        assert message.templates == (V4,)
        assert message.problems == ()
        message = messages.parse(build([template_set([V4], ipfix=fmt, pad=8)]))
        assert message.templates == (V4,)
        assert message.problems == ()


def test_v9_options_templates_are_padded_to_four_bytes() -> None:
    # 6 + 12 = 18 bytes of record: two bytes of padding follow it.
    message = v9.parse(v9_message([template_set([OPTIONS], ipfix=False, pad=2)]))
    assert message.templates == (OPTIONS,)
    assert message.problems == ()


def test_an_ipfix_withdrawal_is_an_event_never_a_template() -> None:
    body = withdrawal(256) + withdrawal(IPFIX_TEMPLATE)
    message = ipfix.parse(ipfix_message([set_bytes(IPFIX_TEMPLATE, body)]))
    assert message.templates == ()
    assert [(w.template_id, w.options) for w in message.withdrawals] == [(256, False), (2, False)]
    message = ipfix.parse(ipfix_message([set_bytes(IPFIX_OPTIONS, withdrawal(257))]))
    assert [(w.template_id, w.options) for w in message.withdrawals] == [(257, True)]


def test_a_v9_template_with_no_fields_is_refused_and_the_next_one_kept() -> None:
    body = raw_template(400, []) + raw_template(256, [(8, 4), (12, 4), (2, 4)])
    message = v9.parse(v9_message([set_bytes(V9_TEMPLATE, body)]))
    assert [p.reason for p in message.problems] == ["empty_template"]
    assert message.templates == (V4,)


@pytest.mark.parametrize(
    ("fields", "template_id", "reason"),
    [
        ([(8, 0), (12, 4)], 256, "field_length"),
        ([(8, 4)], 255, "bad_template_id"),
        ([(8, 4)], 0, "bad_template_id"),
    ],
)
def test_impossible_template_records_are_problems(
    fields: list[tuple[int, int]], template_id: int, reason: str
) -> None:
    for build, set_id in ((v9_message, V9_TEMPLATE), (ipfix_message, IPFIX_TEMPLATE)):
        body = raw_template(template_id, fields) + raw_template(256, [(8, 4), (12, 4), (2, 4)])
        message = messages.parse(build([set_bytes(set_id, body)]))
        assert [p.reason for p in message.problems] == [reason]
        assert message.templates == (V4,)


def test_v9_has_no_variable_length_fields() -> None:
    body = raw_template(256, [(82, VARIABLE_LENGTH)])
    message = v9.parse(v9_message([set_bytes(V9_TEMPLATE, body)]))
    assert [p.reason for p in message.problems] == ["field_length"]


def test_an_ipfix_options_template_without_scope_is_refused() -> None:
    body = struct.pack("!HHH", 257, 1, 0) + struct.pack("!HH", 34, 4)
    message = ipfix.parse(ipfix_message([set_bytes(IPFIX_OPTIONS, body)]))
    assert [p.reason for p in message.problems] == ["bad_scope"]


def test_a_v9_options_template_of_uneven_lengths_is_refused() -> None:
    body = struct.pack("!HHH", 257, 3, 4) + bytes(7)
    message = v9.parse(v9_message([set_bytes(V9_OPTIONS, body)]))
    assert [p.reason for p in message.problems] == ["bad_scope"]


def test_a_template_running_past_its_set_is_a_problem_and_later_sets_still_decode() -> None:
    truncated = raw_template(256, [(8, 4), (12, 4), (2, 4)])[:-2]
    data = ipfix_message([set_bytes(IPFIX_TEMPLATE, truncated), data_set(256, [RECORD])])
    message = ipfix.parse(data)
    assert [(p.reason, p.part) for p in message.problems] == [("template_past_set", 0)]
    assert [s.template_id for s in message.data_sets] == [256]


def test_a_set_past_the_datagram_is_a_problem_and_the_sets_before_it_are_kept() -> None:
    data = v9_message([template_set([V4], ipfix=False), data_set(256, [RECORD])])
    message = v9.parse(data[:-1])
    assert [(p.reason, p.part) for p in message.problems] == [("set_past_end", 1)]
    assert message.templates == (V4,)
    assert message.data_sets == ()


def test_a_set_shorter_than_its_header_ends_the_walk() -> None:
    data = v9_message([template_set([V4], ipfix=False), set_bytes(256, RECORD, length=2)])
    message = v9.parse(data)
    assert [p.reason for p in message.problems] == ["set_too_short"]
    assert message.templates == (V4,)


@pytest.mark.parametrize(("build", "set_id"), [(v9_message, 2), (v9_message, 255),
                                              (ipfix_message, 0), (ipfix_message, 4)])  # fmt: skip
def test_a_reserved_set_id_is_a_problem_of_its_own(build: object, set_id: int) -> None:
    assert callable(build)
    data = build([set_bytes(set_id, b"abcd"), data_set(256, [RECORD])])
    message = messages.parse(data)
    assert [p.reason for p in message.problems] == ["reserved_set_id"]
    assert [s.template_id for s in message.data_sets] == [256]


def test_zero_bytes_after_the_sets_are_padding() -> None:
    message = v9.parse(v9_message([data_set(256, [RECORD])]) + bytes(700))
    assert message.problems == ()
    assert message.trailing_bytes == 700
    assert message.warnings == (WARN_TRAILING_BYTES,)


def test_bytes_after_the_ipfix_message_length_are_trailing() -> None:
    message = ipfix.parse(ipfix_message([data_set(256, [RECORD])]) + b"xyz")
    assert message.trailing_bytes == 3
    assert [s.data for s in message.data_sets] == [RECORD]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x00", "short_header"),
        (v9_message([])[:19], "short_header"),
        (ipfix_message([])[:15], "short_header"),
        (ipfix_message([], length=15), "bad_length"),
        (ipfix_message([], length=17), "short_message"),
        (b"\x00\x05" + bytes(30), "unknown_version"),
    ],
)
def test_a_header_that_is_not_there_is_a_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        messages.parse(data)
    assert caught.value.reason == reason


def test_an_empty_message_is_a_message() -> None:
    message = ipfix.parse(ipfix_message([]))
    assert (message.templates, message.data_sets, message.problems) == ((), (), ())
