"""The ``relay`` command line as a user runs it (SPEC "Command line"): ``decode``,
``send-test``, ``certs`` and ``demo``; exit codes 0 / 1 / 2, one-sentence errors and no
tracebacks.

Most cases call ``relay.cli.main`` in-process (a fresh interpreter costs most of a second);
one case per command goes through ``python -m relay`` to prove the real entry point.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from support.netflow_builder import Header, Record, datagram
from support.pcapgen import Captured, link_frame, pcap_bytes, udp
from support.syslog import parse_line

from relay import cli
from relay.cli import main
from relay.config import Overrides
from relay.errors import EX_CONFIG, EX_TEMPFAIL, SpoolError, SpoolTransient
from relay.flows import decode

EXPORT_SECS = 1_795_000_000  # 2026-11-18T...
RECORDS = [
    Record(src_addr="192.168.1.10", dst_addr="10.0.0.20", packets=3, bytes=300, protocol=6),
    Record(src_addr="192.168.1.11", dst_addr="10.0.0.21", packets=4, bytes=400, protocol=17),
]
V5 = datagram(5, RECORDS, header=Header(sys_uptime=60_000, unix_secs=EXPORT_SECS, flow_sequence=7))


def python_m_relay(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_sentence(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.fixture
def raw_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "good": V5,
        "good7": datagram(7, [Record(src_addr="172.16.0.1")] * 3, header=Header(unix_secs=1)),
        "short": datagram(5, RECORDS, count=3),  # says 3 records, holds 2
        "v11": b"\x00\x0b" + bytes(30),  # no such version
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.bin"
        paths[name].write_bytes(data)
    return paths


# ---- relay decode ---------------------------------------------------------------------------


def test_decode_raw_file_prints_one_syslog_line_per_record(
    capsys: pytest.CaptureFixture[str], raw_files: dict[str, Path]
) -> None:
    code, out, err = run(capsys, "decode", "--exporter", "10.0.0.7", str(raw_files["good"]))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 2
    for line, record in zip(lines, RECORDS, strict=True):
        m = re.fullmatch(
            r"<14>(\w{3} [ \d]\d \d\d:\d\d:\d\d) 10\.0\.0\.7 netstat\.netflow\.lt: (.*)", line
        )
        assert m, line
        body = json.loads(m.group(2))
        assert list(body)[:7] == [
            "version", "exporter", "flow_sequence", "engine_type", "engine_id",
            "sampling_interval", "sampling_mode",
        ]  # fmt: skip
        assert body["version"] == 5
        assert body["exporter"] == "10.0.0.7"
        assert body["flow_sequence"] == 7
        assert body["src_addr"] == record.src_addr
        assert body["bytes"] == record.bytes


def test_decode_rfc5424_header_kv_body_and_tag(
    capsys: pytest.CaptureFixture[str], raw_files: dict[str, Path]
) -> None:
    code, out, _ = run(
        capsys, "decode", "--exporter", "10.0.0.7", "--header", "rfc5424", "--body", "kv",
        "--tag", "site.flows", str(raw_files["good"]),
    )  # fmt: skip
    assert code == 0
    first = out.splitlines()[0]
    m = re.fullmatch(
        r"<14>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) 10\.0\.0\.7 site\.flows - - - (.*)", first
    )
    assert m, first
    pairs = [p.split("=", 1) for p in m.group(2).split(" ")]
    keys = [k for k, _ in pairs]
    assert keys[:8] == [
        "version", "exporter", "flow_sequence", "engine_type", "engine_id",
        "sampling_interval", "sampling_mode", "first",
    ]  # fmt: skip
    assert dict(pairs)["src_addr"] == "192.168.1.10"
    assert dict(pairs)["exporter"] == "10.0.0.7"


def test_decode_names_each_invalid_datagram_and_prints_the_valid_ones(
    capsys: pytest.CaptureFixture[str], raw_files: dict[str, Path]
) -> None:
    code, out, err = run(
        capsys, "decode", "--exporter", "10.0.0.7",
        str(raw_files["short"]), str(raw_files["good"]), str(raw_files["v11"]),
        str(raw_files["good7"]),
    )  # fmt: skip
    assert code == 0  # invalid datagrams are the exporter's problem, not a failed command
    assert len(out.splitlines()) == 2 + 3
    err_lines = err.splitlines()
    assert len(err_lines) == 2
    assert str(raw_files["short"]) in err_lines[0]
    assert "short_records" in err_lines[0]
    assert str(raw_files["v11"]) in err_lines[1]
    assert "unknown_version" in err_lines[1]
    assert "Traceback" not in err


def test_decode_unreadable_file_exits_1_and_still_prints_the_rest(
    capsys: pytest.CaptureFixture[str], raw_files: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.bin"
    code, out, err = run(capsys, "decode", str(missing), str(raw_files["good"]))
    assert code == 1
    assert len(out.splitlines()) == 2
    assert str(missing) in err
    assert_one_sentence(err)


def _capture(tmp_path: Path) -> Path:
    frames = [
        udp("10.1.1.1", "10.9.9.9", 50000, 2055, V5),
        udp("192.168.5.5", "10.9.9.9", 50001, 9995, V5),  # another collector port
        udp("10.1.1.1", "10.9.9.9", 50000, 2055, b"\x00\x05\x00\x01"),  # cut-off header
    ]
    path = tmp_path / "flows.pcap"
    path.write_bytes(pcap_bytes([Captured(timestamp_ns=0, data=link_frame(f)) for f in frames]))
    return path


def test_decode_capture_uses_each_packets_source_as_exporter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    capture = _capture(tmp_path)
    code, out, err = run(capsys, "decode", "--exporter", "1.2.3.4", str(capture))
    assert code == 0
    hosts = [parse_line(line).host for line in out.splitlines()]
    assert hosts == ["10.1.1.1"] * 2 + ["192.168.5.5"] * 2
    (problem,) = err.splitlines()
    assert f"{capture}: packet 3" in problem
    assert "10.1.1.1" in problem
    assert "short_header" in problem

    code, out, _ = run(capsys, "decode", "--port", "9995", str(capture))
    assert code == 0
    assert [parse_line(line).host for line in out.splitlines()] == ["192.168.5.5"] * 2


def test_decode_capture_cut_short_prints_what_it_read_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    whole = _capture(tmp_path).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[:-10])
    code, out, err = run(capsys, "decode", str(cut))
    assert code == 1
    assert len(out.splitlines()) == 4  # the two whole packets before the cut
    assert str(cut) in err
    assert "cut short" in err
    assert "Traceback" not in err


def test_decode_corrupt_pcapng_is_a_sentence_not_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A section header and then an interface block with no body (a damaged file).
    shb = bytes.fromhex("0a0d0d0a 1c000000 4d3c2b1a 01000000 ffffffffffffffff 1c000000")
    damaged = tmp_path / "damaged.pcapng"
    damaged.write_bytes(shb + bytes.fromhex("01000000 0c000000 0c000000"))
    code, _, err = run(capsys, "decode", str(damaged))
    assert code == 1
    assert str(damaged) in err
    assert_one_sentence(err)


def test_python_m_relay_decode(raw_files: dict[str, Path]) -> None:
    result = python_m_relay("decode", "--exporter", "10.0.0.7", str(raw_files["good"]),
                            str(raw_files["v11"]))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert "unknown_version" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["decode"],  # no files
        ["decode", "--header", "rfc9999", "x.bin"],
        ["decode", "--body", "xml", "x.bin"],
        ["decode", "--tag", "has space", "x.bin"],
        ["decode", "--frobnicate", "x.bin"],
        ["no-such-command"],
        [],
        ["send-test"],  # --to is required
        ["send-test", "--to", "127.0.0.1:9", "--version", "8"],
        ["send-test", "--to", "127.0.0.1:9", "--version", "9", "--records", "501"],
        ["send-test", "--to", "127.0.0.1:9", "--count", "-1"],
        ["send-test", "--to", "127.0.0.1:9", "--count", "many"],
        ["send-test", "--to", "nonsense"],
        ["send-test", "--to", "127.0.0.1:99999"],
        ["certs"],
        ["certs", "make-ca"],  # --out is required
        ["certs", "request", "--out", "x"],  # --cn is required
    ],
    ids=lambda argv: " ".join(argv) or "(nothing)",
)
def test_bad_usage_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert out == ""
    assert_one_sentence(err)


def test_python_m_relay_bad_usage() -> None:
    result = python_m_relay("decode", "--header", "rfc9999", "x.bin")
    assert result.returncode == 2
    assert "rfc9999" in result.stderr
    assert_one_sentence(result.stderr)


# ---- relay send-test ------------------------------------------------------------------------


def _receive(sock: socket.socket, n: int) -> list[bytes]:
    sock.settimeout(5)
    return [sock.recvfrom(65535)[0] for _ in range(n)]


def _check_stream(datagrams: list[bytes], version: int) -> None:
    packets = [decode(d) for d in datagrams]
    assert all(p.version == version for p in packets)
    assert all(len(p.records) == p.header.count >= 1 for p in packets)
    if version != 1:  # v1 has no flow_sequence
        for before, after in itertools.pairwise(packets):
            assert after.header.flow_sequence == before.header.flow_sequence + before.header.count


def test_python_m_relay_send_test_v7_arrives_with_consecutive_sequence() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = python_m_relay("send-test", "--to", f"127.0.0.1:{port}", "--count", "5",
                                "--version", "7")  # fmt: skip
        assert result.returncode == 0, result.stderr
        datagrams = _receive(sock, 5)
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recvfrom(65535)  # exactly 5
    _check_stream(datagrams, 7)
    assert "sent 5 NetFlow v7 datagrams" in result.stdout


@pytest.mark.parametrize("version", [1, 5, 6])
def test_send_test_other_versions_and_ipv6(
    capsys: pytest.CaptureFixture[str], version: int
) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
        code, out, _ = run(
            capsys, "send-test", "--to", f"[::1]:{port}", "--count", "4",
            "--version", str(version), "--records", "3", "--rate", "0",
        )  # fmt: skip
        datagrams = _receive(sock, 4)
    assert code == 0
    _check_stream(datagrams, version)
    assert all(decode(d).header.count == 3 for d in datagrams)
    assert f"sent 4 NetFlow v{version} datagrams (12 flow records)" in out


# ---- relay certs ----------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def test_ca(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    out_dir = tmp_path / "pki"
    code, out, err = run(capsys, "certs", "make-ca", "--out", str(out_dir))
    assert (code, err) == (0, "")
    assert str(out_dir / "ca" / "ca.pem") in out
    return out_dir


def test_certs_make_ca_writes_a_ca_a_server_and_a_client(test_ca: Path) -> None:
    for name in ("ca/ca", "server/server", "client/client"):
        assert (test_ca / f"{name}.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert _mode(test_ca / f"{name}.key") == 0o600
    server = x509.load_pem_x509_certificate((test_ca / "server/server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)


def test_certs_check_good_set_exits_0(capsys: pytest.CaptureFixture[str], test_ca: Path) -> None:
    code, out, _ = run(
        capsys, "certs", "check", "--ca", str(test_ca / "ca/ca.pem"),
        "--cert", str(test_ca / "client/client.pem"), "--key", str(test_ca / "client/client.key"),
    )  # fmt: skip
    assert code == 0
    assert "error" not in out
    assert re.search(r"matches certificate", out)
    assert re.search(r"chains to CA file", out)


def test_certs_check_warns_about_a_server_only_certificate(
    capsys: pytest.CaptureFixture[str], test_ca: Path
) -> None:
    code, out, _ = run(
        capsys, "certs", "check", "--ca", str(test_ca / "ca/ca.pem"),
        "--cert", str(test_ca / "server/server.pem"), "--key", str(test_ca / "server/server.key"),
    )  # fmt: skip
    assert code == 0
    assert re.search(r"^warning .*client authentication", out, re.M)


def test_certs_check_mismatched_key_exits_1_naming_both_files(
    capsys: pytest.CaptureFixture[str], test_ca: Path
) -> None:
    key = test_ca / "server/server.key"
    cert = test_ca / "client/client.pem"
    code, out, _ = run(capsys, "certs", "check", "--cert", str(cert), "--key", str(key))
    assert code == 1
    (line,) = [ln for ln in out.splitlines() if ln.startswith("error")]
    assert str(key) in line
    assert str(cert) in line
    assert "does not match" in line


def test_certs_check_world_readable_key_exits_1_with_the_fix(
    capsys: pytest.CaptureFixture[str], test_ca: Path
) -> None:
    key = test_ca / "client/client.key"
    key.chmod(0o644)
    code, out, _ = run(
        capsys, "certs", "check", "--cert", str(test_ca / "client/client.pem"), "--key", str(key)
    )
    assert code == 1
    assert f"chmod 600 {key}" in out


def test_certs_check_missing_and_foreign_files_exit_1(
    capsys: pytest.CaptureFixture[str], test_ca: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    code, out, _ = run(capsys, "certs", "check", "--ca", str(missing))
    assert code == 1
    assert re.search(rf"^error .*{re.escape(str(missing))} does not exist", out, re.M)

    other = tmp_path / "other"
    run(capsys, "certs", "make-ca", "--out", str(other))
    code, out, _ = run(
        capsys, "certs", "check", "--ca", str(other / "ca/ca.pem"),
        "--cert", str(test_ca / "client/client.pem"), "--key", str(test_ca / "client/client.key"),
    )  # fmt: skip
    # Same CA name, different key: the chain does not verify.
    assert code == 1
    assert re.search(r"^error .*signature", out, re.M)


def test_certs_check_reads_the_endpoint_from_a_config_file(
    capsys: pytest.CaptureFixture[str], test_ca: Path, tmp_path: Path
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        "[[endpoint]]\n"
        'host = "logs.example.net"\nport = 6514\n'
        f'ca = "{test_ca / "ca/ca.pem"}"\n'
        f'cert = "{test_ca / "client/client.pem"}"\n'
        f'key = "{test_ca / "client/client.key"}"\n'
    )
    code, out, _ = run(capsys, "certs", "check", "-c", str(config))
    assert code == 0
    assert str(test_ca / "client/client.key") in out


def test_certs_request_makes_a_private_key_and_a_csr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_dir = tmp_path / "site"
    code, out, _ = run(capsys, "certs", "request", "--cn", "site-a", "--org", "Example",
                       "--out", str(out_dir))  # fmt: skip
    assert code == 0
    key, csr_path = out_dir / "site-a.key", out_dir / "site-a.csr"
    assert _mode(key) == 0o600
    assert str(key) in out
    assert str(csr_path) in out
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "site-a"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example"
    assert b"PRIVATE KEY" not in csr_path.read_bytes()

    # A second request never overwrites the key that may be in use.
    before = key.read_bytes()
    code, out, err = run(capsys, "certs", "request", "--cn", "site-a", "--out", str(out_dir))
    assert code != 0
    assert str(key) in err
    assert "already exists" in err
    assert_one_sentence(err)
    assert key.read_bytes() == before


def test_certs_request_into_an_unusable_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Under a regular file: unusable even for root, unlike a mode-0500 directory.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "certs"
    code, _, err = run(capsys, "certs", "request", "--cn", "x", "--out", str(target))
    assert code != 0
    assert str(target) in err
    assert_one_sentence(err)


# ---- relay demo -----------------------------------------------------------------------------


@pytest.mark.slow
def test_python_m_relay_demo_runs_and_exits_0() -> None:
    result = python_m_relay("demo", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "360 of 360" in result.stdout
    assert "v9: 60, IPFIX: 60" in result.stdout
    assert "netstat.netflow.lt" in result.stdout
    for version in (1, 5, 6, 7, 9, 10):
        assert f'"version":{version},' in result.stdout
    # The options came before the data: IPFIX lines name their interfaces, and both give
    # the exporter's sampling (1 in 100).
    assert '"input_if_name":"GigabitEthernet0/' in result.stdout
    assert re.search(r'"version":9,.*"sampling_interval":100,', result.stdout)
    assert re.search(r'"version":10,.*"sampling_interval":100,', result.stdout)
    # One IPv6 flow each is shown for v9 and IPFIX.
    assert re.search(r'"version":9,.*"src_addr":"2001:db8:', result.stdout)
    assert re.search(r'"version":10,.*"src_addr":"2001:db8:', result.stdout)
    assert "v9/IPFIX: templates known 8, options records applied 50, sets dropped 0" in (
        result.stdout
    )
    assert "Traceback" not in result.stderr


def test_certs_check_does_not_depend_on_the_run_flags(
    capsys: pytest.CaptureFixture[str],
    test_ca: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new `run` flag, plumbed into the run overrides, does not reach `certs check`."""
    new_flags = cli.add_run_flags
    new_overrides = cli.run_overrides

    def add_run_flags(run: argparse.ArgumentParser) -> None:
        new_flags(run)
        run.add_argument("--brand-new-flag", default="x")

    seen: list[str] = []

    def run_overrides(args: argparse.Namespace) -> Overrides:
        seen.append(args.brand_new_flag)
        return new_overrides(args)

    monkeypatch.setattr(cli, "add_run_flags", add_run_flags)
    monkeypatch.setattr(cli, "run_overrides", run_overrides)
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[[endpoint]]\nhost = "logs.example.net"\nport = 6514\nca = "{test_ca / "ca/ca.pem"}"\n'
    )
    code, out, err = run(
        capsys,
        "certs", "check", "-c", str(config),
        "--cert", str(test_ca / "client/client.pem"), "--key", str(test_ca / "client/client.key"),
    )  # fmt: skip
    assert (code, err) == (0, "")
    # The flags given to certs check win over the file, as they do for run.
    assert str(test_ca / "client/client.key") in out
    assert str(test_ca / "ca/ca.pem") in out
    assert seen == []
    # The new flag does reach `run` (which stops here at the bad listen address).
    code, _, err = run(capsys, "run", "--brand-new-flag", "y", "--listen", "nowhere")
    assert (code, seen) == (78, ["y"])
    assert "--listen" in err


def test_a_spool_io_error_while_running_exits_75_so_systemd_retries(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """EIO from a failing disk is not a configuration error: 78 would stop systemd's
    restarts for good (RestartPreventExitStatus=78), 75 is retried."""

    def failing(_args: object) -> int:
        raise SpoolTransient("cannot write to the spool in /var/lib/flowrelay/spool: EIO")

    monkeypatch.setitem(cli.COMMANDS, "run", failing)
    code, _, err = run(capsys, "run")
    assert code == EX_TEMPFAIL
    assert err.strip() == "relay: cannot write to the spool in /var/lib/flowrelay/spool: EIO"


def test_a_spool_the_relay_cannot_use_at_start_still_exits_78(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refusing(_args: object) -> int:
        raise SpoolError("the spool in /srv/spool was written by another version of flowrelay")

    monkeypatch.setitem(cli.COMMANDS, "run", refusing)
    code, _, _ = run(capsys, "run")
    assert code == EX_CONFIG
