"""The forwarder against real TLS syslog receivers on loopback: nothing accepted is lost.

Every scenario feeds numbered lines through a real spool and checks, by number, which lines
reached the receiver and how often.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import ssl
import struct
import termios
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from relay.certs import TlsFiles, client_context, issue_certificate, make_test_ca, server_context
from relay.errors import ConfigError
from relay.forward import Endpoint, Forwarder, ForwarderConfig
from relay.framing import TLS_RECORD_PAYLOAD, Framing, frame_lines, record_cuts
from relay.spool import FsyncPolicy, Spool
from relay.testing.ports import free_port
from relay.testing.sink import SyslogSink

LINE_BYTES = 200
_PREFIX = b'<14>Nov 23 12:00:00 10.0.0.1 netstat.netflow.lt: {"seq":'
_DIGITS = 9


def numbered(start: int, stop: int, size: int = LINE_BYTES) -> list[bytes]:
    """Lines ``start..stop-1``, each exactly ``size`` bytes and carrying its number."""
    tail = b',"pad":"' + b"x" * (size - len(_PREFIX) - _DIGITS - 10) + b'"}'
    return [b"%s%09d%s" % (_PREFIX, seq, tail) for seq in range(start, stop)]


def seq_of(line: bytes) -> int:
    return int(line[len(_PREFIX) : len(_PREFIX) + _DIGITS])


def fill(spool: Spool, start: int, stop: int, size: int = LINE_BYTES) -> None:
    for chunk in range(start, stop, 10_000):
        spool.append(numbered(chunk, min(stop, chunk + 10_000), size))


def open_spool(path: Path) -> Spool:
    return Spool.open(path, max_bytes=1 << 30, fsync=FsyncPolicy.NEVER)


def tcp_wmem_max() -> int:
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


def window_lines(config: ForwarderConfig, line_bytes: int = LINE_BYTES) -> int:
    """Lines that can be sent and not yet committed on one connection: the kernel's send
    buffer at its largest, plus the batch being written, plus the four batches a TLS 1.3
    connection may send before the server's verdict on the client certificate."""
    return (tcp_wmem_max() + 6 * config.batch_bytes) // line_bytes


def assert_exactly_once_or_more(received: Iterable[bytes], n: int) -> Counter[int]:
    """Every line 0..n-1 arrived, byte-exact, and nothing else; returns the counts."""
    counts = Counter(seq_of(line) for line in received)
    missing = [seq for seq in range(n) if counts[seq] == 0]
    assert not missing, f"{len(missing)} lines never arrived, first {missing[:5]}"
    assert set(counts) == set(range(n))
    return counts


# --------------------------------------------------------------------------------------------
# Pure parts


@pytest.mark.parametrize(
    ("framing", "lines", "wire"),
    [
        (Framing.NEWLINE, [b"a", b"bc"], b"a\nbc\n"),
        (Framing.NEWLINE, [], b""),
        (Framing.OCTET_COUNTING, [b"a", b"bc"], b"1 a2 bc"),
        (Framing.OCTET_COUNTING, [b"x" * 12], b"12 " + b"x" * 12),
        (Framing.OCTET_COUNTING, [], b""),
    ],
)
def test_frame_lines(framing: Any, lines: list[bytes], wire: bytes) -> None:
    assert frame_lines(lines, framing) == wire


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=60),
    framing=st.sampled_from([Framing.NEWLINE, Framing.OCTET_COUNTING]),
    limit=st.sampled_from([64, 1000, TLS_RECORD_PAYLOAD]),
)
def test_record_cuts_hold_whole_lines(sizes: list[int], framing: Any, limit: int) -> None:
    lines = [b"y" * size for size in sizes]
    data = frame_lines(lines, framing)
    # Where each framed line ends in ``data``.
    ends, total = set(), 0
    for line in lines:
        total += len(line) + (1 if framing == Framing.NEWLINE else len(b"%d " % len(line)))
        ends.add(total)
    cuts = record_cuts(data, lines, framing, limit)
    assert cuts[-1] == len(data)
    start = 0
    for end in cuts:
        assert end in ends, "a record must end where a line ends"
        piece = end - start
        lines_in_piece = len([e for e in ends if start < e <= end])
        assert piece <= limit or lines_in_piece == 1
        start = end


