"""The syslog line (SPEC "The syslog line"): headers, JSON and kv bodies, options, framing.

Expected lines are written out by hand or computed here with ``datetime``; the property at
the end holds the fused hot path (``render_datagram``) to the reference (``render(decode())``)
for any input.
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.netflow_builder import (
    VERSIONS,
    Header,
    Record,
    absolute_ms,
    any_bytes,
    built_datagrams,
    datagram,
    export_ms,
)
from support.syslog import parse_line

from relay.errors import DecodeError
from relay.flows import Packet, decode
from relay.framing import Framing, framed_size
from relay.framing import frame_lines as frame
from relay.render import Body, Renderer, RenderOptions
from relay.render import Header as HeaderStyle

# SPEC's key list, in SPEC's order, then each version's extras.
SPEC_KEYS = (
    "version", "exporter", "flow_sequence", "engine_type", "engine_id", "sampling_interval",
    "sampling_mode", "first", "last", "src_addr", "dst_addr", "next_hop", "input_if",
    "output_if", "packets", "bytes", "src_port", "dst_port", "protocol", "tcp_flags", "tos",
    "src_as", "dst_as", "src_mask", "dst_mask",
)  # fmt: skip
EXTRAS = {
    1: (),
    5: (),
    6: ("in_encaps", "out_encaps", "peer_next_hop"),
    7: ("flags1", "flags2", "router_sc"),
}
ADDRESS_KEYS = {"exporter", "src_addr", "dst_addr", "next_hop", "peer_next_hop", "router_sc"}
TIME_KEYS = {"first", "last"}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
DOTTED_RE = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")

EXPORT_SECS = calendar.timegm((2026, 11, 23, 13, 4, 5, 0, 0, 0))
HDR = Header(
    sys_uptime=500_000_000,
    unix_secs=EXPORT_SECS,
    unix_nsecs=123_456_789,
    flow_sequence=1234,
    engine_type=1,
    engine_id=2,
    sampling_mode=1,
    sampling_interval=100,
)
REC = Record(
    src_addr="10.1.2.3",
    dst_addr="172.16.5.6",
    next_hop="192.168.7.8",
    input_if=3,
    output_if=4,
    packets=10,
    bytes=1500,
    first=499_000_000,  # 1000 s before export
    last=499_990_000,  # 10 s before export
    src_port=443,
    dst_port=51000,
    protocol=6,
    tcp_flags=27,
    tos=184,
    src_as=64500,
    dst_as=64501,
    src_mask=24,
    dst_mask=16,
    in_encaps=14,
    out_encaps=18,
    peer_next_hop="198.51.100.9",
    flags1=161,
    flags2=48879,
    router_sc="203.0.113.10",
)
JSON_BODY = (
    '{"version":5,"exporter":"10.0.0.1","flow_sequence":1234,"engine_type":1,"engine_id":2,'
    '"sampling_interval":100,"sampling_mode":1,'
    '"first":"2026-11-23T12:47:25.123Z","last":"2026-11-23T13:03:55.123Z",'
    '"src_addr":"10.1.2.3","dst_addr":"172.16.5.6","next_hop":"192.168.7.8",'
    '"input_if":3,"output_if":4,"packets":10,"bytes":1500,"src_port":443,"dst_port":51000,'
    '"protocol":6,"tcp_flags":27,"tos":184,"src_as":64500,"dst_as":64501,'
    '"src_mask":24,"dst_mask":16}'
)
KV_BODY = (
    "version=5 exporter=10.0.0.1 flow_sequence=1234 engine_type=1 engine_id=2 "
    "sampling_interval=100 sampling_mode=1 "
    "first=2026-11-23T12:47:25.123Z last=2026-11-23T13:03:55.123Z "
    "src_addr=10.1.2.3 dst_addr=172.16.5.6 next_hop=192.168.7.8 "
    "input_if=3 output_if=4 packets=10 bytes=1500 src_port=443 dst_port=51000 "
    "protocol=6 tcp_flags=27 tos=184 src_as=64500 dst_as=64501 src_mask=24 dst_mask=16"
)
H3164 = "<14>Nov 23 13:04:05 10.0.0.1 netstat.netflow.lt: "
H5424 = "<14>1 2026-11-23T13:04:05.123Z 10.0.0.1 netstat.netflow.lt - - - "


def iso(ms: int) -> str:
    """UNIX ms -> ISO-8601 UTC with milliseconds, independently of the renderer."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def stamp3164(secs: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=secs)
    return f"{MONTHS[moment.month - 1]} {moment.day:2d} {moment:%H:%M:%S}"


