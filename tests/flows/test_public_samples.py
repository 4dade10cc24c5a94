"""Public NetFlow v1/v5 datagrams from other projects' test suites, against reference decodes.

The files live beside the project in ``../shared/netflow-samples/public`` (they belong to
their projects and are never copied here); a user's machine does not have them, so every
test here skips when the directory is absent. Each ``.bin`` is one UDP payload; the
``.json`` beside it is tshark's decode, normalised.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay.errors import DecodeError
from relay.flows import decode
from relay.render import Renderer

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "netflow-samples" / "public"
BINS = sorted(SAMPLES.glob("*.bin")) if SAMPLES.is_dir() else []

pytestmark = pytest.mark.skipif(not BINS, reason=f"no NetFlow samples at {SAMPLES}")

HEADER_FIELDS = (
    "count", "unix_secs", "unix_nsecs", "flow_sequence", "engine_type", "engine_id",
    "sampling_interval", "sampling_mode",
)  # fmt: skip
RECORD_FIELDS = (
    "src_addr", "dst_addr", "next_hop", "input_if", "output_if", "packets", "bytes",
    "src_port", "dst_port", "tcp_flags", "protocol", "tos", "src_as", "dst_as", "src_mask",
    "dst_mask",
)  # fmt: skip


def reference(path: Path) -> dict[str, Any]:
    ref: dict[str, Any] = json.loads(path.with_suffix(".json").read_text())
    return ref


def iso_to_ms(text: str) -> int:
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return round((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def spec_time_ms(header: dict[str, Any], uptime: int) -> int:
    """SPEC: export time minus (SysUptime - t) ms, the difference taken modulo 2**32 and
    read as signed so that it stays right across the uptime wrap."""
    export = int(header["unix_secs"]) * 1000 + int(header["unix_nsecs"]) // 1_000_000
    delta = (int(header["sys_uptime_ms"]) - uptime) % 2**32
    if delta >= 2**31:
        delta -= 2**32
    return export - delta


def expected_reason(ref: dict[str, Any]) -> str:
    notes = " ".join(ref["notes"])
    if "unsupported version" in notes:
        return "unknown_version"
    if "needs" in notes and "bytes" in notes:
        return "short_records"
    raise AssertionError(f"no reason known for the reference notes {ref['notes']!r}")


def test_the_samples_are_there() -> None:
    # Guards against the glob silently matching nothing while the directory exists.
    assert len(BINS) >= 19


@pytest.mark.parametrize("path", BINS, ids=[p.stem for p in BINS])
def test_sample_matches_reference(path: Path) -> None:
    ref = reference(path)
    data = path.read_bytes()
    assert len(data) == ref["length"]
    if not ref["valid"]:
        with pytest.raises(DecodeError) as info:
            decode(data)
        assert info.value.reason == expected_reason(ref)
        assert ref["expected_records"] == 0
        return

    packet = decode(data)
    assert packet.version == ref["version"]
    assert len(packet.records) == ref["expected_records"] == len(ref["records"])
    rh = ref["header"]
    assert packet.header.sys_uptime == rh["sys_uptime_ms"]
    for name in HEADER_FIELDS:
        # v1 has no sequence, engine or sampling: the reference says None, we carry 0.
        want = 0 if rh[name] is None else rh[name]
        assert getattr(packet.header, name) == want, name

    for index, (rec, rr) in enumerate(zip(packet.records, ref["records"], strict=True)):
        for name in RECORD_FIELDS:
            # v1 has no AS numbers or masks: the reference says None, we emit 0.
            want = 0 if rr[name] is None else rr[name]
            assert getattr(rec, name) == want, (index, name)
        for name in ("first", "last"):
            spec = spec_time_ms(rh, rr[f"{name}_uptime_ms"])
            assert getattr(rec, name) == spec, (index, name)
            if not rr["uptime_wrapped"]:
                assert spec == iso_to_ms(rr[name]), (index, name)
        # tshark is WRONG where the uptime counter wrapped between First/Last and the export
        # (it puts the flow 49.7 days in the future); there we hold the SPEC's time instead.
        if rr["uptime_wrapped"]:
            wrong = iso_to_ms(rr["first"]), iso_to_ms(rr["last"])
            assert (rec.first, rec.last) != wrong
            export = rh["unix_secs"] * 1000 + rh["unix_nsecs"] // 1_000_000
            assert export - 3_600_000 < rec.first <= export


@pytest.mark.parametrize("path", BINS, ids=[p.stem for p in BINS])
def test_sample_renders_what_it_decodes(path: Path) -> None:
    data = path.read_bytes()
    ref = reference(path)
    renderer = Renderer()
    if not ref["valid"]:
        with pytest.raises(DecodeError) as info:
            renderer.render_datagram(data, "192.0.2.1")
        assert info.value.reason == expected_reason(ref)
        return
    packet = decode(data)
    rendered = renderer.render_datagram(data, "192.0.2.1")
    assert rendered.lines == renderer.render(packet, "192.0.2.1")
    for line, rr in zip(rendered.lines, ref["records"], strict=True):
        body = json.loads(line.decode("ascii").split(" netstat.netflow.lt: ", 1)[1])
        assert body["src_addr"] == rr["src_addr"]
        assert body["dst_port"] == rr["dst_port"]
        assert body["bytes"] == rr["bytes"]


def test_logstash_uptime_wrap_sample() -> None:
    # softflowd's datagram 0 of logstash's netflow5.dat: SysUptime 3381, First 0xFFFFFFFF
    # (3382 ms before SysUptime, across the wrap), Last 2577; export 1430591888.280 s.
    path = SAMPLES / "logstash-netflow5-000.bin"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    rec = decode(path.read_bytes()).records[0]
    assert rec.first == 1_430_591_888_280 - 3382  # 2015-05-02T18:38:04.898Z
    assert rec.last == 1_430_591_888_280 - 804  # 2015-05-02T18:38:07.476Z
    # tshark's reference says first = 2015-06-21T11:40:52.194Z: 49.7 days in the future.
    assert reference(path)["records"][0]["first"] == "2015-06-21T11:40:52.194Z"
    line = Renderer().render_datagram(path.read_bytes(), "10.0.2.15").lines[0]
    body = json.loads(line.decode("ascii").split(" netstat.netflow.lt: ", 1)[1])
    assert (body["first"], body["last"]) == ("2015-05-02T18:38:04.898Z", "2015-05-02T18:38:07.476Z")
