"""The UDP receive loop on a real loopback socket: bursts, junk, and the drain at stop."""

from __future__ import annotations

import socket

import trio

from relay.addresses import HostPort
from relay.receiver import BURST, UdpReceiver, open_udp_socket


def process(data: bytes, source: str, port: int) -> list[bytes]:
    """Stands in for Ingest.process: junk gives no lines, anything else one line."""
    assert source == "127.0.0.1"
    assert port > 0
    return [] if data.startswith(b"junk") else [data]


def send_all(port: int, payloads: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        for payload in payloads:
            out.sendto(payload, ("127.0.0.1", port))


def receiver() -> tuple[UdpReceiver, int, trio.MemoryReceiveChannel[list[bytes]]]:
    sock = open_udp_socket(
        HostPort(host="127.0.0.1", port=0), receive_buffer=4 << 20, reuse_port=False
    )
    send, recv = trio.open_memory_channel[list[bytes]](100)
    return UdpReceiver(sock, process=process, send=send), sock.getsockname()[1], recv


async def test_lines_after_more_than_a_burst_of_junk_are_handed_over() -> None:
    udp, port, recv = receiver()
    junk = [b"junk%d" % i for i in range(2 * BURST + 10)]
    good = [b"good%d" % i for i in range(5)]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(udp.run, stop)
        send_all(port, junk + good)
        got: list[bytes] = []
        with trio.fail_after(5):
            while len(got) < len(good):
                got += await recv.receive()
        stop.set()
    assert got == good


async def test_what_the_kernel_holds_at_stop_is_handed_over() -> None:
    udp, port, recv = receiver()
    junk = [b"junk%d" % i for i in range(BURST + 3)]
    good = [b"good%d" % i for i in range(BURST + 7)]
    send_all(port, junk + good)
    stop = trio.Event()
    stop.set()  # stopped before it ever ran: only the drain at stop reads
    await udp.run(stop)
    got: list[bytes] = []
    async with recv:
        async for lines in recv:
            got += lines
    assert got == good