def test_record_cuts_fill_records() -> None:
    lines = numbered(0, 1000)
    data = frame_lines(lines, Framing.NEWLINE)
    cuts = record_cuts(data, lines, Framing.NEWLINE)
    per_record = TLS_RECORD_PAYLOAD // (LINE_BYTES + 1)
    assert len(cuts) == -(-1000 // per_record)


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("collector.example.com:6514", "collector.example.com", 6514, "collector.example.com:6514"),
        ("127.0.0.1:1", "127.0.0.1", 1, "127.0.0.1:1"),
        ("[::1]:6514", "::1", 6514, "[::1]:6514"),
    ],
)
def test_endpoint_parse(text: str, host: str, port: int, shown: str) -> None:
    endpoint = Endpoint.parse(text, server_name="platform")
    assert (endpoint.host, endpoint.port, endpoint.tls_name) == (host, port, "platform")
    assert str(endpoint) == shown
    assert Endpoint(host=host, port=port).tls_name == host


@pytest.mark.parametrize("text", ["collector", "collector:", ":6514", "::1:6514", "h:0", "h:70000"])
def test_endpoint_parse_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="endpoint"):
        Endpoint.parse(text)


def test_config_rejects_nonsense() -> None:
    one = (Endpoint(host="127.0.0.1", port=6514),)
    with pytest.raises(ConfigError, match="no endpoint"):
        ForwarderConfig(endpoints=(), ssl_context=None)
    with pytest.raises(ConfigError, match="framing"):
        ForwarderConfig(endpoints=one, ssl_context=None, framing="crlf")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="backoff"):
        ForwarderConfig(endpoints=one, ssl_context=None, backoff_initial=5, backoff_max=1)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.warns(DeprecationWarning, match="TLSv1_1"):
        old.minimum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ConfigError, match=r"TLS 1\.2"):
        ForwarderConfig(endpoints=one, ssl_context=old)


# --------------------------------------------------------------------------------------------
# Against a TLS receiver


@pytest.fixture
def server_tls(tls_server: TlsFiles, tls_ca: TlsFiles) -> ssl.SSLContext:
    """The platform: verifies the relay's client certificate against the test CA."""
    return server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)


@pytest.fixture
def client_tls(tls_client: TlsFiles, tls_ca: TlsFiles) -> ssl.SSLContext:
    return client_context(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key)


def make_config(
    ports: Iterable[int], context: ssl.SSLContext | None, **overrides: Any
) -> ForwarderConfig:
    settings: dict[str, Any] = {
        "backoff_initial": 0.02,
        "backoff_max": 0.2,
        "connect_timeout": 2.0,
        "drain_timeout": 2.0,
        "failover_after": 2,
        # The trio sink sends no TLS 1.3 session ticket; do not wait a second for one.
        "confirm_timeout": 0.2,
    }
    settings.update(overrides)
    return ForwarderConfig(
        endpoints=tuple(Endpoint(host="127.0.0.1", port=port) for port in ports),
        ssl_context=context,
        **settings,
    )


@asynccontextmanager
async def running(forwarder: Forwarder) -> AsyncIterator[Forwarder]:
    """Run the forwarder for the block; cancelled (a clean close) at its end."""
    async with trio.open_nursery() as nursery:
        await nursery.start(forwarder.run)
        yield forwarder
        nursery.cancel_scope.cancel()


async def closed(sink: SyslogSink) -> None:
    """Wait until the forwarder's connections to ``sink`` are closed. A clean close (FIN,
    not RST) lets the receiver read its whole backlog first; only then may a test stop it,
    as stopping it abruptly would discard what it had not read."""
    await sink.wait_until(lambda s: s.connections_open == 0, timeout=10, what="closed")


async def wait_for(predicate: Any, *, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"{what} did not happen within {timeout} s")


async def test_endpoint_down_at_start_then_up(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    n = 20_000
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, n)
    port = free_port()
    forwarder = Forwarder(spool, make_config([port], client_tls))
    sink = SyslogSink(ssl_context=server_tls, port=port)
    async with trio.open_nursery() as nursery:
        async with running(forwarder):
            await wait_for(
                lambda: forwarder.statistics().connection_failures >= 3,
                timeout=5,
                what="3 failures",
            )
            stats = forwarder.statistics()
            assert not stats.connected
            assert stats.lines_forwarded == 0
            assert stats.last_error == f"cannot connect to 127.0.0.1:{port}: connection refused"
            assert spool.statistics().pending_lines == n
            await nursery.start(sink.run)
            assert await forwarder.drain(timeout=10)
            stats = forwarder.statistics()
            assert stats.connected
            assert stats.endpoint == f"127.0.0.1:{port}"
            assert stats.lines_forwarded == n
            assert stats.duplicates_resent == 0
            assert stats.reconnects >= 3
        await closed(sink)
        nursery.cancel_scope.cancel()
    counts = assert_exactly_once_or_more(sink.lines, n)
    assert max(counts.values()) == 1
    assert sink.lines == numbered(0, n)  # byte-exact and in order
    assert spool.statistics().pending_lines == 0


