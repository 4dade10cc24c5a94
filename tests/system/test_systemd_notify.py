"""``Type=notify`` and ``WatchdogSec=`` against a real ``relay run``: the test plays systemd,
with an AF_UNIX datagram socket in ``$NOTIFY_SOCKET`` and a watchdog in ``$WATCHDOG_USEC``.

READY=1 comes once the listen port takes NetFlow, WATCHDOG=1 pings come from the event loop
(a blocked loop stops them), STOPPING=1 comes at SIGTERM; with workers the supervisor speaks
for all of them and restarts a worker that stops answering.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from support.relayproc import LOOPBACK, RelayProcess, tls_args

from relay.certs import TlsFiles, server_context
from relay.systemd import TEST_HANG_ENV
from relay.testing.sink import SyslogSink
from relay.testing.synth import SyntheticExporter

RECORDS = 30


@dataclass
class FakeSystemd:
    """What arrived on the notify socket, one entry per datagram, with its arrival time."""

    name: str
    messages: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m]

    async def wait_for(self, key: str, *, count: int = 1, timeout: float) -> dict[str, str]:
        with trio.fail_after(timeout):
            while len(self.with_key(key)) < count:
                await trio.sleep(0.02)
        return self.with_key(key)[count - 1][1]


@asynccontextmanager
async def fake_systemd(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSystemd]:
    # The abstract namespace: no path to outgrow sun_path's 108 bytes, nothing to clean up.
    name = f"flowrelay-notify-{os.getpid()}-{random.getrandbits(32):08x}"
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(b"\0" + name.encode())
    systemd = FakeSystemd(name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)

    async def receive() -> None:
        while True:
            data = await sock.recv(65536)
            lines = data.decode().splitlines()
            systemd.messages.append((trio.current_time(), dict(x.split("=", 1) for x in lines)))

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            yield systemd
            nursery.cancel_scope.cancel()


def relay_args(tmp_path: Path, sink_port: int, tls_ca: TlsFiles, client: TlsFiles) -> list[str]:
    return [
        "--listen", f"{LOOPBACK}:0", "--endpoint", f"{LOOPBACK}:{sink_port}",
        "--spool", str(tmp_path / "spool"), "--metrics", "off", "--allow", f"{LOOPBACK}/32",
        *tls_args(ca=tls_ca.ca, cert=client.cert, key=client.key),
    ]  # fmt: skip


def send(port: int, datagrams: int) -> None:
    exporter = SyntheticExporter(rng=random.Random(5), boot_time=time.time() - 60)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(datagrams):
            sock.sendto(exporter.datagram(5, RECORDS, time.time()), (LOOPBACK, port))


def worker_pids(pid: int) -> list[int]:
    # Children are listed by the thread that forked them, not always the main one.
    return sorted(
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    )


async def test_ready_comes_with_the_port_open_pings_come_and_stopping_at_sigterm(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tls_ca: TlsFiles,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    sink = SyslogSink(ssl_context=server_context(cert=tls_server.cert, key=tls_server.key))
    async with fake_systemd(monkeypatch) as systemd, trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        args = relay_args(tmp_path, sink_port, tls_ca, tls_client)
        with RelayProcess(args, tmp_path / "relay.log") as relay:
            await relay.start_async()
            ready = await systemd.wait_for("READY", timeout=15)
            assert ready == {"READY": "1", "STATUS": ready["STATUS"]}
            assert "received=0" in ready["STATUS"]
            # Ready means the port takes NetFlow now.
            send(relay.udp_port, 4)
            await sink.wait_lines(4 * RECORDS, timeout=20)

            # Pings at half of WATCHDOG_USEC: about two a second.
            start = len(systemd.with_key("WATCHDOG"))
            await trio.sleep(2.2)
            pings = len(systemd.with_key("WATCHDOG")) - start
            assert 3 <= pings <= 6, systemd.messages
            # STATUS= follows the stats line.
            await systemd.wait_for("STATUS", count=len(systemd.with_key("STATUS")) + 1, timeout=5)
            assert "received=4 " in systemd.with_key("STATUS")[-1][1]["STATUS"]
            assert systemd.with_key("STOPPING") == []

            relay.signal(signal.SIGTERM)
            stopping = await systemd.wait_for("STOPPING", timeout=10)
            assert stopping["STATUS"].startswith("draining: ")
            assert await relay.wait_async(timeout=30) == 0
        nursery.cancel_scope.cancel()


async def test_a_relay_whose_event_loop_blocks_stops_pinging_the_watchdog(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tls_ca: TlsFiles,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv(TEST_HANG_ENV, "1")
    sink = SyslogSink(ssl_context=server_context(cert=tls_server.cert, key=tls_server.key))
    async with fake_systemd(monkeypatch) as systemd, trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        args = relay_args(tmp_path, sink_port, tls_ca, tls_client)
        with RelayProcess(args, tmp_path / "relay.log") as relay:
            await relay.start_async()
            await systemd.wait_for("READY", timeout=15)
            await systemd.wait_for("WATCHDOG", count=3, timeout=5)

            relay.signal(signal.SIGUSR1)
            with trio.fail_after(10):
                while not relay.events("test_hang"):
                    await trio.sleep(0.02)
            # One ping may have been on its way; after that, silence for 10 periods.
            await trio.sleep(0.3)
            before = len(systemd.with_key("WATCHDOG"))
            await trio.sleep(2.0)
            assert len(systemd.with_key("WATCHDOG")) == before
            assert relay.process is not None
            assert relay.process.poll() is None  # alive but hung: what systemd must restart
        nursery.cancel_scope.cancel()


async def test_with_workers_the_supervisor_notifies_and_restarts_a_hung_worker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tls_ca: TlsFiles,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
) -> None:
    # A worker is hung once its heartbeat is as late as systemd's watchdog timeout (5 s).
    monkeypatch.setenv("WATCHDOG_USEC", "5000000")
    sink = SyslogSink(ssl_context=server_context(cert=tls_server.cert, key=tls_server.key))
    async with fake_systemd(monkeypatch) as systemd, trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        args = [*relay_args(tmp_path, sink_port, tls_ca, tls_client), "--workers", "2"]
        with RelayProcess(args, tmp_path / "relay.log") as relay:
            await relay.start_async(timeout=20)
            ready = await systemd.wait_for("READY", timeout=20)
            assert ready["STATUS"] == "workers_up=2/2"
            # Two workers each said "started"; neither talked to systemd (no socket for them).
            assert len(relay.events("started")) == 2
            await systemd.wait_for("WATCHDOG", count=2, timeout=10)
            pids = worker_pids(relay.pid)
            assert len(pids) == 2

            os.kill(pids[0], signal.SIGSTOP)
            with trio.fail_after(20):
                while not relay.events("worker_hung"):
                    await trio.sleep(0.05)
                while len(relay.events("started")) < 3:
                    await trio.sleep(0.05)
            assert pids[0] not in worker_pids(relay.pid)
            assert len(systemd.with_key("READY")) == 1
            # The supervisor's own loop kept pinging throughout.
            assert relay.process is not None
            assert relay.process.poll() is None

            relay.signal(signal.SIGTERM)
            stopping = await systemd.wait_for("STOPPING", timeout=10)
            assert stopping["STATUS"] == "draining the workers"
            assert await relay.wait_async(timeout=40) == 0
        nursery.cancel_scope.cancel()