def lines_for(
    data: bytes, options: RenderOptions | None = None, exporter: str = "10.0.0.1"
) -> list[str]:
    """Both paths' lines; they must agree, and then the text is returned."""
    renderer = Renderer(options)
    reference = renderer.render(decode(data), exporter)
    fused = renderer.render_datagram(data, exporter).lines
    assert fused == reference
    return [line.decode("ascii") for line in reference]


def body_of(line: str, options: RenderOptions) -> str:
    if options.header == "rfc3164":
        return line.split(f" {options.tag}: ", 1)[1]
    return line.split(f" {options.tag} - - - ", 1)[1]


def json_pairs(body: str) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = json.loads(body, object_pairs_hook=list)
    return pairs


def kv_pairs(body: str) -> list[tuple[str, str]]:
    out = []
    for item in body.split(" "):
        key, sep, value = item.partition("=")
        assert sep, item
        out.append((key, value))
    return out


# --- the exact line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        ("rfc3164", "json", H3164 + JSON_BODY),
        ("rfc5424", "json", H5424 + JSON_BODY),
        ("rfc3164", "kv", H3164 + KV_BODY),
        ("rfc5424", "kv", H5424 + KV_BODY),
    ],
)
def test_exact_line(header: HeaderStyle, body: Body, expected: str) -> None:
    options = RenderOptions(header=header, body=body)
    assert lines_for(datagram(5, [REC], header=HDR), options) == [expected]


def test_default_options_are_rfc3164_json_user_info_and_the_spec_tag() -> None:
    assert lines_for(datagram(5, [REC], header=HDR)) == [H3164 + JSON_BODY]


@pytest.mark.parametrize(
    ("when", "stamp"),
    [
        ((2026, 11, 3, 13, 4, 5), "Nov  3 13:04:05"),  # day space-padded, RFC 3164
        ((2026, 1, 1, 0, 0, 0), "Jan  1 00:00:00"),
        ((2026, 2, 9, 9, 9, 9), "Feb  9 09:09:09"),
        ((2024, 2, 29, 12, 0, 0), "Feb 29 12:00:00"),
        ((2026, 3, 10, 1, 2, 3), "Mar 10 01:02:03"),
        ((2026, 4, 30, 23, 0, 0), "Apr 30 23:00:00"),
        ((2026, 5, 5, 5, 5, 5), "May  5 05:05:05"),
        ((2026, 6, 15, 6, 15, 0), "Jun 15 06:15:00"),
        ((2026, 7, 4, 4, 4, 4), "Jul  4 04:04:04"),
        ((2026, 8, 31, 8, 31, 31), "Aug 31 08:31:31"),
        ((2026, 9, 1, 9, 1, 1), "Sep  1 09:01:01"),
        ((2026, 10, 20, 10, 20, 20), "Oct 20 10:20:20"),
        ((2026, 12, 31, 23, 59, 59), "Dec 31 23:59:59"),
    ],
)
def test_rfc3164_timestamp_is_export_time_in_utc(
    when: tuple[int, int, int, int, int, int], stamp: str
) -> None:
    secs = calendar.timegm((*when, 0, 0, 0))
    header = Header(sys_uptime=1000, unix_secs=secs, unix_nsecs=999_999_999)
    (line,) = lines_for(datagram(1, [REC], header=header))
    # nsecs do not round the second up: 999_999_999 ns is still within that second.
    assert line.startswith(f"<14>{stamp} 10.0.0.1 netstat.netflow.lt: {{")


@pytest.mark.parametrize(
    ("secs", "nsecs", "stamp"),
    [
        (EXPORT_SECS, 123_456_789, "2026-11-23T13:04:05.123Z"),
        (EXPORT_SECS, 999_999_999, "2026-11-23T13:04:05.999Z"),
        (EXPORT_SECS, 0, "2026-11-23T13:04:05.000Z"),
        (0, 1_000_000, "1970-01-01T00:00:00.001Z"),
        (2**32 - 1, 0, "2106-02-07T06:28:15.000Z"),
    ],
)
def test_rfc5424_timestamp_is_export_time_with_millis(secs: int, nsecs: int, stamp: str) -> None:
    header = Header(sys_uptime=1000, unix_secs=secs, unix_nsecs=nsecs)
    options = RenderOptions(header="rfc5424")
    (line,) = lines_for(datagram(7, [REC], header=header), options)
    assert line.startswith(f"<14>1 {stamp} 10.0.0.1 netstat.netflow.lt - - - {{")