async def test_endpoint_restarted_mid_stream(
    tmp_path: Path,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The platform restarts gracefully (it stops reading new connections, finishes what it
    has, closes): every line arrives; duplicates are counted and within one window."""
    n = 100_000
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, n)
    first = SyslogSink(ssl_context=server_tls)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(first.run)
        config = make_config([port], client_tls)
        forwarder = Forwarder(spool, config)
        async with running(forwarder):
            await first.wait_lines(n // 5, timeout=10)
            await first.stop(grace=5)
            assert first.statistics().lines < n
            second = SyslogSink(ssl_context=server_tls, port=port)
            await nursery.start(second.run)
            assert await forwarder.drain(timeout=20)
        stats = forwarder.statistics()
        await closed(second)
        nursery.cancel_scope.cancel()
    received = first.lines + second.lines
    counts = assert_exactly_once_or_more(received, n)
    duplicates = len(received) - n
    assert duplicates <= stats.duplicates_resent <= window_lines(config)
    assert stats.lines_forwarded == n
    assert stats.reconnects >= 1
    assert any("closed the connection" in r.getMessage() for r in caplog.records)
    assert max(counts.values()) <= 2


def _unread_after_reset(committed: int, read: int, counts: Counter[int], n: int) -> None:
    """The contract's exact accounting after the receiver reset the connection.

    Lines the receiver's TCP had acknowledged (so the cursor moved past them) but its
    application had not read are discarded by the receiver's kernel with the RST: the
    forwarder cannot see them. Everything after the cursor is resent.
    """
    lost = [seq for seq in range(n) if counts[seq] == 0]
    if lost:
        # A contiguous run ending exactly at the cursor: nothing at or after the cursor is
        # lost. It starts at or after what the receiver had counted (its task may hold bytes
        # it read from the kernel before the reset and counts them after).
        assert lost == list(range(lost[0], committed))
        assert lost[0] >= read
    assert set(counts) == set(range(n)) - set(lost)


async def test_receiver_resets_connections_mid_stream(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    n = 100_000
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, n)
    sink = SyslogSink(ssl_context=server_tls)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        config = make_config([port], client_tls)
        forwarder = Forwarder(spool, config)
        async with running(forwarder):
            await sink.wait_lines(n // 4, timeout=10)
            # No checkpoint between these three lines: the numbers are those of the RST.
            committed = forwarder.statistics().lines_forwarded
            read = sink.statistics().lines
            sink.reset_connections()
            assert await forwarder.drain(timeout=20)
        stats = forwarder.statistics()
        await closed(sink)
        nursery.cancel_scope.cancel()
    counts = Counter(seq_of(line) for line in sink.lines)
    _unread_after_reset(committed, read, counts, n)
    assert stats.reconnects >= 1
    assert sink.statistics().connections_aborted == 1
    duplicates = len(sink.lines) - len(counts)
    assert duplicates <= stats.duplicates_resent <= window_lines(config)


async def test_reset_while_idle_then_more_lines(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    """A platform that drops an idle connection (load balancer timeout): the next lines find
    the connection dead, and are all resent on a new one."""
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 10_000)
    sink = SyslogSink(ssl_context=server_tls)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        forwarder = Forwarder(spool, make_config([port], client_tls))
        async with running(forwarder):
            assert await forwarder.drain(timeout=10)
            await sink.wait_lines(10_000, timeout=10)
            sink.reset_connections()
            fill(spool, 10_000, 30_000)
            assert await forwarder.drain(timeout=10)
            await sink.wait_lines(30_000, timeout=10)
        stats = forwarder.statistics()
        nursery.cancel_scope.cancel()
    assert sink.lines == numbered(0, 30_000)
    assert stats.reconnects == 1
    assert stats.lines_forwarded == 30_000


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_slow_endpoint_memory_bounded_spool_grows_then_drains(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    n = 1_000_000
    size = 100
    spool = open_spool(tmp_path / "spool")
    sink = SyslogSink(ssl_context=server_tls, keep_lines=0)
    sink.read_size = 16384
    peak_pending = 0
    peak_rss = 0
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        forwarder = Forwarder(spool, make_config([port], client_tls))
        async with running(forwarder):
            fill(spool, 0, 10_000, size)
            await sink.wait_lines(10_000, timeout=10)
            baseline = _rss_bytes()

            async def sample() -> None:
                nonlocal peak_pending, peak_rss
                while True:
                    peak_pending = max(peak_pending, spool.statistics().pending_lines)
                    peak_rss = max(peak_rss, _rss_bytes())
                    await trio.sleep(0.02)

            nursery.start_soon(sample)
            # The producer outpaces the slow endpoint: the spool absorbs the difference.
            sink.read_delay = 0.0005
            for start in range(10_000, n, 10_000):
                spool.append(numbered(start, start + 10_000, size))
                await trio.sleep(0)
            assert spool.statistics().pending_lines > n // 2
            sink.read_delay = 0.0
            assert await forwarder.drain(timeout=60)
            await sink.wait_lines(n, timeout=10)
        stats = forwarder.statistics()
        nursery.cancel_scope.cancel()
    assert peak_pending > n // 2
    assert spool.statistics().pending_lines == 0
    assert sink.statistics().lines == n
    assert stats.lines_forwarded == n
    assert stats.duplicates_resent == 0
    growth = peak_rss - baseline
    assert growth < 50 << 20, f"RSS grew by {growth >> 20} MiB"


def _expired_server(ca: TlsFiles, directory: Path) -> TlsFiles:
    now = datetime.now(UTC)
    return issue_certificate(
        ca,
        directory,
        "expired",
        client=False,
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # OpenSSL words it "unable to get local issuer certificate" or "self-signed
        # certificate in certificate chain", depending on whether the server sends its CA.
        (
            "unknown-ca",
            r"certificate verify failed: (unable to get local issuer certificate|self-signed "
            r"certificate in certificate chain) — check --ca \(",
        ),
        ("expired", r"certificate verify failed: certificate has expired — "),
        (
            "wrong-name",
            r"certificate verify failed: Hostname mismatch.* — the certificate is not issued "
            r"for 'platform.example.com'; check the endpoint host or --server-name",
        ),
        (
            "no-client-cert",
            # With an alert (OpenSSL servers) or without one (the trio sink just closes).
            r"(the server requires a client certificate \(.*\) — set --cert and --key"
            r"|requires a client certificate or rejected ours — check --cert and --key)",
        ),
    ],
)
async def test_tls_misconfiguration_sends_nothing_then_recovers(
    tmp_path: Path,
    tls_ca: TlsFiles,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    case: str,
    expected: str,
) -> None:
    n = 5_000
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, n)
    port = free_port()
    bad_server, bad_client, server_name = server_tls, client_tls, None
    if case == "unknown-ca":
        other = make_test_ca(tmp_path / "other", name="someone else's CA")
        bad_client = client_context(ca=other.ca, cert=tls_client.cert, key=tls_client.key)
    elif case == "expired":
        expired = _expired_server(tls_ca, tmp_path / "expired")
        bad_server = server_context(cert=expired.cert, key=expired.key, client_ca=tls_ca.ca)
    elif case == "wrong-name":
        server_name = "platform.example.com"
    else:
        bad_client = client_context(ca=tls_ca.ca, cert=None, key=None)
    bad_config = replace(
        make_config([port], bad_client),
        endpoints=(Endpoint(host="127.0.0.1", port=port, server_name=server_name),),
    )
    sink = SyslogSink(ssl_context=bad_server, port=port)
    caplog.set_level(logging.WARNING, logger="relay.forward")
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        forwarder = Forwarder(spool, bad_config)
        async with running(forwarder):
            await wait_for(
                lambda: forwarder.statistics().connection_failures >= 3,
                timeout=10,
                what="three failed attempts",
            )
        stats = forwarder.statistics()
        # Nothing was delivered, not one byte of data reached the receiver's application.
        assert sink.statistics().lines == 0
        assert sink.statistics().wire_bytes == 0
        assert stats.lines_forwarded == 0
        assert stats.lines_sent == 0
        assert spool.statistics().pending_lines == n
        messages = [r.getMessage() for r in caplog.records if r.name == "relay.forward"]
        failures = [m for m in messages if m.startswith(f"TLS handshake with 127.0.0.1:{port}")]
        assert failures, messages
        assert re.search(expected, failures[0]), failures[0]
        # One line per attempt, rate-limited: identical causes are not repeated.
        assert len(failures) == 1
        assert stats.last_error == failures[0]
        # Fixed configuration, restarted forwarder: everything is delivered.
        if bad_server is not server_tls:
            await sink.stop(grace=1)
            sink = SyslogSink(ssl_context=server_tls, port=port)
            await nursery.start(sink.run)
        fixed = Forwarder(spool, make_config([port], client_tls))
        async with running(fixed):
            assert await fixed.drain(timeout=10)
        await closed(sink)
        nursery.cancel_scope.cancel()
    assert sink.lines == numbered(0, n)


async def test_failover_to_second_endpoint_and_back(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 10_000)
    primary_port = free_port()
    primary = SyslogSink(ssl_context=server_tls, port=primary_port)
    secondary = SyslogSink(ssl_context=server_tls)
    async with trio.open_nursery() as nursery:
        secondary_port = await nursery.start(secondary.run)
        config = make_config(
            [primary_port, secondary_port],
            client_tls,
            failover_after=2,
            primary_retry_interval=1.0,  # the file's minimum
        )
        forwarder = Forwarder(spool, config)
        async with running(forwarder):
            assert await forwarder.drain(timeout=10)
            assert forwarder.statistics().endpoint == f"127.0.0.1:{secondary_port}"
            await secondary.wait_lines(10_000, timeout=5)
            await nursery.start(primary.run)
            await wait_for(
                lambda: forwarder.statistics().endpoint == f"127.0.0.1:{primary_port}",
                timeout=5,
                what="return to the first endpoint",
            )
            fill(spool, 10_000, 20_000)
            assert await forwarder.drain(timeout=10)
        stats = forwarder.statistics()
        await closed(primary)
        nursery.cancel_scope.cancel()
    assert secondary.lines == numbered(0, 10_000)
    assert primary.lines == numbered(10_000, 20_000)
    assert stats.duplicates_resent == 0
    assert stats.connection_failures == 2
    # The secondary saw a clean close, not a reset or a torn stream.
    assert secondary.statistics().connections_unclean == 0
    assert secondary.statistics().connections_reset == 0


def _inq(sock: trio.socket.SocketType) -> int:
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


async def test_cursor_never_passes_what_the_receiver_tcp_acknowledged(tmp_path: Path) -> None:
    """At-least-once, checked from the receiving side: a plain TCP receiver that reads slowly
    and then stops. At every sample, the spool cursor (in bytes: lines are fixed size) is at
    most what the receiver's TCP has taken: bytes its application read plus bytes still
    queued in its kernel."""
    n = 60_000
    wire = LINE_BYTES + 1
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, n)
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    app_read = 0
    samples = 0
    # catch_up_factor=1: every write is one 64 KiB batch, the unit the bounds below use.
    forwarder = Forwarder(spool, make_config([port], None, batch_bytes=64 << 10, catch_up_factor=1))
    async with trio.open_nursery() as nursery, running(forwarder):
        conn, _ = await listener.accept()
        # Read about a third of the stream slowly, then stop reading altogether.
        while app_read < n * wire // 3:
            app_read += len(await conn.recv(8192))
            committed = forwarder.statistics().lines_forwarded
            assert committed * wire <= app_read + _inq(conn)
            samples += 1
            await trio.sleep(0.0005)
        await trio.sleep(0.3)  # the forwarder fills every buffer and stalls
        committed = forwarder.statistics().lines_forwarded
        taken = app_read + _inq(conn)
        assert committed * wire <= taken
        # ... and it is not merely "what send returned": the sender's kernel holds more.
        stats = forwarder.statistics()
        assert stats.lines_sent * wire > taken
        assert stats.lines_forwarded < stats.lines_sent
        # The cursor does keep up with what the receiver's TCP took (minus one line
        # in the middle of a batch, at most one batch behind).
        assert taken - committed * wire < (64 << 10) + wire
        assert spool.statistics().pending_lines == n - committed
        conn.close()
        listener.close()
        nursery.cancel_scope.cancel()
    assert samples > 100


async def test_clean_close_loses_nothing(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    """200,000 lines, drain, cancel: close_notify and FIN, never RST, so the receiver reads
    every line it had not read yet when the relay closed."""
    n = 200_000
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, n)
    sink = SyslogSink(ssl_context=server_tls, keep_lines=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        forwarder = Forwarder(spool, make_config([port], client_tls))
        async with running(forwarder):
            assert await forwarder.drain(timeout=30)
            # The receiver is behind: acknowledged by its TCP is not read by it.
            behind = n - sink.statistics().lines
        stats = await sink.wait_until(
            lambda s: s.connections_open == 0, timeout=10, what="connection closed"
        )
        nursery.cancel_scope.cancel()
    assert stats.lines == n
    assert stats.connections_reset == 0
    assert stats.connections_unclean == 0
    assert forwarder.statistics().lines_forwarded == n
    assert not forwarder.statistics().connected
    assert behind >= 0


async def test_cancel_mid_stream_then_restart_delivers_the_rest(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    n = 100_000
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, n)
    sink = SyslogSink(ssl_context=server_tls)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        config = make_config([port], client_tls)
        first = Forwarder(spool, config)
        async with running(first):
            await sink.wait_lines(n // 3, timeout=10)
        await closed(sink)
        assert sink.statistics().lines >= first.statistics().lines_forwarded
        assert sink.statistics().connections_reset == 0
        second = Forwarder(spool, config)
        async with running(second):
            assert await second.drain(timeout=20)
        await closed(sink)
        nursery.cancel_scope.cancel()
    counts = assert_exactly_once_or_more(sink.lines, n)
    duplicates = len(sink.lines) - n
    assert duplicates <= first.statistics().duplicates_resent <= window_lines(config)
    assert max(counts.values()) <= 2


async def test_octet_counting_over_ipv6(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 5_000)
    sink = SyslogSink(ssl_context=server_tls, host="::1")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        config = replace(
            make_config([port], client_tls, framing="octet-counting"),
            endpoints=(Endpoint(host="::1", port=port),),
        )
        forwarder = Forwarder(spool, config)
        async with running(forwarder):
            assert await forwarder.drain(timeout=10)
            assert forwarder.statistics().endpoint == f"[::1]:{port}"
        await closed(sink)
        nursery.cancel_scope.cancel()
    assert sink.lines == numbered(0, 5_000)
    assert sink.statistics().wire_bytes == sum(
        len(b"%d " % LINE_BYTES) + LINE_BYTES for _ in range(5_000)
    )


async def test_plain_tcp_warns_and_delivers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 1_000)
    sink = SyslogSink(ssl_context=None)
    caplog.set_level(logging.WARNING, logger="relay.forward")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        forwarder = Forwarder(spool, make_config([port], None))
        async with running(forwarder):
            assert await forwarder.drain(timeout=10)
        await closed(sink)
        nursery.cancel_scope.cancel()
    assert sink.lines == numbered(0, 1_000)
    assert any("plain TCP" in r.getMessage() for r in caplog.records)


async def test_drain_times_out_when_nothing_listens(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 100)
    forwarder = Forwarder(spool, make_config([free_port()], None))
    async with running(forwarder):
        assert not await forwarder.drain(timeout=0.3)
    assert spool.statistics().pending_lines == 100


def test_socket_module_has_the_ioctl_we_need() -> None:
    # The acknowledgement count depends on SIOCOUTQ; fail loudly where it is missing.
    assert getattr(termios, "TIOCOUTQ", None) == 0x5411
    assert socket.TCP_INFO


async def test_a_reset_reconnects_to_the_same_endpoint_and_does_not_fail_over(
    tmp_path: Path, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 10_000)
    sink = SyslogSink(ssl_context=server_tls)
    spare_port = free_port()  # nothing listens: a failover would show as connect failures
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        forwarder = Forwarder(spool, make_config([port, spare_port], client_tls))
        async with running(forwarder):
            assert await forwarder.drain(timeout=10)
            await sink.wait_lines(10_000, timeout=10)
            sink.reset_connections()
            fill(spool, 10_000, 20_000)
            assert await forwarder.drain(timeout=10)
            await sink.wait_lines(20_000, timeout=10)
        stats = forwarder.statistics()
        nursery.cancel_scope.cancel()
    assert sink.lines == numbered(0, 20_000)
    assert stats.reconnects == 1
    assert stats.connection_failures == 1  # the reset itself; no attempt on the spare
