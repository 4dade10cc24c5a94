"""Signals against a real ``relay run``: SIGHUP reloads (unchanged certificates here) and the
relay carries on forwarding; SIGTERM drains. (tests/system/test_cert_reload.py rotates them.)

Before, SIGHUP (the usual "reload") ended the relay at once with status 129, no log line and
the active segment unsealed, and systemd counted that as a clean exit.
"""

from __future__ import annotations

import random
import signal
import socket
import time
from pathlib import Path

import trio
from support.relayproc import RelayProcess, tls_args

from relay.certs import TlsFiles, server_context
from relay.testing.sink import SyslogSink
from relay.testing.synth import SyntheticExporter

LOOPBACK = "127.0.0.1"
DATAGRAMS = 20
RECORDS = 30
BATCH = DATAGRAMS * RECORDS


def send_batch(exporter: SyntheticExporter, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(DATAGRAMS):
            sock.sendto(exporter.datagram(5, RECORDS, time.time()), (LOOPBACK, port))


async def wait_event(relay: RelayProcess, name: str, count: int, *, timeout: float) -> None:
    deadline = trio.current_time() + timeout
    while len(relay.events(name)) < count:
        if trio.current_time() > deadline:
            raise AssertionError(f"no {name!r} log event after {timeout} s:\n{relay.log_tail()}")
        await trio.sleep(0.05)


async def test_sighup_reloads_and_the_relay_keeps_forwarding_until_sigterm(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    sink = SyslogSink(
        ssl_context=server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    )
    exporter = SyntheticExporter(rng=random.Random(3), boot_time=time.time() - 60)
    async with trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        args = [
            "--listen", f"{LOOPBACK}:0", "--endpoint", f"{LOOPBACK}:{sink_port}",
            "--spool", str(tmp_path / "spool"), "--metrics", "off", "--allow", f"{LOOPBACK}/32",
            *tls_args(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key),
        ]  # fmt: skip
        with RelayProcess(args, tmp_path / "relay.log") as relay:
            await relay.start_async()
            send_batch(exporter, relay.udp_port)
            await sink.wait_lines(BATCH, timeout=20)

            relay.signal(signal.SIGHUP)
            await wait_event(relay, "sighup", 1, timeout=10)
            assert relay.process is not None
            assert relay.process.poll() is None, relay.log_tail()

            # Still receiving and forwarding after the hangup, and a second one is the same.
            send_batch(exporter, relay.udp_port)
            await sink.wait_lines(2 * BATCH, timeout=20)
            relay.signal(signal.SIGHUP)
            await wait_event(relay, "sighup", 2, timeout=10)
            send_batch(exporter, relay.udp_port)
            await sink.wait_lines(3 * BATCH, timeout=20)

            relay.signal(signal.SIGTERM)
            code = await relay.wait_async(timeout=30)
            events = relay.events()
        nursery.cancel_scope.cancel()

    assert code == 0, relay.log_tail()
    said = [e for e in events if e.get("event") == "sighup"]
    assert len(said) == 2
    assert said[0]["message"] == "SIGHUP received: reloading the certificates"
    assert len([e for e in events if e.get("event") == "tls_reloaded"]) == 2
    assert [e["event"] for e in events if e.get("event") in ("signal", "stopped")] == [
        "signal",
        "stopped",
    ]
    assert len(set(sink.lines)) == 3 * BATCH
