"""The synthetic exporter's v9 and IPFIX: what the relay's own wire decoders read back is what
the exporter meant to send, templates come first and again periodically, and the sequence
numbers follow each protocol's rule (pure: fixed clocks, seeded generators)."""

from __future__ import annotations

import itertools
import random
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.flows.messages import parse
from relay.flows.model import Message
from relay.flows.records import decode_records, plan_for
from relay.flows.template import Template
from relay.testing.flowgen import FieldValue
from relay.testing.synth import (
    INTERFACES,
    IPFIX_OPTIONS,
    IPFIX_TEMPLATES,
    MAX_RECORDS,
    V9_OPTIONS,
    V9_TEMPLATES,
    SentRecord,
    SyntheticExporter,
)

NOW = 1_795_000_000.25  # a fixed clock: 2026-11-18


def decode_stream(
    datagrams: list[bytes],
) -> tuple[list[Message], list[tuple[int, dict[int, object]]]]:
    """Every data record of the datagrams, by element, templates learned as they come."""
    known: dict[int, Template] = {}
    messages = []
    decoded: list[tuple[int, dict[int, object]]] = []
    for datagram in datagrams:
        message = parse(datagram)
        assert message.problems == ()
        assert message.warnings == ()
        messages.append(message)
        known.update((t.template_id, t) for t in message.templates)
        for data_set in message.data_sets:
            template = known[data_set.template_id]  # never data before its template
            plan = plan_for(template, message.header.version)
            records, problems = decode_records(plan, data_set.data)
            assert problems == ()
            elements = [f.element for f in template.fields]
            decoded += [
                (template.template_id, dict(zip(elements, r, strict=True))) for r in records
            ]
    return messages, decoded


def as_decoded(value: FieldValue, length: int, decoded: object) -> object:
    """What the decoder makes of a value the exporter sent."""
    if isinstance(value, bytes) and len(value) == 4:
        return socket.inet_ntoa(value)
    if isinstance(value, bytes) and len(value) == 16:
        return socket.inet_ntop(socket.AF_INET6, value)
    if isinstance(value, int) and isinstance(decoded, str):  # a v9 scope: the exporter's bytes
        return value.to_bytes(length, "big").hex()
    return value


def expected(
    sent: SentRecord, templates: dict[int, Template], decoded: dict[int, object]
) -> dict[int, object]:
    lengths = {f.element: f.length for f in templates[sent.template_id].fields}
    return {e: as_decoded(v, lengths[e], decoded.get(e)) for e, v in sent.values.items()}


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    version=st.sampled_from([9, 10]),
    counts=st.lists(st.integers(1, 40) | st.just(MAX_RECORDS), min_size=1, max_size=4),
    uptime_s=st.integers(0, 200 * 86400),  # past SysUpTime's 49.7-day wrap too
)
def test_the_datagrams_decode_to_the_values_the_exporter_put_in(
    seed: int, version: int, counts: list[int], uptime_s: int
) -> None:
    exporter = SyntheticExporter(
        rng=random.Random(seed), boot_time=NOW - uptime_s, templates_every=2
    )
    datagrams: list[bytes] = []
    sent: list[SentRecord] = []
    for i, count in enumerate(counts):
        export = exporter.export(version, count, NOW + i)
        assert export.flows == count
        datagrams += export.datagrams
        sent += export.sent
        assert all(len(d) <= 65507 for d in export.datagrams)
    _, decoded = decode_stream(datagrams)
    defined = IPFIX_TEMPLATES + IPFIX_OPTIONS if version == 10 else V9_TEMPLATES + V9_OPTIONS
    templates = {t.template_id: t for t in defined}
    assert [t for t, _ in decoded] == [s.template_id for s in sent]
    for s, (_, values) in zip(sent, decoded, strict=True):
        assert values == expected(s, templates, values)
    flows = [s for s in sent if s.template_id in (256, 257)]
    assert len(flows) == sum(counts)