@pytest.mark.parametrize("nsecs", [1_000_000_000, 1_500_000_000, 2**32 - 1])
def test_both_headers_show_the_same_export_time_when_nsecs_overflow(nsecs: int) -> None:
    # A broken exporter may send unix_nsecs >= 10**9. SPEC's export time is unix_secs +
    # unix_nsecs, which the records' first/last are already relative to; both headers must
    # show that one instant (the RFC 3164 one truncated to the second).
    header = Header(sys_uptime=1000, unix_secs=EXPORT_SECS, unix_nsecs=nsecs)
    data = datagram(5, [REC], header=header)
    export = export_ms(header)
    (old,) = lines_for(data, RenderOptions(header="rfc3164"))
    (new,) = lines_for(data, RenderOptions(header="rfc5424"))
    assert new.startswith(f"<14>1 {iso(export)} ")
    assert old.startswith(f"<14>{stamp3164(export // 1000)} ")


@pytest.mark.parametrize("exporter", ["10.0.0.1", "192.0.2.254", "::1", "2001:db8::17"])
@pytest.mark.parametrize("header", ["rfc3164", "rfc5424"])
def test_host_is_the_exporter_address(exporter: str, header: HeaderStyle) -> None:
    options = RenderOptions(header=header)
    (line,) = lines_for(datagram(5, [REC], header=HDR), options, exporter)
    assert parse_line(line).host == exporter
    assert dict(json_pairs(body_of(line, options)))["exporter"] == exporter


# --- the JSON body ----------------------------------------------------------------------


@pytest.mark.parametrize("header", ["rfc3164", "rfc5424"])
@pytest.mark.parametrize("version", VERSIONS)
def test_json_body_keys_types_and_values(version: int, header: HeaderStyle) -> None:
    options = RenderOptions(header=header)
    other = Record(src_addr="10.9.9.9", first=2**32 - 5, last=3, packets=7, src_as=1)
    hdr = Header(sys_uptime=2, unix_secs=EXPORT_SECS, unix_nsecs=5_000_000, flow_sequence=77)
    lines = lines_for(datagram(version, [REC, other], header=hdr), options)
    assert len(lines) == 2
    for line, rec in zip(lines, [REC, other], strict=True):
        pairs = json_pairs(body_of(line, options))
        keys = [k for k, _ in pairs]
        assert keys == [*SPEC_KEYS, *EXTRAS[version]]
        body = dict(pairs)
        for key, value in pairs:
            if key in ADDRESS_KEYS:
                assert isinstance(value, str)
                assert DOTTED_RE.fullmatch(value), (key, value)
            elif key in TIME_KEYS:
                assert isinstance(value, str)
                assert ISO_RE.fullmatch(value), (key, value)
            else:
                assert type(value) is int, (key, value)
        assert body["version"] == version
        assert body["first"] == iso(absolute_ms(hdr, rec.first))
        assert body["last"] == iso(absolute_ms(hdr, rec.last))
        assert body["src_addr"] == rec.src_addr
        assert body["packets"] == rec.packets
        assert body["flow_sequence"] == (0 if version == 1 else 77)
        # v1 lacks AS numbers and masks: present, and 0.
        assert body["src_as"] == (0 if version == 1 else rec.src_as)
        for extra in EXTRAS[version]:
            assert body[extra] == getattr(rec, extra)


def test_wrap_times_render_a_few_ms_before_export() -> None:
    # SysUptime 2 ms past the 32-bit wrap, First 5 ms before it, Last 3 ms after it.
    hdr = Header(sys_uptime=2, unix_secs=EXPORT_SECS, unix_nsecs=5_000_000)
    rec = Record(first=2**32 - 5, last=3)
    (line,) = lines_for(datagram(5, [rec], header=hdr))
    body = dict(json_pairs(body_of(line, RenderOptions())))
    assert (body["first"], body["last"]) == (
        "2026-11-23T13:04:04.998Z",
        "2026-11-23T13:04:05.006Z",
    )


