"""The forwarder against Debian's rsyslogd as the platform: imtcp over TLS, mutual auth."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from forward.test_forwarder import (
    fill,
    make_config,
    numbered,
    open_spool,
    running,
    seq_of,
    window_lines,
)
from support.rsyslog import RsyslogFactory

from relay.certs import TlsFiles, client_context
from relay.forward import Forwarder


@pytest.fixture
def client_tls(tls_client: TlsFiles, tls_ca: TlsFiles) -> Any:
    return client_context(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key)


@pytest.mark.parametrize("framing", ["newline", "octet-counting"])
async def test_lines_arrive_byte_exact(
    tmp_path: Path,
    rsyslog_factory: RsyslogFactory,
    tls_server: TlsFiles,
    client_tls: Any,
    framing: str,
) -> None:
    n = 50_000
    platform = rsyslog_factory(tls_server, mutual=True)
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, n)
    forwarder = Forwarder(spool, make_config([platform.port], client_tls, framing=framing))
    async with running(forwarder):
        assert await forwarder.drain(timeout=30)
        await platform.wait_lines(n, timeout=30)
    assert platform.raw_lines() == numbered(0, n)
    stats = forwarder.statistics()
    assert stats.lines_forwarded == n
    assert stats.duplicates_resent == 0
    assert stats.connection_failures == 0
    # rsyslog's parser sees the tag and the body the relay meant.
    first = platform.messages()[0]
    assert first.programname == "netstat.netflow.lt"
    assert first.body.startswith('{"seq":000000000,')


async def test_rsyslog_restart_between_and_during_batches(
    tmp_path: Path, rsyslog_factory: RsyslogFactory, tls_server: TlsFiles, client_tls: Any
) -> None:
    """rsyslogd restarted while idle: every line arrives, none twice. Restarted while lines
    stream: everything the forwarder had not committed when rsyslogd went down arrives.

    What rsyslogd had taken in (acknowledged by its TCP, queued in its own memory) and throws
    away when it stops is out of any TCP sender's sight: this is the limit of the contract,
    and the test pins it down exactly rather than hoping it away.
    """
    platform = rsyslog_factory(tls_server, mutual=True)
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 20_000)
    config = make_config([platform.port], client_tls)
    forwarder = Forwarder(spool, config)
    n = 240_000
    async with running(forwarder):
        assert await forwarder.drain(timeout=30)
        await platform.wait_lines(20_000, timeout=30)
        await platform.restart_async(downtime=0.2)
        fill(spool, 20_000, 40_000)
        assert await forwarder.drain(timeout=30)
        await platform.wait_lines(40_000, timeout=30)
        after_idle_restart = forwarder.statistics()
        assert platform.raw_lines() == numbered(0, 40_000)
        # Now stop it in the middle of a stream of 200,000 lines.
        fill(spool, 40_000, n)
        await platform.wait_lines(100_000, timeout=30)
        await platform.stop_async()
        committed = forwarder.statistics().lines_forwarded
        await trio.sleep(0.2)
        await platform.start_async()
        assert await forwarder.drain(timeout=60)
    # The stream is in order: once the last line is written, everything sent has been.
    with trio.fail_after(30):
        while not (tail := platform.raw_lines()[-1:]) or seq_of(tail[0]) != n - 1:
            await trio.sleep(0.1)
    assert after_idle_restart.duplicates_resent == 0
    assert after_idle_restart.reconnects >= 1
    received = platform.raw_lines()
    counts = Counter(seq_of(line) for line in received)
    lost = [seq for seq in range(n) if counts[seq] == 0]
    # Nothing the forwarder still held is lost: whatever rsyslogd dropped lies before the
    # cursor as it stood when rsyslogd had stopped, in one run.
    if lost:
        assert lost[-1] < committed
        assert lost == list(range(lost[0], lost[-1] + 1))
    assert set(counts) == set(range(n)) - set(lost)
    stats = forwarder.statistics()
    assert len(received) - len(counts) <= stats.duplicates_resent <= window_lines(config)
    assert max(counts.values()) <= 2
    assert stats.reconnects >= 2


async def test_missing_client_certificate_is_named(
    tmp_path: Path,
    rsyslog_factory: RsyslogFactory,
    tls_server: TlsFiles,
    tls_ca: TlsFiles,
    client_tls: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    platform = rsyslog_factory(tls_server, mutual=True)
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 1_000)
    caplog.set_level(logging.WARNING, logger="relay.forward")
    anonymous = client_context(ca=tls_ca.ca, cert=None, key=None)
    forwarder = Forwarder(spool, make_config([platform.port], anonymous))
    async with running(forwarder):
        with trio.fail_after(10):
            while forwarder.statistics().connection_failures < 2:
                await trio.sleep(0.01)
    messages = [r.getMessage() for r in caplog.records if r.name == "relay.forward"]
    assert messages
    assert messages[0].startswith(f"TLS handshake with 127.0.0.1:{platform.port} failed: ")
    assert "client certificate" in messages[0]
    assert "--cert and --key" in messages[0]
    assert forwarder.statistics().lines_sent == 0
    assert spool.statistics().pending_lines == 1_000
    assert platform.count() == 0
    # With the certificate, everything goes through.
    fixed = Forwarder(spool, make_config([platform.port], client_tls))
    async with running(fixed):
        assert await fixed.drain(timeout=20)
        await platform.wait_lines(1_000, timeout=20)
    assert Counter(seq_of(line) for line in platform.raw_lines()) == Counter(range(1_000))
