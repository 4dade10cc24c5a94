"""The syslog sink: RFC 6587 framing, and a real TLS receiver that can misbehave on demand."""

from __future__ import annotations

import itertools
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Sequence

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from relay.certs import TlsFiles, client_context, server_context
from relay.framing import FrameDecoder, FrameError
from relay.testing.sink import SyslogSink

LINE = b'<14>Nov 22 12:34:56 10.0.0.1 netstat.netflow.lt: {"version":5,"bytes":1500}'


def octet(message: bytes) -> bytes:
    return b"%d %s" % (len(message), message)


# ---- the sans-IO decoder ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "messages", "pending"),
    [
        (b"", [], 0),
        (b"a\n", [b"a"], 0),
        (b"a\nb\nc", [b"a", b"b"], 1),
        (b"a\n\n\nb\n", [b"a", b"b"], 0),  # blank lines are no messages
        (b"5 hello", [b"hello"], 0),
        (b"5 hel", [], 5),
        (b"10 two\nlines!", [b"two\nlines!"], 0),  # octet-counted messages may hold LF
        (b"3 abc4 defg", [b"abc", b"defg"], 0),
        (b"<1>x\n3 abc<2>y\n2 zz", [b"<1>x", b"abc", b"<2>y", b"zz"], 0),
        (b"<1>x\n12", [b"<1>x"], 2),  # an octet count still arriving
        (b"0 <1>x\n", [b"<1>x"], 0),  # an empty octet-counted frame
        (b"3 abc\n<1>x\n", [b"abc", b"<1>x"], 0),  # LF after an octet frame: tolerated
    ],
)
def test_decoder_table(stream: bytes, messages: list[bytes], pending: int) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(stream) == messages
    assert decoder.pending == pending


@pytest.mark.parametrize(
    ("stream", "good", "reason"),
    [
        (b"<1>ok\n12a x", [b"<1>ok"], "is not a number"),
        (b"123456789012345 x", [], "octet count"),
        (b"2000000 x", [], "exceeds"),
        (b"<1>" + b"x" * 2000, [], "newline-framed message exceeds"),
    ],
)
def test_decoder_refuses_bad_framing(stream: bytes, good: list[bytes], reason: str) -> None:
    decoder = FrameDecoder(max_frame=1000 if stream.startswith(b"<1>x") else 1 << 20)
    with pytest.raises(FrameError, match=reason) as caught:
        decoder.feed(stream)
    assert caught.value.lines == good


def test_decoder_large_batch_mixed() -> None:
    messages = [LINE + b"%d" % i for i in range(5000)]
    stream = b"".join(octet(m) if i % 7 == 0 else m + b"\n" for i, m in enumerate(messages))
    decoder = FrameDecoder()
    out: list[bytes] = []
    for start in range(0, len(stream), 65536):
        out += decoder.feed(stream[start : start + 65536])
    assert out == messages
    assert decoder.pending == 0


# Messages as the relay could send them: no LF in newline framing, and a newline-framed
# message cannot start with a digit (that would make it an octet count).
message_st = st.binary(min_size=1, max_size=300).filter(lambda m: b"\n" not in m and m[0] > 0x39)


