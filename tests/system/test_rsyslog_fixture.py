"""The rsyslog fixture: Debian's rsyslogd as the platform, over mutual TLS, on loopback."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.rsyslog import Rsyslog, RsyslogFactory, installed_drivers, tls_driver

from relay.certs import TlsFiles, client_context, issue_certificate, make_test_ca

BODY = '{"version":5,"exporter":"10.0.0.1","src_addr":"192.0.2.1","bytes":1500}'
LINE = f"<14>Nov 22 12:34:56 10.0.0.1 netstat.netflow.lt: {BODY}"


def open_client(server: Rsyslog, files: TlsFiles | None, ca: Path) -> ssl.SSLSocket:
    context = client_context(
        ca=ca, cert=files.cert if files else None, key=files.key if files else None
    )
    raw = socket.create_connection((server.host, server.port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def close(client: ssl.SSLSocket) -> None:
    """close_notify, then read to the end, then close: no RST may discard what we sent."""
    client.settimeout(5)
    try:
        client.unwrap().close()
    except (ssl.SSLError, OSError):
        client.close()


def refused(server: Rsyslog, files: TlsFiles | None, ca: Path) -> str:
    """Connect and send a line; return how the platform refused it.

    rsyslog sends a TLS alert and closes; whether the client reads the alert or only the
    close depends on timing, so both count as refused.
    """
    client = open_client(server, files, ca)
    try:
        client.sendall(b"<14>Nov 22 12:34:56 10.0.0.9 refused: {}\n")
        client.settimeout(5)
        data = client.recv(100)
    except (ssl.SSLError, OSError) as exc:
        return str(exc)
    finally:
        client.close()
    if data == b"":
        return "closed by the platform"
    raise AssertionError(f"the platform accepted the connection (read {data!r})")


def refused_for(reason: str, alert: str) -> bool:
    return any(s in reason for s in (alert, "EOF", "closed", "reset", "Broken pipe"))


def test_mutual_tls_line_written_byte_for_byte(
    rsyslog_factory: RsyslogFactory, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    server = rsyslog_factory(tls_server)
    client = open_client(server, tls_client, tls_client.ca)
    rfc5424 = f"<14>1 2026-11-22T12:34:56.789Z 10.0.0.2 netstat.netflow.lt - - - {BODY}"
    octet_counted = LINE.replace("10.0.0.1 ", "10.0.0.3 ")
    payload = (LINE + "\n" + rfc5424 + "\n").encode()
    payload += b"%d %s" % (len(octet_counted), octet_counted.encode())
    client.sendall(payload)
    close(client)
    server.wait_lines_blocking(3, timeout=10)
    assert server.lines() == [LINE, rfc5424, octet_counted]

    # What rsyslog's parser makes of the header: the tag and the JSON body exactly.
    messages = server.messages()
    assert [(m.pri, m.hostname, m.programname) for m in messages] == [
        (14, "10.0.0.1", "netstat.netflow.lt"),
        (14, "10.0.0.2", "netstat.netflow.lt"),
        (14, "10.0.0.3", "netstat.netflow.lt"),
    ]
    assert [m.tag for m in messages] == [
        "netstat.netflow.lt:",
        "netstat.netflow.lt",
        "netstat.netflow.lt:",
    ]
    assert all(m.body == BODY for m in messages)
    assert json.loads(messages[0].body)["bytes"] == 1500
    assert server.driver == tls_driver()


def test_clients_the_platform_refuses(
    rsyslog_factory: RsyslogFactory,
    tls_server: TlsFiles,
    tls_ca: TlsFiles,
    tls_client: TlsFiles,
    tmp_path: Path,
) -> None:
    server = rsyslog_factory(tls_server)
    now = datetime.now(UTC)
    expired = issue_certificate(
        tls_ca,
        tmp_path,
        "expired",
        hosts=(),
        not_before=now - timedelta(days=10),
        not_after=now - timedelta(days=1),
    )
    stranger_ca = make_test_ca(tmp_path / "stranger", name="not the platform's CA")
    stranger = issue_certificate(stranger_ca, tmp_path / "stranger", "stranger", hosts=())

    assert refused_for(refused(server, None, tls_ca.ca), "CERTIFICATE_REQUIRED")
    assert refused_for(refused(server, expired, tls_ca.ca), "CERTIFICATE_EXPIRED")
    assert refused_for(refused(server, stranger, tls_ca.ca), "UNKNOWN_CA")

    # Nothing of theirs was written: a good client's marker is the only line.
    client = open_client(server, tls_client, tls_client.ca)
    client.sendall(f"{LINE} marker\n".encode())
    close(client)
    server.wait_lines_blocking(1, timeout=10)
    assert server.lines() == [f"{LINE} marker"]


def test_permitted_peers_checks_the_name(
    rsyslog_factory: RsyslogFactory, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    if "gtls" not in installed_drivers():
        pytest.skip("x509/name is only reliable with rsyslog-gnutls (rsyslog/rsyslog#6350)")
    server = rsyslog_factory(tls_server, permitted_peers=["someone-else"])
    assert server.driver == "gtls"
    assert 'authMode="x509/name"' in server.config_file.read_text()
    for _ in range(5):
        refused(server, tls_client, tls_client.ca)
    permitted = rsyslog_factory(tls_server, permitted_peers=["flowrelay-client"])
    client = open_client(permitted, tls_client, tls_client.ca)
    client.sendall(f"{LINE}\n".encode())
    close(client)
    permitted.wait_lines_blocking(1, timeout=10)
    assert server.count() == 0


def test_restart_keeps_port_and_output_and_stops_for_good(
    rsyslog_factory: RsyslogFactory, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    server = rsyslog_factory(tls_server)
    port, first_pid = server.port, server.pid
    client = open_client(server, tls_client, tls_client.ca)
    client.sendall(f"{LINE} 1\n".encode())
    close(client)
    server.wait_lines_blocking(1, timeout=10)
    server.restart()
    assert server.port == port
    assert server.pid != first_pid
    client = open_client(server, tls_client, tls_client.ca)
    client.sendall(f"{LINE} 2\n".encode())
    close(client)
    server.wait_lines_blocking(2, timeout=10)
    assert server.lines() == [f"{LINE} 1", f"{LINE} 2"]
    last_pid = server.pid
    assert last_pid is not None
    server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(last_pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_nothing_outside_its_directory(
    rsyslog_factory: RsyslogFactory, tls_server: TlsFiles
) -> None:
    server = rsyslog_factory(tls_server)
    config = server.config_file.read_text()
    assert "imuxsock" not in config
    assert "imklog" not in config
    paths = re.findall(r'(?:file|File|Directory)="([^"]*)"', config)
    assert len(paths) >= 6
    for path in paths:
        assert path.startswith((str(server.directory), str(tls_server.ca.parent))), path
    assert server.pid_file.read_text().strip() == str(server.pid)
    assert "error" not in server.diagnostics().lower()


async def test_async_wait_and_restart(
    rsyslog_factory: RsyslogFactory, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    server = rsyslog_factory(tls_server, start=False)
    assert server.pid is None  # not started
    await server.start_async()
    client = open_client(server, tls_client, tls_client.ca)
    client.sendall(f"{LINE}\n".encode() * 1000)
    close(client)
    assert await server.wait_lines(1000, timeout=10) == 1000
    await server.restart_async(downtime=0.05)
    assert server.running
    with pytest.raises(TimeoutError, match=r"wrote only 1000 of 1001 lines"):
        await server.wait_lines(1001, timeout=0.1)


def test_missing_rsyslogd_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("relay.testing.rsyslog.find_rsyslogd", lambda: None)
    files = TlsFiles(ca=tmp_path, cert=tmp_path, key=tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install rsyslog"):
        Rsyslog(tmp_path, files)


def test_teardown_stops_rsyslogd_when_a_test_fails(tmp_path: Path) -> None:
    """Run a failing test that uses the fixture in a child pytest; no rsyslogd may survive it."""
    if tls_driver() is None:
        pytest.skip("rsyslogd with a TLS driver is needed")
    pid_file = tmp_path / "pid"
    (tmp_path / "test_fails.py").write_text(
        f"""
from pathlib import Path
from relay.certs import issue_certificate, make_test_ca

def test_fails(rsyslog_factory, tmp_path):
    ca = make_test_ca(tmp_path / "tls")
    server = rsyslog_factory(issue_certificate(ca, tmp_path / "tls", "localhost"))
    Path({str(pid_file)!r}).write_text(str(server.pid))
    raise AssertionError("this test fails on purpose")
"""
    )
    tests_dir = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir), str(tests_dir.parent)])}
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "support.rsyslog",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_fails.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "1 failed" in child.stdout, child.stdout + child.stderr
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
