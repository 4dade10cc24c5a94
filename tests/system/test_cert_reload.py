"""SIGHUP re-reads the certificates, against a real ``relay run`` and a real rsyslog platform.

The platform is rsyslog with ``x509/name`` peer checks: the first one admits only the client
certificate ``client-a``, its successor on the same port only ``client-b``. So lines reaching
the successor prove that the relay presented the new certificate, and lines reaching the
first one after the reload prove that the connection in use was kept. Then a bad set (a key
that does not match) is refused naming the file, and the set in use stays in use.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import trio
from support.relayproc import LOOPBACK, RelayProcess, tls_args
from support.rsyslog import Rsyslog, RsyslogFactory

from relay.certs import TlsFiles, certificate_not_after, issue_certificate
from relay.testing.synth import SyntheticExporter

DATAGRAMS = 10
RECORDS = 30
BATCH = DATAGRAMS * RECORDS
EXPIRY = "flowrelay_tls_client_certificate_expiry_timestamp_seconds"


def install(files: TlsFiles, live: Path) -> None:
    """Rotate as an operator's tooling should: each file replaced whole (rename)."""
    for source, name, mode in ((files.cert, "client.pem", 0o644), (files.key, "client.key", 0o600)):
        temporary = live / f".{name}.new"
        shutil.copy(source, temporary)
        temporary.chmod(mode)
        os.replace(temporary, live / name)


def send_batch(exporter: SyntheticExporter, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(DATAGRAMS):
            sock.sendto(exporter.datagram(5, RECORDS, time.time()), (LOOPBACK, port))


async def wait_event(relay: RelayProcess, name: str, count: int = 1) -> None:
    with trio.fail_after(15):
        while len(relay.events(name)) < count:
            await trio.sleep(0.05)


def delivered(*platforms: Rsyslog) -> Counter[bytes]:
    return Counter(line for p in platforms for line in p.raw_lines())


async def test_sighup_rotates_the_client_certificate_and_refuses_a_bad_set(
    tmp_path: Path,
    rsyslog_factory: RsyslogFactory,
    tls_ca: TlsFiles,
    tls_server: TlsFiles,
) -> None:
    made = tmp_path / "issued"
    old = issue_certificate(tls_ca, made, "client-a", hosts=(), server=False, days=365)
    new = issue_certificate(tls_ca, made, "client-b", hosts=(), server=False, days=20)
    stray = issue_certificate(tls_ca, made, "client-c", hosts=(), server=False)
    live = tmp_path / "live"
    live.mkdir()
    install(old, live)

    first = rsyslog_factory(tls_server, permitted_peers=["client-a"])
    successor = rsyslog_factory(
        tls_server, port=first.port, permitted_peers=["client-b"], start=False
    )
    exporter = SyntheticExporter(rng=random.Random(11), boot_time=time.time() - 60)
    args = [
        "--listen", f"{LOOPBACK}:0", "--endpoint", f"{LOOPBACK}:{first.port}",
        "--spool", str(tmp_path / "spool"), "--metrics", f"{LOOPBACK}:0",
        "--allow", f"{LOOPBACK}/32",
        *tls_args(ca=tls_ca.ca, cert=live / "client.pem", key=live / "client.key"),
    ]  # fmt: skip
    with RelayProcess(args, tmp_path / "relay.log") as relay:
        await relay.start_async()
        scrape = await relay.scrape_async()
        assert scrape.value(EXPIRY) == certificate_not_after(old.cert).timestamp()
        send_batch(exporter, relay.udp_port)
        await first.wait_lines(BATCH, timeout=20)

        # Rotate, reload: the connection in use is kept, so the old platform still takes lines.
        install(new, live)
        relay.signal(signal.SIGHUP)
        await wait_event(relay, "tls_reloaded")
        assert len(relay.events("forward_connected")) == 1
        send_batch(exporter, relay.udp_port)
        await first.wait_lines(2 * BATCH, timeout=20)
        scrape = await relay.scrape_async()
        assert scrape.value(EXPIRY) == certificate_not_after(new.cert).timestamp()
        # The new certificate has 20 days left: said at once.
        [expiring] = relay.events("tls_certificate_expiring")
        assert expiring["path"] == str(live / "client.pem")
        assert "in 19 day(s)" in expiring["message"]

        # The platform restarts, admitting only the new certificate: the relay reconnects
        # with it, and what was sent meanwhile arrives.
        await first.stop_async()
        send_batch(exporter, relay.udp_port)
        await successor.start_async()
        await successor.wait_lines(BATCH, timeout=30)
        assert len(relay.events("forward_connected")) == 2

        # A key that belongs to another certificate: refused, naming the file; still client-b.
        shutil.copy(stray.key, live / "client.key")
        relay.signal(signal.SIGHUP)
        await wait_event(relay, "tls_reload_refused")
        [refused] = relay.events("tls_reload_refused")
        assert refused["message"].startswith(
            "certificate reload refused, the certificates in use are kept: key file "
            f"{live / 'client.key'} does not match certificate file {live / 'client.pem'}"
        )
        assert refused["level"] == "ERROR"
        await successor.restart_async()
        send_batch(exporter, relay.udp_port)
        lines_before = successor.count()
        await successor.wait_lines(lines_before + BATCH, timeout=30)
        assert len(relay.events("forward_connected")) == 3
        scrape = await relay.scrape_async()
        assert scrape.value(EXPIRY) == certificate_not_after(new.cert).timestamp()
        resent = scrape.value("flowrelay_lines_resent_total")

        relay.signal(signal.SIGTERM)
        assert await relay.wait_async(timeout=30) == 0

    lines = delivered(first, successor)
    # Nothing lost, and no more duplicates than the reconnects themselves resent.
    assert len(lines) == 4 * BATCH
    assert sum(lines.values()) - len(lines) <= resent
