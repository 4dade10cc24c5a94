"""The real link on loopback: the kernel options that notice a dead peer."""

from __future__ import annotations

import socket

import trio

from relay.forward import Endpoint
from relay.forward.link import TlsLink, liveness_options


def test_liveness_options_end_an_idle_or_busy_dead_link_within_the_stall_timeout() -> None:
    options = {(level, name): value for level, name, value in liveness_options(20.0)}
    assert options[(socket.SOL_SOCKET, socket.SO_KEEPALIVE)] == 1
    assert options[(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)] == 20_000
    idle = options[(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)]
    interval = options[(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)]
    # A probe goes out, and is found unanswered, before the user timeout ends the link.
    assert idle + interval < 20
    # Never 0 (the kernel refuses it), even for the smallest stall timeout allowed.
    assert all(value >= 1 for _, _, value in liveness_options(2.0))


async def test_a_link_sets_keepalive_and_the_user_timeout_on_its_socket() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    link = await TlsLink.open(
        Endpoint(host="127.0.0.1", port=port),
        0,
        None,
        connect_timeout=5,
        confirm_timeout=1,
        stall_timeout=12,
    )
    try:
        sock = link._stream.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 12_000
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 6
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
    finally:
        link.abort()
        listener.close()


async def test_a_slow_reader_shows_progress_during_one_large_write() -> None:
    """Acknowledged = written - what the kernel still holds. A write counted only when it
    ends would show no progress while a slow but healthy peer reads it, and the forwarder
    would take the link for stalled (found by review: a 4 MB write to a 320 KB/s reader)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]

    async def slow_reader(stream: trio.SocketStream) -> None:
        for _ in range(2000):  # bounded: at most ~32 MB at this pace
            data = await stream.receive_some(16384)
            if not data:
                return
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, slow_reader, [listener])
        link = await TlsLink.open(
            Endpoint(host="127.0.0.1", port=port),
            0,
            None,
            connect_timeout=5,
            confirm_timeout=1,
            stall_timeout=20,
        )
        seen: list[int] = []

        async def sample() -> None:
            for _ in range(200):
                await trio.sleep(0.02)
                seen.append(link.acknowledged())

        try:
            async with trio.open_nursery() as writes:
                writes.start_soon(sample)
                with trio.fail_after(30):
                    await link.send(b"y" * (4 << 20), ())  # one write, much larger than buffers
                writes.cancel_scope.cancel()
        finally:
            link.abort()
            nursery.cancel_scope.cancel()
    # The ledger counts progress by the highest value seen (a piece half in the kernel can
    # make one reading lag by up to a piece): that maximum must keep rising.
    highs = {max(seen[: i + 1]) for i in range(len(seen)) if seen[i] > 0}
    assert len(highs) >= 5, f"acknowledged barely moved during the write: {seen[:20]}"
