"""The templates state file: round trip, every kind of damage, the atomic write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.addresses import exporter_address
from relay.flows import template_store
from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template, TemplateScope
from relay.flows.template_store import (
    FILE_NAME,
    MAGIC,
    Status,
    decode_templates,
    encode_templates,
    load_templates,
    save_templates,
)
from relay.flows.templates import StoredTemplate
from relay.spool import codec

fields = st.builds(
    FieldSpec,
    element=st.integers(0, 0xFFFF),
    length=st.one_of(st.integers(0, 64), st.just(VARIABLE_LENGTH)),
    enterprise=st.one_of(st.just(0), st.integers(1, 0xFFFFFFFF)),
)


@st.composite
def templates(draw: st.DrawFn) -> Template:
    fs = tuple(draw(st.lists(fields, min_size=1, max_size=12)))
    options = draw(st.booleans())
    scope_fields = draw(st.integers(1 if options else 0, len(fs) if options else 0))
    return Template(
        template_id=draw(st.integers(256, 0xFFFF)),
        fields=fs,
        options=options,
        scope_fields=scope_fields,
    )


addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str).filter(lambda a: exporter_address(a) == a),
)
scopes = st.builds(
    TemplateScope,
    exporter=addresses,
    domain=st.integers(0, 0xFFFFFFFF),
    version=st.sampled_from([9, 10]),
    port=st.one_of(st.none(), st.integers(0, 0xFFFF)),
)
times = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
stored_templates = st.builds(
    StoredTemplate, scope=scopes, template=templates(), learned_at=times, refreshed_at=times
)


@settings(max_examples=300, deadline=None)
@given(st.lists(stored_templates, max_size=8))
def test_every_template_comes_back_exactly_as_it_was_saved(items: list[StoredTemplate]) -> None:
    data, omitted = encode_templates(items)
    loaded = decode_templates(data)
    assert omitted == 0
    assert loaded.status is Status.OK, loaded.detail
    assert loaded.templates == items


def sample() -> list[StoredTemplate]:
    v4 = TemplateScope(exporter="192.0.2.1", domain=7, version=9)
    v6 = TemplateScope(exporter="2001:db8::1", domain=1, version=10, port=4739)
    return [
        StoredTemplate(
            scope=v4,
            template=Template(
                template_id=256,
                fields=(FieldSpec(element=8, length=4), FieldSpec(element=12, length=4)),
            ),
            learned_at=1.5,
            refreshed_at=2.5,
        ),
        StoredTemplate(
            scope=v6,
            template=Template(
                template_id=300,
                fields=(
                    FieldSpec(element=149, length=4),
                    FieldSpec(element=12235, length=VARIABLE_LENGTH, enterprise=9),
                ),
                options=True,
                scope_fields=1,
            ),
            learned_at=3.0,
            refreshed_at=4.0,
        ),
    ]


def test_every_single_bit_flip_is_caught_and_nothing_unsaved_is_loaded() -> None:
    items = sample()
    data, _ = encode_templates(items)
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        loaded = decode_templates(bytes(damaged))
        assert loaded.status is not Status.OK, bit
        assert loaded.templates == items[: len(loaded.templates)], bit


def test_every_truncation_is_caught_and_keeps_only_whole_templates() -> None:
    items = sample()
    data, _ = encode_templates(items)
    for size in range(len(data)):
        loaded = decode_templates(data[:size])
        assert loaded.status in (Status.DAMAGED, Status.FOREIGN), size
        assert loaded.templates == items[: len(loaded.templates)], size
    assert decode_templates(data[: len(data) - codec.SEAL_SIZE]).templates == items


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", Status.FOREIGN),
        (b"FRSPOOL1" + bytes(8), Status.FOREIGN),  # a spool segment
        (b"\x00" * 64, Status.FOREIGN),  # what a power cut leaves
        (b"FRTMPLS2" + b"anything", Status.OTHER_VERSION),
        (MAGIC + codec.encode_seal(1, 0), Status.DAMAGED),  # a spool seal, not ours
        (encode_templates([])[0] + b"x", Status.DAMAGED),  # bytes after the seal
        (encode_templates([])[0], Status.OK),
    ],
)
def test_a_foreign_or_damaged_file_is_named_never_raised(data: bytes, status: Status) -> None:
    loaded = decode_templates(data)
    assert loaded.status is status
    assert loaded.templates == []
    assert (loaded.detail == "") is (status is Status.OK)


def frame(payload: bytes) -> bytes:
    return MAGIC + codec.encode_frames([payload]) + codec.encode_seal(template_store._SEAL_ID, 1)


def good_payload() -> bytes:
    data, _ = encode_templates(sample()[:1])
    return codec.decode_frames(data, len(MAGIC)).lines[0]


def patched(offset: int, value: bytes) -> bytes:
    payload = bytearray(good_payload())
    payload[offset : offset + len(value)] = value
    return bytes(payload)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"short", "too short"),
        (patched(0, b"\x05"), "version"),  # NetFlow v5 has no templates
        (patched(1, b"\x80"), "flags"),
        (patched(2, b"\x01\x00"), "flags"),  # a port without the port flag
        (patched(8, b"\x01\x00"), "between 256"),  # template ID 256 -> 1
        (patched(10, b"\x01\x00"), "scope"),  # scope fields in a data template
        (patched(12, b"\x03\x00"), "field count"),
        (patched(14, b"\x00\x00\x00\x00\x00\x00\xf8\x7f"), "finite"),  # NaN learned time
        (good_payload()[:-1], "field count"),
        (patched(31, b"\xff"), "ASCII"),
        (patched(31, b"x"), "IP address"),
    ],
)
def test_an_intact_frame_with_an_impossible_template_is_rejected(
    payload: bytes, reason: str
) -> None:
    loaded = decode_templates(frame(payload))
    assert loaded.status is Status.DAMAGED
    assert loaded.rejected == 1
    assert loaded.templates == []
    assert reason in loaded.detail


def test_an_address_not_written_as_the_relay_writes_it_is_rejected() -> None:
    item = sample()[0]
    odd = StoredTemplate(
        scope=TemplateScope(exporter="::ffff:192.0.2.1", domain=1, version=9),
        template=item.template,
        learned_at=0.0,
        refreshed_at=0.0,
    )
    loaded = decode_templates(encode_templates([odd, item])[0])
    assert loaded.status is Status.DAMAGED
    assert loaded.templates == [item]  # the next intact record is still read


def test_the_size_bound_leaves_out_the_least_recently_sent() -> None:
    items = sample()
    whole, _ = encode_templates(items)
    data, omitted = encode_templates(items, max_size=len(whole) - 1)
    assert omitted == 1
    assert decode_templates(data).templates == items[1:]
    assert len(data) < len(whole)


def test_a_file_over_the_size_bound_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    path.write_bytes(MAGIC + bytes(template_store.MAX_FILE_SIZE))
    assert load_templates(path).status is Status.TOO_LARGE


def test_save_then_load_through_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    assert load_templates(path).status is Status.MISSING
    assert save_templates(path, sample()) == 0
    loaded = load_templates(path)
    assert (loaded.status, loaded.templates) == (Status.OK, sample())
    assert save_templates(path, sample()[:1]) == 0  # replaced, not appended
    assert load_templates(path).templates == sample()[:1]
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_damaged_file_is_logged_and_its_intact_templates_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / FILE_NAME
    save_templates(path, sample())
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    loaded = load_templates(path)
    assert loaded.status is Status.DAMAGED
    assert loaded.templates == sample()
    assert [r.event for r in caplog.records] == ["template_file_invalid"]  # type: ignore[attr-defined]


def test_an_unreadable_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).mkdir()
    assert load_templates(tmp_path / FILE_NAME).status is Status.UNREADABLE


def test_the_temp_file_is_fsynced_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_templates(tmp_path / FILE_NAME, sample())
    assert calls == ["fsync file", "rename", "fsync dir"]


def test_a_failed_save_leaves_the_previous_file_whole_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / FILE_NAME
    save_templates(path, sample())

    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        save_templates(path, sample()[:1])
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]
    assert load_templates(path).templates == sample()


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_decode_to_a_status_never_an_exception(data: bytes, ours: bool) -> None:
    loaded = decode_templates(MAGIC + data if ours else data)
    assert loaded.status in set(Status)
    assert (loaded.status is Status.OK) is (loaded.detail == "")


@settings(max_examples=200, deadline=None)
@given(st.lists(stored_templates, min_size=1, max_size=4), st.data())
def test_any_damage_to_a_real_file_loads_only_templates_that_were_saved(
    items: list[StoredTemplate], data: st.DataObject
) -> None:
    encoded, _ = encode_templates(items)
    at = data.draw(st.integers(0, len(encoded) - 1))
    junk = data.draw(st.binary(min_size=1, max_size=16))
    damaged = encoded[:at] + junk + encoded[at + len(junk) :]
    loaded = decode_templates(damaged)
    assert all(t in items for t in loaded.templates)
    if damaged != encoded:
        assert loaded.status is not Status.OK