def test_times_before_1970_render() -> None:
    # Export at the epoch, flow a second earlier: a negative UNIX time still formats.
    hdr = Header(sys_uptime=10_000, unix_secs=0, unix_nsecs=0)
    (line,) = lines_for(datagram(5, [Record(first=9000, last=9999)], header=hdr))
    body = dict(json_pairs(body_of(line, RenderOptions())))
    assert (body["first"], body["last"]) == (
        "1969-12-31T23:59:59.000Z",
        "1969-12-31T23:59:59.999Z",
    )


def test_all_fields_at_their_maximum() -> None:
    big = Record(
        src_addr="255.255.255.255",
        dst_addr="255.255.255.255",
        next_hop="255.255.255.255",
        input_if=0xFFFF,
        output_if=0xFFFF,
        packets=2**32 - 1,
        bytes=2**32 - 1,
        src_port=0xFFFF,
        dst_port=0xFFFF,
        protocol=255,
        tcp_flags=255,
        tos=255,
        src_as=0xFFFF,
        dst_as=0xFFFF,
        src_mask=255,
        dst_mask=255,
        flags1=255,
        flags2=0xFFFF,
        router_sc="255.255.255.255",
    )
    (line,) = lines_for(datagram(7, [big], header=HDR))
    body = dict(json_pairs(body_of(line, RenderOptions())))
    assert body["bytes"] == body["packets"] == 4294967295
    assert body["flags2"] == body["dst_as"] == 65535
    assert body["router_sc"] == "255.255.255.255"


@pytest.mark.parametrize("version", VERSIONS)
def test_one_line_per_record_in_order(version: int) -> None:
    recs = [Record(src_port=i + 1, packets=1000 + i) for i in range(35)]
    lines = lines_for(datagram(version, recs, header=HDR, trailing=b"junk"))
    ports = [dict(json_pairs(body_of(line, RenderOptions())))["src_port"] for line in lines]
    assert ports == list(range(1, 36))


# --- the kv body ------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["rfc3164", "rfc5424"])
@pytest.mark.parametrize("version", VERSIONS)
def test_kv_body_has_the_json_keys_and_values(version: int, header: HeaderStyle) -> None:
    data = datagram(version, [REC], header=HDR)
    kv_opts = RenderOptions(header=header, body="kv")
    json_opts = RenderOptions(header=header, body="json")
    (kv_line,) = lines_for(data, kv_opts)
    (json_line,) = lines_for(data, json_opts)
    kv = kv_pairs(body_of(kv_line, kv_opts))
    as_json = json_pairs(body_of(json_line, json_opts))
    assert [k for k, _ in kv] == [*SPEC_KEYS, *EXTRAS[version]]
    assert kv == [(k, v if isinstance(v, str) else str(v)) for k, v in as_json]
    # Same syslog header either way.
    assert kv_line.removesuffix(body_of(kv_line, kv_opts)) == json_line.removesuffix(
        body_of(json_line, json_opts)
    )


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "prefix"),
    [
        (RenderOptions(tag="my-site.flows"), "<14>Nov 23 13:04:05 10.0.0.1 my-site.flows: {"),
        (RenderOptions(pri=134), "<134>Nov 23 13:04:05 10.0.0.1 netstat.netflow.lt: {"),
        (RenderOptions(pri=0), "<0>Nov 23 13:04:05 10.0.0.1 netstat.netflow.lt: {"),
        (RenderOptions(pri=191), "<191>Nov 23 13:04:05 10.0.0.1 netstat.netflow.lt: {"),
        (
            RenderOptions(header="rfc5424", tag="nf", pri=134),
            "<134>1 2026-11-23T13:04:05.123Z 10.0.0.1 nf - - - {",
        ),
    ],
)
def test_tag_and_pri(options: RenderOptions, prefix: str) -> None:
    (line,) = lines_for(datagram(5, [REC], header=HDR), options)
    assert line.startswith(prefix)
    assert line.endswith(JSON_BODY[1:])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"header": "rfc3339"},
        {"header": ""},
        {"body": "xml"},
        {"tag": ""},
        {"tag": "two words"},
        {"tag": "line\nbreak"},
        {"tag": "caf\u00e9"},
        {"pri": -1},
        {"pri": 192},
    ],
)
def test_invalid_options_raise_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RenderOptions(**kwargs)


# --- framing ----------------------------------------------------------------------------


