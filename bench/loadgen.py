"""A NetFlow v5 load generator for the end-to-end benchmark: a separate process that sends
pre-built full datagrams (30 records) with consecutive flow sequences at a fixed rate.

    python -m bench.loadgen --to 127.0.0.1:PORT --rate RECORDS_PER_S --seconds S
                            [--times FILE] [--first-sequence N] [--sockets N]
    python -m bench.loadgen --max-rate [--seconds S]

The datagrams are built once by ``relay.testing.synth`` (a pool of 1,000 distinct ones); only the
header's ``flow_sequence`` is patched before each send, so the sender's cost per datagram is
one ``pack_into`` and one ``send``. Pacing: every ~0.5 ms the generator sends as many
datagrams as are due by then, so the stream is smooth at the millisecond scale (the relay's
socket sees bursts of a few datagrams, not of a second's worth).

``--times FILE`` writes the send time (``time.monotonic()``, one system-wide clock on Linux)
of every datagram as native doubles, datagram i carrying flow_sequence ``first + 30 i``: the
benchmark joins it with the sequences seen at the endpoint to measure latency.

``--sockets N`` sends from N sockets (N source ports) in turn, as N exporters would: the
kernel spreads SO_REUSEPORT receivers (``relay run --workers N``) by source address and port,
so one socket would feed one worker only.

Prints one JSON object on stdout: packets and records sent, seconds, the rate reached, and
the largest lag behind schedule (a sender that fell behind did not test the rate asked for).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import random
import socket
import struct
import time
from pathlib import Path

from relay.testing.synth import SyntheticExporter

RECORDS = 30  # a full v5 datagram
POOL = 1000
SEQUENCE_OFFSET = 16  # flow_sequence in the 24-byte v5 header
TICK = 0.0005
_SEQUENCE = struct.Struct(">I")


def build_pool(count: int = POOL, *, seed: int = 7) -> list[bytearray]:
    """``count`` distinct full v5 datagrams, exported "now" by a router up for a day."""
    now = time.time()
    exporter = SyntheticExporter(rng=random.Random(seed), boot_time=now - 86400)
    return [bytearray(exporter.datagram(5, RECORDS, now)) for _ in range(count)]


def send_paced(
    socks: list[socket.socket],
    pool: list[bytearray],
    *,
    packets_per_second: float,
    seconds: float,
    first_sequence: int,
    times: array.array[float] | None,
) -> dict[str, float]:
    """Send for ``seconds`` at the rate; return what was sent and how late the sender got."""
    total = int(packets_per_second * seconds)
    pack_into, monotonic, sleep = _SEQUENCE.pack_into, time.monotonic, time.sleep
    sends = [sock.send for sock in socks]
    ways = len(sends)
    size = len(pool)
    sequence = first_sequence
    sent = 0
    max_lag = 0.0
    start = monotonic()
    while sent < total:
        now = monotonic()
        due = min(total, int((now - start) * packets_per_second) + 1)
        if due - sent > 1:
            # How far behind schedule the oldest datagram of this burst is.
            max_lag = max(max_lag, now - (start + sent / packets_per_second))
        while sent < due:
            buf = pool[sent % size]
            pack_into(buf, SEQUENCE_OFFSET, sequence & 0xFFFFFFFF)
            try:
                sends[sent % ways](buf)
            except BlockingIOError:
                continue  # the local send buffer is full: retry the same datagram
            if times is not None:
                times.append(now)
            sequence += RECORDS
            sent += 1
        ahead = start + sent / packets_per_second - monotonic()
        if ahead > 0:
            sleep(min(ahead, TICK))
    elapsed = monotonic() - start
    return {
        "packets": sent,
        "records": sent * RECORDS,
        "seconds": elapsed,
        "records_per_second": sent * RECORDS / elapsed,
        "max_lag": max_lag,
        "first_sequence": first_sequence,
    }


def max_rate(pool: list[bytearray], seconds: float) -> dict[str, float]:
    """Flat out into a local socket that nobody reads (the kernel drops the surplus): the
    fastest this sender can offer datagrams, whatever the receiver."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sink.bind(("127.0.0.1", 0))
        sock.connect(sink.getsockname())
        pack_into, send, monotonic = _SEQUENCE.pack_into, sock.send, time.monotonic
        size = len(pool)
        sent = 0
        start = monotonic()
        deadline = start + seconds
        while monotonic() < deadline:
            for _ in range(1000):
                buf = pool[sent % size]
                pack_into(buf, SEQUENCE_OFFSET, (sent * RECORDS) & 0xFFFFFFFF)
                send(buf)
                sent += 1
        elapsed = monotonic() - start
    return {
        "packets": sent,
        "records": sent * RECORDS,
        "seconds": elapsed,
        "packets_per_second": sent / elapsed,
        "records_per_second": sent * RECORDS / elapsed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--to", metavar="HOST:PORT")
    parser.add_argument("--rate", type=float, help="records per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--first-sequence", type=int, default=0)
    parser.add_argument("--times", type=Path, help="write each datagram's send time here")
    parser.add_argument("--max-rate", action="store_true", help="measure the sender's ceiling")
    parser.add_argument("--sockets", type=int, default=1, help="source ports to send from")
    args = parser.parse_args(argv)
    pool = build_pool()
    if args.max_rate:
        print(json.dumps(max_rate(pool, args.seconds)), flush=True)
        return
    if args.to is None or args.rate is None:
        parser.error("--to and --rate are needed (or --max-rate)")
    host, _, port = args.to.rpartition(":")
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(max(1, args.sockets)):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            # A large send buffer so that bursts after a late wake-up are not refused locally.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.connect((host, int(port)))
            socks.append(sock)
        times: array.array[float] | None = array.array("d") if args.times else None
        result = send_paced(
            socks,
            pool,
            packets_per_second=args.rate / RECORDS,
            seconds=args.seconds,
            first_sequence=args.first_sequence,
            times=times,
        )
    if times is not None:
        with args.times.open("wb") as out:
            times.tofile(out)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
