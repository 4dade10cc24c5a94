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