def parse_octet_counted(wire: bytes) -> list[bytes]:
    """RFC 6587 octet counting: MSG-LEN SP SYSLOG-MSG, repeated."""
    out = []
    while wire:
        length, sep, rest = wire.partition(b" ")
        assert sep, wire[:20]
        assert length.isdigit(), wire[:20]
        assert not length.startswith(b"0"), wire[:20]
        n = int(length)
        assert len(rest) >= n
        out.append(rest[:n])
        wire = rest[n:]
    return out


def test_newline_framing() -> None:
    assert frame([b"<14>a", b"<14>bc"], Framing.NEWLINE) == b"<14>a\n<14>bc\n"
    assert frame([], Framing.NEWLINE) == b""


def test_octet_counting_framing() -> None:
    assert frame([b"<14>a", b"<14>bc"], Framing.OCTET_COUNTING) == b"5 <14>a6 <14>bc"
    assert frame([], Framing.OCTET_COUNTING) == b""


@pytest.mark.parametrize("framing", [Framing.NEWLINE, Framing.OCTET_COUNTING])
def test_framed_real_lines_come_back_whole(framing: Framing) -> None:
    recs = [Record(src_port=i) for i in range(30)]
    lines = Renderer().render(decode(datagram(5, recs, header=HDR)), "10.0.0.1")
    wire = frame(lines, framing)
    assert framed_size(lines, framing) == len(wire)
    if framing == Framing.NEWLINE:
        assert wire.split(b"\n") == [*lines, b""]
    else:
        assert parse_octet_counted(wire) == lines


@given(lines=st.lists(st.binary(min_size=1, max_size=1200).map(lambda b: b"<14>" + b), max_size=20))
@settings(max_examples=200, deadline=None)
def test_framed_size_is_len_of_frame(lines: list[bytes]) -> None:
    # Lengths around 9/10, 99/100, 999/1000 change the width of the octet count.
    assert framed_size(lines, Framing.NEWLINE) == len(frame(lines, Framing.NEWLINE))
    assert framed_size(lines, Framing.OCTET_COUNTING) == len(frame(lines, Framing.OCTET_COUNTING))
    assert parse_octet_counted(frame(lines, Framing.OCTET_COUNTING)) == lines


@pytest.mark.parametrize("size", [9, 10, 99, 100, 999, 1000, 9999, 10000])
def test_octet_count_width_boundaries(size: int) -> None:
    line = b"x" * size
    wire = frame([line], Framing.OCTET_COUNTING)
    assert wire == str(size).encode() + b" " + line
    assert framed_size([line], Framing.OCTET_COUNTING) == len(wire)


# --- fused hot path == reference, for any input ------------------------------------------

RENDERERS = [
    Renderer(RenderOptions(header=h, body=b))
    for h in ("rfc3164", "rfc5424")
    for b in ("json", "kv")
]
EXPORTERS = st.sampled_from(["10.0.0.1", "192.0.2.254", "::1", "2001:db8::17"])


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    """Valid datagrams of every version, their truncations, and arbitrary bytes."""
    kind = draw(st.sampled_from(["built", "truncated", "bytes"]))
    if kind == "bytes":
        return draw(any_bytes)
    data = draw(built_datagrams()).data
    if kind == "truncated":
        data = data[: draw(st.integers(0, len(data)))]
    return data


def outcome(call: Any) -> tuple[str | None, Any]:
    try:
        return None, call()
    except DecodeError as err:
        return err.reason, None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datagrams(), exporter=EXPORTERS, which=st.integers(0, len(RENDERERS) - 1))
def test_render_datagram_equals_render_of_decode(data: bytes, exporter: str, which: int) -> None:
    renderer = RENDERERS[which]
    ref_reason, packet = outcome(lambda: decode(data))
    hot_reason, rendered = outcome(lambda: renderer.render_datagram(data, exporter))
    assert hot_reason == ref_reason
    if ref_reason is not None:
        return
    assert isinstance(packet, Packet)
    assert rendered.lines == renderer.render(packet, exporter)
    assert rendered.header == packet.header
    assert rendered.warnings == packet.warnings
    assert rendered.trailing_bytes == packet.trailing_bytes
    options = renderer.options
    for line in rendered.lines:
        assert b"\n" not in line
        text = line.decode("ascii")
        body = body_of(text, options)
        pairs = json_pairs(body) if options.body == "json" else kv_pairs(body)
        assert [k for k, _ in pairs] == [*SPEC_KEYS, *EXTRAS[packet.version]]
