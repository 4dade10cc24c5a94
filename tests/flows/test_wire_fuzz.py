"""Fuzzing templates and data together: every input is a Message or a DecodeError, fast.

h11's invariant, for datagrams: whatever the bytes, the decoder returns a value or raises the
one remote error; any other exception is a bug. Work is bounded: a datagram of n bytes never
yields more than n records, so no input can make the decoder spin.
"""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st
from support.ipfix_builder import ipfix_message, messages, set_bytes, template_set, templates

from relay.errors import DecodeError
from relay.flows import messages as wire
from relay.flows.model import Message
from relay.flows.records import decode_records, plan_for
from relay.flows.template import Template


def decode_all(data: bytes, known: dict[int, Template] | None = None) -> tuple[Message, int]:
    """Parse, learn the message's templates into ``known``, decode every data set it can."""
    message = wire.parse(data)
    known = {} if known is None else known
    for t in message.templates:
        known[t.template_id] = t
    count = 0
    for data_set in message.data_sets:
        template = known.get(data_set.template_id)
        if template is None:
            continue
        records, problems = decode_records(
            plan_for(template, message.header.version), data_set.data, part=data_set.part
        )
        assert all(p.part == data_set.part for p in problems)
        count += len(records)
    assert count <= len(data)
    return message, count


def survives(data: bytes, known: dict[int, Template] | None = None) -> None:
    with contextlib.suppress(DecodeError):
        decode_all(data, known)


@given(st.sampled_from([9, 10]), st.binary(max_size=600))
@settings(max_examples=400, deadline=None)  # a long message on a loaded machine
def test_any_bytes_after_a_version_field_decode_or_raise_the_decode_error(
    version: int, body: bytes
) -> None:
    survives(version.to_bytes(2, "big") + body)


@given(st.booleans(), st.data())
def test_a_well_formed_message_gives_back_its_templates_and_every_record(
    ipfix: bool, data: st.DataObject
) -> None:
    encoded, defined = data.draw(messages(ipfix=ipfix))
    message, _ = decode_all(encoded)
    assert message.problems == ()
    by_id = {t.template_id: t for t in defined}
    assert {t.template_id: t for t in message.templates} == by_id
    for data_set in message.data_sets:
        plan = plan_for(by_id[data_set.template_id], message.header.version)
        _, problems = decode_records(plan, data_set.data)
        assert problems == ()


@given(st.booleans(), st.data())
@settings(max_examples=200, deadline=None)
def test_a_mangled_message_still_decodes_or_raises_the_decode_error(
    ipfix: bool, data: st.DataObject
) -> None:
    encoded, defined = data.draw(messages(ipfix=ipfix))
    mangled = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(mangled) - 1))
        mangled[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mangled)))
    # The templates are known from before, as a cache would know them.
    survives(bytes(mangled[:cut]), {t.template_id: t for t in defined})


@given(st.data())
@settings(deadline=None)  # a long message on a loaded machine: 261 ms against 200
def test_every_prefix_of_a_message_decodes_or_raises_the_decode_error(
    data: st.DataObject,
) -> None:
    encoded, defined = data.draw(messages(ipfix=data.draw(st.booleans())))
    for cut in range(len(encoded) + 1):
        survives(encoded[:cut], {t.template_id: t for t in defined})


@given(st.lists(templates(ipfix=True), min_size=1, max_size=3), st.binary(max_size=400))
def test_data_sets_of_random_bytes_under_random_templates_never_raise(
    defined: list[Template], body: bytes
) -> None:
    sets = [template_set([t], ipfix=True) for t in defined]
    sets += [set_bytes(t.template_id, body) for t in defined]
    message, _ = decode_all(ipfix_message(sets))
    assert len(message.templates) == len(defined)
