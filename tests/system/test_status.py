"""``/status``, ``relay status`` and the status page against a real ``relay run`` fed real UDP:
healthy (exit 0), an exporter gone silent and no endpoint (exit 1, each said), no relay at
all (exit 75); the page rendered by Debian's headless Chromium, whose DOM must hold the
table its own script filled from /status."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from support.relayproc import LOOPBACK, REPO, RelayProcess, http_get, tls_args

from relay.certs import TlsFiles, server_context
from relay.sendtest import send_test
from relay.testing.ports import free_port
from relay.testing.sink import SyslogSink
from relay.testing.synth import SyntheticExporter

CHROMIUM = shutil.which("chromium")
SILENT_AFTER = 2


def relay_args(tmp_path: Path, tls_ca: TlsFiles, tls_client: TlsFiles, sink_port: int) -> list[str]:
    config = tmp_path / "relay.toml"
    config.write_text(f"[exporters]\nsilent_after = {SILENT_AFTER}\n")
    return [
        "-c", str(config), "--listen", f"{LOOPBACK}:0", "--endpoint", f"{LOOPBACK}:{sink_port}",
        "--spool", str(tmp_path / "spool"), "--metrics", f"{LOOPBACK}:0",
        *tls_args(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key),
    ]  # fmt: skip


def relay_status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "status", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def status_doc(relay: RelayProcess) -> dict[str, object]:
    assert relay.metrics_port is not None
    code, body = http_get(relay.metrics_port, "/status")
    assert code == 200, body
    doc = json.loads(body)
    assert isinstance(doc, dict)
    return doc


async def wait_for(relay: RelayProcess, check: object, what: str, timeout: float = 15) -> None:
    deadline = trio.current_time() + timeout
    while not check(status_doc(relay)):  # type: ignore[operator]
        if trio.current_time() > deadline:
            raise AssertionError(f"no {what} within {timeout} s: {status_doc(relay)}")
        await trio.sleep(0.1)


async def send_v5_until(port: int, stop: trio.Event) -> None:
    exporter = SyntheticExporter(rng=random.Random(3), boot_time=time.time() - 60)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while not stop.is_set():
            sock.sendto(exporter.datagram(5, 10, time.time()), (LOOPBACK, port))
            with trio.move_on_after(0.2):
                await stop.wait()


def chromium(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--hide-scrollbars", "--virtual-time-budget=8000", *args, url,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_status_says_all_well_then_names_the_silent_exporter(
    tmp_path: Path,
    tls_ca: TlsFiles,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
) -> None:
    sink = SyslogSink(
        ssl_context=server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    )
    async with trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        with RelayProcess(
            relay_args(tmp_path, tls_ca, tls_client, sink_port), tmp_path / "relay.log"
        ) as relay:
            await relay.start_async()
            await check_healthy_then_silent(relay, sink_port, tmp_path)
        nursery.cancel_scope.cancel()


def test_status_says_so_when_no_endpoint_is_connected(
    tmp_path: Path, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    # An endpoint nobody listens on.
    with RelayProcess(
        relay_args(tmp_path, tls_ca, tls_client, free_port()), tmp_path / "relay.log"
    ) as relay:
        relay.start()
        done = relay_status("--metrics", f"{LOOPBACK}:{relay.metrics_port}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "endpoint     not connected" in done.stdout
    assert "ATTENTION: no endpoint connected: lines wait in the spool" in done.stdout


def test_status_of_no_relay_exits_75_and_says_where_it_looked() -> None:
    port = free_port()
    done = relay_status("--metrics", f"{LOOPBACK}:{port}")
    assert done.returncode == 75
    assert f"cannot read /status from {LOOPBACK}:{port}" in done.stderr
    assert done.stdout == ""


async def check_healthy_then_silent(relay: RelayProcess, sink_port: int, shots: Path) -> None:
    metrics = f"{LOOPBACK}:{relay.metrics_port}"
    stop_sending = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_v5_until, relay.udp_port, stop_sending)
        await check_status(relay, metrics, sink_port, stop_sending, shots)
        nursery.cancel_scope.cancel()


async def check_status(
    relay: RelayProcess, metrics: str, sink_port: int, stop_sending: trio.Event, shots: Path
) -> None:
    """Healthy while v5 keeps coming; then the v5 exporter stops (``stop_sending``)."""
    await trio.to_thread.run_sync(
        lambda: send_test(LOOPBACK, relay.udp_port, version=10, count=3, records=5, rate=0)
    )

    def settled(doc: dict[str, object]) -> bool:
        rows = doc["exporters"]
        assert isinstance(rows, list)
        return len(rows) == 2 and not doc["attention"]

    await wait_for(relay, settled, "two exporters and a connected endpoint")
    done = await trio.to_thread.run_sync(relay_status, "--metrics", metrics)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all well" in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        *("EXPORTER", "VERSIONS", "RECORDS/S", "LAST", "SEEN", "LOSS", "TEMPLATES")
    ]
    v5_row = next(line for line in lines if line.startswith("127.0.0.1 ") and " v5 " in line)
    assert "SILENT" not in v5_row
    ipfix_row = next(line for line in lines if "IPFIX" in line)
    assert ipfix_row.startswith("127.0.0.1 (domain ")
    assert f"endpoint     {LOOPBACK}:{sink_port}" in done.stdout

    doc = status_doc(relay)
    rows = {(e["exporter"], e["domain"]): e for e in doc["exporters"]}  # type: ignore[attr-defined]
    v5 = rows[("127.0.0.1", None)]
    assert v5["versions"] == [5]
    assert v5["records"] == 10 * v5["datagrams"] > 0
    (ipfix,) = [e for k, e in rows.items() if k[1] is not None]
    assert ipfix["versions"] == [10]
    assert ipfix["records"] == 15
    assert ipfix["templates"] > 0
    pipeline = doc["pipeline"]
    assert isinstance(pipeline, dict)
    assert pipeline["endpoints"] == [{"endpoint": f"{LOOPBACK}:{sink_port}", "connected": True}]
    assert pipeline["certificate_not_after"] > time.time() + 30 * 86400

    if CHROMIUM is not None:
        page = await trio.to_thread.run_sync(lambda: chromium(f"http://{metrics}/", "--dump-dom"))
        assert page.returncode == 0, page.stderr[-2000:]
        # Filled by the page's script from /status: the rows are not in the HTML served.
        assert "<td>127.0.0.1</td>" in page.stdout
        assert "<td>IPFIX</td>" in page.stdout
        assert "All well." in page.stdout
        shot = shots / "status.png"
        taken = await trio.to_thread.run_sync(
            lambda: chromium(f"http://{metrics}/", f"--screenshot={shot}", "--window-size=1000,620")
        )
        assert taken.returncode == 0, taken.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stop_sending.set()

    def silent(doc: dict[str, object]) -> bool:
        return any(e["silent"] and e["domain"] is None for e in doc["exporters"])  # type: ignore[attr-defined]

    await wait_for(relay, silent, "silent exporter", timeout=SILENT_AFTER + 15)
    done = await trio.to_thread.run_sync(relay_status, "--metrics", metrics)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ATTENTION: exporter 127.0.0.1 is silent: nothing for " in done.stdout
    assert any(line.rstrip().endswith("SILENT") for line in done.stdout.splitlines())
    assert [e["exporter"] for e in relay.events("exporter_silent")][:1] == ["127.0.0.1"]
    scraped = relay.scrape()
    assert scraped.value("flowrelay_exporter_silent", exporter="127.0.0.1") == 1


async def test_the_supervisor_of_two_workers_serves_their_status_merged(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    sink = SyslogSink(
        ssl_context=server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    )
    udp_port, metrics_port = free_port(kind=socket.SOCK_DGRAM), free_port()
    async with trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        args = relay_args(tmp_path, tls_ca, tls_client, sink_port)
        args[args.index("--listen") + 1] = f"{LOOPBACK}:{udp_port}"
        args[args.index("--metrics") + 1] = f"{LOOPBACK}:{metrics_port}"
        log = (tmp_path / "relay.log").open("wb")
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay", "run", "--workers", "2", *args],
            stderr=log,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        try:
            await check_merged(udp_port, metrics_port, sink_port)
        finally:
            relay.kill()
            relay.wait()
            log.close()
        nursery.cancel_scope.cancel()


def merged_and_healthy(doc: dict[str, Any]) -> bool:
    return (
        len(doc["exporters"]) == 3
        and len(doc["pipeline"]["endpoints"]) == 2
        and not doc["attention"]
    )


async def check_merged(udp_port: int, metrics_port: int, sink_port: int) -> None:
    senders = []
    for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        senders.append((sock, SyntheticExporter(rng=random.Random(host), boot_time=time.time())))
    deadline = trio.current_time() + 30
    doc: dict[str, Any] = {}
    try:
        while trio.current_time() < deadline:
            for sock, exporter in senders:
                sock.sendto(exporter.datagram(5, 10, time.time()), (LOOPBACK, udp_port))
            try:
                code, body = http_get(metrics_port, "/status")
            except OSError:  # the supervisor is not listening yet
                code, body = 0, ""
            if code == 200:
                doc = json.loads(body)
                if merged_and_healthy(doc):
                    break
            await trio.sleep(0.2)
        else:
            raise AssertionError(f"no merged, healthy status within 30 s: {doc}")
        done = await trio.to_thread.run_sync(
            relay_status, "--metrics", f"{LOOPBACK}:{metrics_port}"
        )
    finally:
        for sock, _ in senders:
            sock.close()
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split()[0] for line in done.stdout.splitlines()[1:4]]
    assert rows == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert f"endpoint     {LOOPBACK}:{sink_port}, {LOOPBACK}:{sink_port}" in done.stdout
