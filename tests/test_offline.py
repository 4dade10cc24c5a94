"""``relay decode`` of NetFlow v9 and IPFIX (SPEC "Command line"): templates learned from
earlier packets of a capture or earlier files of the command line, data before its template
held and released as the daemon does, and every set that cannot be decoded named on stderr
with its reason, a held set that never found its template at the end."""

from __future__ import annotations

import json
import random
import socket
import struct
from pathlib import Path

import pytest
from support.pcapgen import Captured, link_frame, pcap_bytes, pcapng_bytes, udp
from support.syslog import parse_line

from relay.cli import main
from relay.testing.synth import Export, SentRecord, SyntheticExporter

NOW = 1_795_000_000.5  # a fixed clock: 2026-11-18
EXPORTER = "192.0.2.33"
FLOW_TEMPLATES = {256, 257}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def export(version: int, count: int, seed: int = 1) -> Export:
    """One template datagram (templates, options templates, options data) and one data one."""
    exporter = SyntheticExporter(rng=random.Random(seed), boot_time=NOW - 3600)
    result = exporter.export(version, count, NOW)
    assert result.template_datagrams == 1
    return result


def flows(result: Export) -> list[SentRecord]:
    return [s for s in result.sent if s.template_id in FLOW_TEMPLATES]


def address(raw: object) -> str:
    assert isinstance(raw, bytes)
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def check_lines(lines: list[str], result: Export, version: int, host: str) -> None:
    """One line per flow, in wire order, carrying the values the exporter put in."""
    sent = flows(result)
    assert len(lines) == len(sent)
    for line, flow in zip(lines, sent, strict=True):
        parsed = parse_line(line)
        assert parsed.host == host
        body = json.loads(parsed.body)
        assert body["version"] == version
        v = flow.values
        v6 = flow.template_id == 257
        assert body["src_addr"] == address(v[27 if v6 else 8])
        assert body["dst_addr"] == address(v[28 if v6 else 12])
        assert (body["packets"], body["bytes"]) == (v[2], v[1])
        assert (body["src_port"], body["dst_port"], body["protocol"]) == (v[7], v[11], v[4])
        # The options came first: the exporter's sampling (1 in 100) governs its flows.
        assert body["sampling_interval"] == 100
        if version == 10:
            assert body["input_if_name"] == f"GigabitEthernet0/{v[10]!s}"


def capture(
    datagrams: tuple[bytes, ...],
    *,
    src: str | list[str] = EXPORTER,
    ng: bool = False,
    times: list[float] | None = None,
) -> bytes:
    """A capture of the datagrams, one a second from NOW unless ``times`` are given."""
    sources = [src] * len(datagrams) if isinstance(src, str) else src
    seen = times or [NOW + i for i in range(len(datagrams))]
    frames = [
        Captured(
            timestamp_ns=int(t * 1e9),
            data=link_frame(udp(s, "192.0.2.1", 40000, 2055, d)),
        )
        for d, s, t in zip(datagrams, sources, seen, strict=True)
    ]
    return pcapng_bytes(frames) if ng else pcap_bytes(frames)


@pytest.mark.parametrize("version", [9, 10])
@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_a_capture_with_the_templates_in_packet_1_decodes_the_data_in_packet_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, version: int, ng: bool
) -> None:
    result = export(version, 20)
    path = tmp_path / "flows.pcap"
    path.write_bytes(capture(result.datagrams, ng=ng))
    code, out, err = run(capsys, "decode", str(path))
    assert (code, err) == (0, [])
    check_lines(out, result, version, EXPORTER)


@pytest.mark.parametrize("version", [9, 10])
def test_raw_files_are_read_in_the_order_given_templates_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, version: int
) -> None:
    result = export(version, 15)
    templates, data = tmp_path / "1-templates.bin", tmp_path / "2-data.bin"
    templates.write_bytes(result.datagrams[0])
    data.write_bytes(result.datagrams[1])
    code, out, err = run(capsys, "decode", "--exporter", "10.1.2.3", str(templates), str(data))
    assert (code, err) == (0, [])
    check_lines(out, result, version, "10.1.2.3")


