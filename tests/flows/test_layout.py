"""The Layout abstraction (relay.flows.layout): what a version module or, later, a template
produces, checked when built, with a fingerprint per layout."""

from __future__ import annotations

import pytest
from support.netflow_builder import RECORD_SIZE, VERSIONS, Header, Record, datagram

from relay.flows import LAYOUTS, decode, split
from relay.flows.layout import Field, Kind, Layout


def small(name: str = "t", **changes: object) -> Layout:
    fields = {
        "a": Field(name="a", offset=0, size=4, kind=Kind.IPV4, element=8),
        "b": Field(name="b", offset=6, size=2, element=7),
    }
    fields.update(changes)  # type: ignore[arg-type]
    return Layout(name=name, size=10, fields=tuple(fields.values()))


def test_gaps_between_fields_and_after_the_last_are_padding() -> None:
    assert small().struct.format == "!4s2xH2x"


def test_overlapping_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        small(b=Field(name="b", offset=3, size=2))


def test_a_field_past_the_record_is_refused() -> None:
    with pytest.raises(ValueError, match="past the 10-byte record"):
        small(b=Field(name="b", offset=9, size=2))


@pytest.mark.parametrize("size", [0, 9, 16])
def test_an_integer_of_an_impossible_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match=f"no unsigned integer of {size} bytes"):
        Field(name="x", offset=0, size=size)


@pytest.mark.parametrize("size", [3, 5, 6, 7])
def test_a_reduced_size_integer_of_no_struct_size_unpacks_as_bytes(size: int) -> None:
    # RFC 7011 §6.2: an unsigned64 may come in any 1-8 bytes.
    assert Field(name="x", offset=0, size=size).struct_code == f"{size}s"


@pytest.mark.parametrize(
    ("kind", "size", "code"),
    [
        (Kind.SIGNED, 2, "h"),
        (Kind.SIGNED, 3, "3s"),
        (Kind.FLOAT, 4, "f"),
        (Kind.FLOAT, 8, "d"),
        (Kind.BOOLEAN, 1, "B"),
        (Kind.MAC, 6, "6s"),
        (Kind.IPV6, 16, "16s"),
        (Kind.STRING, 11, "11s"),
        (Kind.OCTETS, 0, "0s"),
        (Kind.DATETIME_S, 4, "I"),
        (Kind.DATETIME_MS, 8, "Q"),
        (Kind.DATETIME_NS, 8, "Q"),
    ],
)
def test_template_kinds_unpack_with_their_struct_code(kind: Kind, size: int, code: str) -> None:
    assert Field(name="x", offset=0, size=size, kind=kind).struct_code == code


@pytest.mark.parametrize(
    ("kind", "size"),
    [(Kind.FLOAT, 2), (Kind.MAC, 8), (Kind.IPV6, 4), (Kind.BOOLEAN, 2), (Kind.DATETIME_MS, 4)],
)
def test_a_template_kind_of_the_wrong_size_is_refused(kind: Kind, size: int) -> None:
    with pytest.raises(ValueError, match=f"a {kind.value} field has"):
        Field(name="x", offset=0, size=size, kind=kind)


def test_an_enterprise_element_has_another_fingerprint_than_ianas() -> None:
    iana = Layout(name="a", size=4, fields=(Field(name="x", offset=0, size=4, element=8),))
    pen = Field(name="x", offset=0, size=4, element=8, enterprise=9)
    assert Layout(name="a", size=4, fields=(pen,)).fingerprint != iana.fingerprint


def test_equal_fields_have_equal_fingerprints_whatever_the_layout_is_called() -> None:
    assert small("one").fingerprint == small("two").fingerprint


@pytest.mark.parametrize(
    "change",
    [
        Field(name="b", offset=6, size=2, element=11),  # another element
        Field(name="b", offset=6, size=4, element=7, kind=Kind.UPTIME_MS),  # another meaning
        Field(name="b", offset=8, size=2, element=7),  # another offset
        Field(name="c", offset=6, size=2, element=7),  # another name
    ],
)
def test_any_change_of_a_field_changes_the_fingerprint(change: Field) -> None:
    assert small(b=change).fingerprint != small().fingerprint


def test_every_version_has_its_own_fingerprint() -> None:
    prints = {fmt.layout.fingerprint for fmt in LAYOUTS.values()}
    assert len(prints) == len(LAYOUTS)


@pytest.mark.parametrize("version", VERSIONS)
def test_each_version_layout_has_the_documented_record_size(version: int) -> None:
    assert LAYOUTS[version].layout.size == LAYOUTS[version].record.size == RECORD_SIZE[version]


@pytest.mark.parametrize(("version", "has_sequence"), [(1, False), (5, True), (6, True), (7, True)])
def test_the_header_says_whether_there_is_a_sequence_and_its_step(
    version: int, has_sequence: bool
) -> None:
    header = decode(datagram(version, [Record()] * 3, header=Header(flow_sequence=7))).header
    assert header.has_sequence is has_sequence
    # v1/v5/v6/v7 sequences count flows: the next datagram's is `count` further on.
    assert header.sequence_step == (3 if has_sequence else 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_legacy_datagram_is_one_batch_of_its_version_layout(version: int) -> None:
    parts = split(datagram(version, [Record()] * 2, header=Header(flow_sequence=7), trailing=b"xy"))
    (batch,) = parts.batches
    assert batch.layout is LAYOUTS[version].layout
    assert batch.record_count == 2
    assert len(batch.data) == 2 * RECORD_SIZE[version]
    assert parts.problems == ()
    assert parts.trailing_bytes == 2