@given(
    messages=st.lists(st.tuples(message_st, st.booleans()), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_decoder_any_split(messages: list[tuple[bytes, bool]], cuts: list[int]) -> None:
    stream = b"".join(octet(m) if counted else m + b"\n" for m, counted in messages)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    decoder = FrameDecoder()
    out: list[bytes] = []
    for start, stop in itertools.pairwise(points):
        out += decoder.feed(stream[start:stop])
    assert out == [m for m, _ in messages]
    assert decoder.pending == 0


def test_decoder_byte_by_byte() -> None:
    stream = LINE + b"\n" + octet(LINE + b"\nsecond") + LINE + b"\n"
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert out == [LINE, LINE + b"\nsecond", LINE]


# ---- the receiver, over real loopback TLS -----------------------------------------------


@pytest.fixture(scope="session")
def server_ssl(tls_server: TlsFiles, tls_ca: TlsFiles) -> ssl.SSLContext:
    return server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)


@pytest.fixture(scope="session")
def client_ssl(tls_client: TlsFiles, tls_ca: TlsFiles) -> ssl.SSLContext:
    return client_context(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key)


async def connect(
    port: int, context: ssl.SSLContext | None, host: str = "127.0.0.1"
) -> trio.abc.Stream:
    tcp = await trio.open_tcp_stream(host, port)
    if context is None:
        return tcp
    tls = trio.SSLStream(tcp, context, server_hostname="localhost")
    await tls.do_handshake()
    return tls


async def started(nursery: trio.Nursery, sink: SyslogSink) -> int:
    port: int = await nursery.start(sink.run)
    return port


@pytest.fixture
async def tls_sink(server_ssl: ssl.SSLContext) -> AsyncIterator[tuple[SyslogSink, int]]:
    sink = SyslogSink(ssl_context=server_ssl)
    async with trio.open_nursery() as nursery:
        port = await started(nursery, sink)
        yield sink, port
        nursery.cancel_scope.cancel()


async def send_lines(stream: trio.abc.Stream, lines: Sequence[bytes]) -> None:
    await stream.send_all(b"".join(line + b"\n" for line in lines))


async def test_both_framings_byte_by_byte(
    tls_sink: tuple[SyslogSink, int], client_ssl: ssl.SSLContext
) -> None:
    sink, port = tls_sink
    client = await connect(port, client_ssl)
    stream = LINE + b"\n" + octet(LINE + b"\ttab") + b"3 abc" + LINE + b"!\n"
    for i in range(len(stream)):  # one TLS record per byte
        await client.send_all(stream[i : i + 1])
    await sink.wait_lines(4, timeout=10)
    await client.aclose()
    assert sink.lines == [LINE, LINE + b"\ttab", b"abc", LINE + b"!"]
    stats = await sink.wait_until(lambda s: s.connections_open == 0, timeout=5)
    assert stats.lines == 4
    assert stats.bytes == sum(map(len, sink.lines))
    assert stats.wire_bytes == len(stream)
    assert stats.connections_accepted == 1
    assert (stats.connections_reset, stats.connections_unclean, stats.framing_errors) == (0, 0, 0)


async def test_many_connections_at_once(
    tls_sink: tuple[SyslogSink, int], client_ssl: ssl.SSLContext
) -> None:
    sink, port = tls_sink
    clients, per_client = 8, 500

    async def one(n: int) -> None:
        stream = await connect(port, client_ssl)
        lines = [b"%s c%d n%d" % (LINE, n, i) for i in range(per_client)]
        for start in range(0, per_client, 100):  # interleave with the other clients
            await send_lines(stream, lines[start : start + 100])
            await trio.sleep(0)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(one, n)
    await sink.wait_lines(clients * per_client, timeout=20)
    assert sorted(sink.lines) == sorted(
        b"%s c%d n%d" % (LINE, n, i) for n in range(clients) for i in range(per_client)
    )
    stats = await sink.wait_until(lambda s: s.connections_open == 0, timeout=5)
    assert stats.connections_accepted == clients
    assert stats.lines == clients * per_client


async def test_reset_connections_resets_the_client(
    tls_sink: tuple[SyslogSink, int], client_ssl: ssl.SSLContext
) -> None:
    sink, port = tls_sink
    client = await connect(port, client_ssl)
    await send_lines(client, [LINE])
    await sink.wait_lines(1, timeout=5)
    sink.reset_connections()
    with pytest.raises(trio.BrokenResourceError) as caught:
        with trio.fail_after(5):
            await client.receive_some(100)
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    await trio.aclose_forcefully(client)
    stats = await sink.wait_until(lambda s: s.connections_open == 0, timeout=5)
    assert stats.connections_aborted == 1
    assert stats.lines == 1
    # The sink itself keeps serving.
    again = await connect(port, client_ssl)
    await send_lines(again, [LINE])
    await sink.wait_lines(2, timeout=5)
    await again.aclose()


async def test_peer_reset_is_counted(
    tls_sink: tuple[SyslogSink, int], client_ssl: ssl.SSLContext
) -> None:
    sink, port = tls_sink
    client = await connect(port, client_ssl)
    assert isinstance(client, trio.SSLStream)
    await send_lines(client, [LINE])
    await sink.wait_lines(1, timeout=5)
    raw = client.transport_stream
    assert isinstance(raw, trio.SocketStream)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(client)
    stats = await sink.wait_until(lambda s: s.connections_open == 0, timeout=5)
    assert stats.connections_reset == 1
    assert stats.connections_aborted == 0


async def test_read_delay_slows_the_reader(
    tls_sink: tuple[SyslogSink, int], client_ssl: ssl.SSLContext
) -> None:
    sink, port = tls_sink
    lines = [LINE] * 500  # ~39 KB
    size = sum(len(line) + 1 for line in lines)

    async def timed() -> float:
        before = sink.statistics().lines
        client = await connect(port, client_ssl)
        start = trio.current_time()
        await send_lines(client, lines)
        await sink.wait_lines(before + len(lines), timeout=20)
        elapsed = trio.current_time() - start
        await client.aclose()
        return elapsed

    sink.read_size = 4096
    fast = await timed()
    sink.read_delay = 0.03
    slow = await timed()
    reads = size // 4096  # at least this many reads, each followed by a delay
    assert slow >= reads * 0.03 * 0.9
    assert fast < slow / 3


async def test_client_without_certificate_is_refused(
    tls_sink: tuple[SyslogSink, int], tls_ca: TlsFiles
) -> None:
    sink, port = tls_sink
    anonymous = client_context(ca=tls_ca.ca, cert=None, key=None)
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    client = trio.SSLStream(tcp, anonymous, server_hostname="localhost")
    await send_lines(client, [LINE])  # TLS 1.3: the client's handshake ends before the alert
    with pytest.raises(trio.BrokenResourceError), trio.fail_after(5):
        await client.receive_some(100)
    await trio.aclose_forcefully(client)
    stats = await sink.wait_until(lambda s: s.handshake_failures == 1, timeout=5)
    assert stats.lines == 0
    assert stats.last_handshake_error is not None
    assert "CERTIFICATE" in stats.last_handshake_error.upper()


async def test_plain_tcp_and_ipv6() -> None:
    sink = SyslogSink(ssl_context=None, host="::1", keep_lines=2)
    seen: list[bytes] = []
    sink_with_callback = SyslogSink(ssl_context=None, on_line=seen.append)
    async with trio.open_nursery() as nursery:
        port = await started(nursery, sink)
        other = await started(nursery, sink_with_callback)
        client = await connect(port, None, host="::1")
        await send_lines(client, [b"<1>a", b"<1>b", b"<1>c"])
        await sink.wait_lines(3, timeout=5)
        await client.aclose()
        client = await connect(other, None)
        await send_lines(client, [b"<1>x"])
        await sink_with_callback.wait_lines(1, timeout=5)
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert sink.lines == [b"<1>a", b"<1>b"]  # keep_lines bounds the list ...
    assert sink.statistics().lines == 3  # ... not the count
    assert seen == [b"<1>x"]


async def test_framing_error_closes_the_connection() -> None:
    sink = SyslogSink(ssl_context=None)
    async with trio.open_nursery() as nursery:
        port = await started(nursery, sink)
        client = await connect(port, None)
        await client.send_all(b"<1>good\n99x bad\n")
        with trio.fail_after(5):
            assert await client.receive_some(10) == b""
        await client.aclose()
        nursery.cancel_scope.cancel()
    stats = sink.statistics()
    assert (stats.lines, stats.framing_errors) == (1, 1)
    assert sink.lines == [b"<1>good"]


async def test_wait_lines_says_how_many_arrived() -> None:
    sink = SyslogSink(ssl_context=None)
    async with trio.open_nursery() as nursery:
        await started(nursery, sink)
        with pytest.raises(TimeoutError, match=r"only 0 of 5 lines arrived within 0\.1 s"):
            await sink.wait_lines(5, timeout=0.1)
        nursery.cancel_scope.cancel()


async def test_cancel_then_restart_on_the_same_port(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    first = SyslogSink(ssl_context=server_ssl)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, first)
            client = await connect(port, client_ssl)
            await send_lines(client, [LINE + b"1", LINE + b"2"])
            await first.wait_lines(2, timeout=5)
            scope.cancel()  # abrupt: a crashed platform
    # The client notices the connection is gone.
    with pytest.raises(trio.BrokenResourceError), trio.fail_after(5):
        await client.receive_some(100)
    await trio.aclose_forcefully(client)
    second = SyslogSink(ssl_context=server_ssl, port=port)
    async with trio.open_nursery() as nursery:
        assert await started(nursery, second) == port
        client = await connect(port, client_ssl)
        await send_lines(client, [LINE + b"3"])
        await second.wait_lines(1, timeout=5)
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert first.lines == [LINE + b"1", LINE + b"2"]
    assert second.lines == [LINE + b"3"]
    with pytest.raises(RuntimeError, match="runs once"):
        await first.run()


async def test_graceful_stop_loses_nothing_in_flight(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """stop() half-closes; a client that closes on end-of-stream loses nothing it wrote."""
    sink = SyslogSink(ssl_context=server_ssl, keep_lines=0)
    sink.read_delay = 0.002  # so that plenty sits unread in the kernel when stop() begins
    sent = 0
    batch = b"".join(LINE + b"\n" for _ in range(100))
    writing = trio.CancelScope()
    written = trio.Event()

    async def writer(client: trio.abc.Stream) -> None:
        nonlocal sent
        with writing:
            while True:
                await client.send_all(batch)
                sent += 100
        written.set()

    async def closer(client: trio.abc.Stream) -> None:
        # What a well-behaved forwarder does at the peer's end of stream: stop, close.
        with pytest.raises(trio.BrokenResourceError):  # FIN without close_notify
            await client.receive_some(100)
        writing.cancel()
        await written.wait()
        await trio.aclose_forcefully(client)

    async with trio.open_nursery() as nursery:
        port = await started(nursery, sink)
        client = await connect(port, client_ssl)
        with trio.fail_after(20):
            async with trio.open_nursery() as peer:
                peer.start_soon(writer, client)
                peer.start_soon(closer, client)
                await sink.wait_lines(1000, timeout=10)
                await sink.stop(grace=10)
    stats = sink.statistics()
    # send_all returned for `sent` lines; the cancelled last send_all may have put part of one
    # more batch on the wire, which the sink counts too.
    assert sent <= stats.lines <= sent + 100
    assert stats.lines > 1000
    assert stats.connections_aborted == 0
    assert stats.connections_reset == 0


async def test_graceful_stop_aborts_a_peer_that_keeps_writing(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    sink = SyslogSink(ssl_context=server_ssl)
    async with trio.open_nursery() as nursery:
        port = await started(nursery, sink)
        client = await connect(port, client_ssl)
        await send_lines(client, [LINE])
        await sink.wait_lines(1, timeout=5)
        with trio.fail_after(5):
            await sink.stop(grace=0.2)
        await trio.aclose_forcefully(client)
    stats = sink.statistics()
    assert stats.connections_aborted == 1
    assert stats.connections_open == 0