@pytest.mark.parametrize("version", [9, 10])
def test_data_given_before_its_template_is_held_and_decoded_when_the_template_comes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, version: int
) -> None:
    result = export(version, 10)
    templates, data = tmp_path / "templates.bin", tmp_path / "data.bin"
    templates.write_bytes(result.datagrams[0])
    data.write_bytes(result.datagrams[1])
    code, out, err = run(capsys, "decode", "--exporter", "10.1.2.3", str(data), str(templates))
    assert (code, err) == (0, [])
    check_lines(out, result, version, "10.1.2.3")


@pytest.mark.parametrize("version", [9, 10])
def test_data_whose_template_never_comes_is_named_on_stderr_at_the_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, version: int
) -> None:
    result = export(version, 10)
    data = tmp_path / "data-alone.bin"
    data.write_bytes(result.datagrams[1])
    code, out, err = run(capsys, "decode", "--exporter", "10.1.2.3", str(data))
    assert code == 0  # the exporter's problem, not a failed command
    assert out == []
    data_sets = len({s.template_id for s in flows(result)})  # one set per template
    [line] = err
    assert line.startswith(f"{data}: from 10.1.2.3: {data_sets} held data set")
    assert "expired (no_template)" in line


def test_an_invalid_set_is_named_with_its_reason_and_the_other_sets_still_decode(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = export(9, 10)
    templates, data = result.datagrams
    # A template set whose length runs past the datagram, after the real data sets.
    broken = data + struct.pack("!HH", 0, 400) + bytes(8)
    path = tmp_path / "v9.pcap"
    path.write_bytes(capture((templates, broken)))
    code, out, err = run(capsys, "decode", str(path))
    assert code == 0
    check_lines(out, result, 9, EXPORTER)
    assert len(err) == 1, err
    assert f"{path}: packet 2" in err[0]
    assert "set_past_end" in err[0]


@pytest.mark.parametrize("version", [9, 10])
def test_held_data_expires_by_the_captures_clock_before_a_late_template(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, version: int
) -> None:
    """Data 61 s ahead of its template (hold age 60 s) is dropped and named, as the daemon
    would; data after the template decodes."""
    exporter = SyntheticExporter(rng=random.Random(9), boot_time=NOW - 3600)
    first = exporter.export(version, 6, NOW)
    second = exporter.export(version, 8, NOW + 62)
    templates, early = first.datagrams
    (late,) = second.datagrams
    path = tmp_path / "late-template.pcap"
    path.write_bytes(capture((early, templates, late), times=[NOW, NOW + 61, NOW + 62]))
    code, out, err = run(capsys, "decode", str(path))
    assert code == 0
    check_lines(out, second, version, EXPORTER)
    [line] = err
    assert line.startswith(f"{path}: packet 1: from {EXPORTER}: ")
    assert "never released: expired (no_template)" in line


def test_templates_of_one_exporter_do_not_decode_another_exporters_data(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """SPEC "Templates": scoped by the exporter's address (and domain), as in the daemon."""
    result = export(10, 5)
    path = tmp_path / "two-exporters.pcap"
    path.write_bytes(capture(result.datagrams, src=[EXPORTER, "192.0.2.44"]))
    code, out, err = run(capsys, "decode", str(path))
    assert (code, out) == (0, [])
    [line] = err
    assert line.startswith(f"{path}: packet 2: from 192.0.2.44: ")
    assert "expired (no_template)" in line


def test_bytes_after_an_ipfix_message_are_a_named_warning_and_its_records_still_decode(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = export(10, 4)
    templates, data = result.datagrams
    path = tmp_path / "trailing.pcap"
    path.write_bytes(capture((templates, data + bytes(range(1, 13)))))
    code, out, err = run(capsys, "decode", str(path))
    assert code == 0
    check_lines(out, result, 10, EXPORTER)
    assert err == [
        f"{path}: packet 2: from {EXPORTER}: warning trailing_bytes: 12 bytes after the message"
    ]