@pytest.mark.parametrize("version", [9, 10])
def test_templates_and_options_come_first_and_again_every_n_data_datagrams(version: int) -> None:
    exporter = SyntheticExporter(rng=random.Random(1), boot_time=NOW - 3600, templates_every=3)
    exports = [exporter.export(version, 5, NOW + i) for i in range(7)]
    assert [e.template_datagrams for e in exports] == [1, 0, 0, 1, 0, 0, 1]
    first = parse(exports[0].datagrams[0])
    templates = (IPFIX_TEMPLATES + IPFIX_OPTIONS) if version == 10 else (V9_TEMPLATES + V9_OPTIONS)
    assert first.templates == templates
    # The options data rides with the templates: sampling, and for IPFIX the system init
    # time and one interface name per ifIndex the flows use.
    options = {t.template_id for t in templates if t.options}
    assert {s.template_id for s in first.data_sets} == options
    data = parse(exports[0].datagrams[1])
    assert data.templates == ()
    assert {s.template_id for s in data.data_sets} <= {256, 257}


def test_ipfix_options_name_every_interface_and_give_the_sampling_as_interval_and_space() -> None:
    exporter = SyntheticExporter(rng=random.Random(2), boot_time=NOW - 7200)
    export = exporter.export(10, 50, NOW)
    by_template: dict[int, list[SentRecord]] = {}
    for s in export.sent:
        by_template.setdefault(s.template_id, []).append(s)
    [sampling] = by_template[260]
    interval, space = sampling.values[305], sampling.values[306]
    assert isinstance(interval, int)
    assert isinstance(space, int)
    assert (interval + space) // interval == 100
    [init] = by_template[261]
    assert init.values[160] == round((NOW - 7200) * 1000)
    named = {s.values[10] for s in by_template[262]}
    assert named == set(INTERFACES)
    used = {s.values[e] for s in by_template[256] + by_template[257] for e in (10, 14)}
    assert used <= named
    # Times: absolute in the IPv4 template, relative to systemInitTimeMilliseconds in IPv6.
    _, decoded = decode_stream(list(export.datagrams))
    init_ms = init.values[160]
    assert isinstance(init_ms, int)
    for template_id, values in decoded:
        if template_id == 256:
            assert NOW * 1000 - 70_000 <= values[152] <= values[153] <= NOW * 1000  # type: ignore[operator]
        if template_id == 257:
            first = init_ms + values[22]  # type: ignore[operator]
            assert NOW * 1000 - 70_000 <= first <= NOW * 1000


@pytest.mark.parametrize("version", [9, 10])
def test_sequence_numbers_v9_one_per_datagram_ipfix_one_per_data_record(version: int) -> None:
    exporter = SyntheticExporter(rng=random.Random(3), boot_time=NOW - 60, templates_every=2)
    datagrams = [d for i in range(5) for d in exporter.export(version, 4 + i, NOW + i).datagrams]
    messages, _ = decode_stream(datagrams)
    for before, after in itertools.pairwise(messages):
        step = after.header.flow_sequence - before.header.flow_sequence
        if version == 9:
            assert step == 1
        else:
            # IPFIX counts the data records (options records too) before the message.
            records = sum(
                len(decode_records(plan_for(t, 10), s.data)[0])
                for s in before.data_sets
                for t in IPFIX_TEMPLATES + IPFIX_OPTIONS
                if t.template_id == s.template_id
            )
            assert step == records
    assert messages[0].header.flow_sequence == 0


def test_v9_header_count_is_templates_plus_records() -> None:
    exporter = SyntheticExporter(rng=random.Random(4), boot_time=NOW - 60)
    first, data = exporter.export(9, 9, NOW).datagrams
    assert parse(first).header.count == len(V9_TEMPLATES) + len(V9_OPTIONS) + 1
    assert parse(data).header.count == 9


def test_the_legacy_versions_still_come_one_datagram_each() -> None:
    a = SyntheticExporter(rng=random.Random(5), boot_time=NOW - 60)
    b = SyntheticExporter(rng=random.Random(5), boot_time=NOW - 60)
    for version in (1, 5, 6, 7):
        export = a.export(version, 3, NOW)
        assert export.datagrams == (b.datagram(version, 3, NOW),)
        assert export.flows == 3
        assert export.template_datagrams == 0


def test_too_many_flows_for_one_datagram_is_refused() -> None:
    exporter = SyntheticExporter(rng=random.Random(6), boot_time=NOW)
    with pytest.raises(ValueError, match="do not fit"):
        exporter.export(10, MAX_RECORDS + 1, NOW)
