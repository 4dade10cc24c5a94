"""A NetFlow load generator for the end-to-end benchmark: a separate process that sends
pre-built full datagrams (30 records) with consecutive sequence numbers at a fixed rate.

    python -m bench.loadgen --to 127.0.0.1:PORT --rate RECORDS_PER_S --seconds S
                            [--version 5|9|10] [--template-every N]
                            [--times FILE] [--first-sequence N] [--sockets N | --sources N]
    python -m bench.loadgen --max-rate [--seconds S] [--version 5|9|10]

The datagrams are built once by ``relay.testing.synth`` (a pool of distinct ones); only the
header's sequence number is patched before each send, so the sender's cost per datagram is
one ``pack_into`` and one ``send``. Pacing: every ~0.5 ms the generator sends as many
datagrams as are due by then, so the stream is smooth at the millisecond scale (the relay's
socket sees bursts of a few datagrams, not of a second's worth).

``--version 9`` and ``--version 10`` (IPFIX) send data datagrams of 30 flows (IPv4 and IPv6
templates mixed, as synth builds them) and, as exporters do, the datagram of templates,
options templates and options data first and again every ``--template-every`` data
datagrams. The sequence follows each protocol: v5 +30 per datagram (header offset 16), v9
+1 per datagram, the template datagram included (offset 12), IPFIX + the data records of
the message, its options records included (offset 8). The rate counts flow records only.

``--times FILE`` writes, for every flow datagram, its key and its send time
(``time.monotonic()``, one system-wide clock on Linux) as pairs of native doubles: the
benchmark joins it with the lines seen at the endpoint to measure latency, and counts each
datagram's 30 lines to find what is missing. The key is ``source << 32 | sequence``, where
source is the exporter address's last octet minus 1 (0 for 127.0.0.1).

``--sockets N`` sends from N sockets (N source ports of 127.0.0.1) in turn, one sequence
stream. ``--sources N`` sends from N exporters, 127.0.0.1 to 127.0.0.N (loopback owns
127/8), in turn, each with its own sequence stream and its own template datagrams: with
``relay run --workers N`` the relay steers by source address, so this is what spreads the
load over the workers.

Prints one JSON object on stdout: packets and records sent, template datagrams, seconds,
the rate reached, and the largest lag behind schedule (a sender that fell behind did not
test the rate asked for).
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
from dataclasses import dataclass
from pathlib import Path

from relay.testing.synth import SyntheticExporter

RECORDS = 30  # a full v5 datagram; the v9/IPFIX datagrams carry as many
POOL = 1000
TEMPLATED_POOL = 200  # v9/IPFIX datagrams take ~3 ms each to build
TEMPLATE_EVERY = 20  # data datagrams between two template datagrams (synth's default)
SEQUENCE_OFFSETS = {5: 16, 9: 12, 10: 8}  # the sequence number in each header
VERSIONS = tuple(SEQUENCE_OFFSETS)
TICK = 0.0005
_SEQUENCE = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Stream:
    """What one exporter sends: flow datagrams and (v9/IPFIX) the template datagram, with
    how far each moves the header's sequence number."""

    version: int
    pool: list[bytearray]
    step: int  # sequence advance per flow datagram
    template: bytearray | None = None
    template_step: int = 0  # sequence advance of the template datagram

    @property
    def offset(self) -> int:
        return SEQUENCE_OFFSETS[self.version]


def build_pool(count: int = POOL, *, seed: int = 7) -> list[bytearray]:
    """``count`` distinct full v5 datagrams, exported "now" by a router up for a day."""
    return build_stream(5, count, seed=seed).pool


def build_stream(version: int = 5, count: int | None = None, *, seed: int = 7) -> Stream:
    """``count`` distinct flow datagrams of ``version``, exported "now" by a router up for a
    day, and for v9/IPFIX the template datagram they need."""
    now = time.time()
    exporter = SyntheticExporter(rng=random.Random(seed), boot_time=now - 86400)
    if version == 5:
        pool = [bytearray(exporter.datagram(5, RECORDS, now)) for _ in range(count or POOL)]
        return Stream(version=5, pool=pool, step=RECORDS)
    if version not in VERSIONS:
        raise ValueError(f"no load for NetFlow version {version}")
    exporter.templates_every = 1 << 62  # one template datagram: the loop repeats it
    first = exporter.export(version, RECORDS, now)
    template, data = first.datagrams
    pool = [bytearray(data)]
    pool += [
        bytearray(exporter.export(version, RECORDS, now).datagrams[-1])
        for _ in range((count or TEMPLATED_POOL) - 1)
    ]
    if version == 9:
        return Stream(version=9, pool=pool, step=1, template=bytearray(template), template_step=1)
    options = len(first.sent) - first.flows  # IPFIX counts options records too
    return Stream(
        version=10, pool=pool, step=RECORDS, template=bytearray(template), template_step=options
    )


def send_paced(
    socks: list[socket.socket],
    stream: Stream,
    *,
    packets_per_second: float,
    seconds: float,
    first_sequence: int,
    times: array.array[float] | None,
    template_every: int = TEMPLATE_EVERY,
    sources: bool = False,
) -> dict[str, float]:
    """Send for ``seconds`` at the rate; return what was sent and how late the sender got.
    ``sources``: each socket is an exporter of its own (sequence stream, templates), its
    times keyed by ``index << 32``; otherwise the sockets share one stream."""
    total = int(packets_per_second * seconds)
    pack_into, monotonic, sleep = _SEQUENCE.pack_into, time.monotonic, time.sleep
    sends = [sock.send for sock in socks]
    ways = len(sends)
    pool, offset, step = stream.pool, stream.offset, stream.step
    template, template_step = stream.template, stream.template_step
    size = len(pool)
    streams = ways if sources else 1
    stream_of = [w if sources else 0 for w in range(ways)]
    key_base = [s << 32 for s in range(streams)]
    sequences = [first_sequence] * streams
    flows = [0] * streams  # flow datagrams sent per stream
    # Per stream, the flow datagram before which its template datagram goes next.
    next_template = [0 if template is not None else -1] * streams
    templates = 0
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
            way = sent % ways
            s = stream_of[way]
            sequence = sequences[s]
            if flows[s] == next_template[s] and template is not None:
                pack_into(template, offset, sequence & 0xFFFFFFFF)
                try:
                    sends[way](template)
                except BlockingIOError:
                    continue
                sequence = sequences[s] = sequence + template_step
                templates += 1
                next_template[s] += template_every
            buf = pool[sent % size]
            pack_into(buf, offset, sequence & 0xFFFFFFFF)
            try:
                sends[way](buf)
            except BlockingIOError:
                continue  # the local send buffer is full: retry the same datagram
            if times is not None:
                times.append(key_base[s] | (sequence & 0xFFFFFFFF))
                times.append(now)
            sequences[s] = sequence + step
            flows[s] += 1
            sent += 1
        ahead = start + sent / packets_per_second - monotonic()
        if ahead > 0:
            sleep(min(ahead, TICK))
    elapsed = monotonic() - start
    return {
        "version": stream.version,
        "packets": sent,
        "template_packets": templates,
        "records": sent * RECORDS,
        "seconds": elapsed,
        "records_per_second": sent * RECORDS / elapsed,
        "max_lag": max_lag,
        "first_sequence": first_sequence,
        "streams": streams,
    }


def max_rate(stream: Stream, seconds: float) -> dict[str, float]:
    """Flat out into a local socket that nobody reads (the kernel drops the surplus): the
    fastest this sender can offer datagrams, whatever the receiver."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sink.bind(("127.0.0.1", 0))
        sock.connect(sink.getsockname())
        pack_into, send, monotonic = _SEQUENCE.pack_into, sock.send, time.monotonic
        pool, offset, step = stream.pool, stream.offset, stream.step
        size = len(pool)
        sent = 0
        start = monotonic()
        deadline = start + seconds
        while monotonic() < deadline:
            for _ in range(1000):
                buf = pool[sent % size]
                pack_into(buf, offset, (sent * step) & 0xFFFFFFFF)
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
    parser.add_argument("--version", type=int, default=5, choices=VERSIONS)
    parser.add_argument(
        "--template-every", type=int, default=TEMPLATE_EVERY,
        help="v9/IPFIX: flow datagrams between two template datagrams",
    )  # fmt: skip
    parser.add_argument("--first-sequence", type=int, default=0)
    parser.add_argument("--times", type=Path, help="write each datagram's send time here")
    parser.add_argument("--max-rate", action="store_true", help="measure the sender's ceiling")
    parser.add_argument("--sockets", type=int, default=1, help="source ports to send from")
    parser.add_argument(
        "--sources", type=int, default=0,
        help="exporters 127.0.0.1..N, each with its own sequence stream and templates",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 0 <= args.sources <= 254 or (args.sources and args.sockets != 1):
        parser.error("--sources takes 1 to 254 addresses, and not with --sockets")
    if args.template_every < 1:
        parser.error("--template-every must be at least 1")
    stream = build_stream(args.version)
    if args.max_rate:
        print(json.dumps(max_rate(stream, args.seconds)), flush=True)
        return
    if args.to is None or args.rate is None:
        parser.error("--to and --rate are needed (or --max-rate)")
    host, _, port = args.to.rpartition(":")
    with contextlib.ExitStack() as stack:
        socks = []
        for i in range(args.sources or max(1, args.sockets)):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            # A large send buffer so that bursts after a late wake-up are not refused locally.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            if args.sources:
                sock.bind((f"127.0.0.{i + 1}", 0))
            sock.connect((host, int(port)))
            socks.append(sock)
        times: array.array[float] | None = array.array("d") if args.times else None
        result = send_paced(
            socks,
            stream,
            packets_per_second=args.rate / RECORDS,
            seconds=args.seconds,
            first_sequence=args.first_sequence,
            times=times,
            template_every=args.template_every,
            sources=bool(args.sources),
        )
    if times is not None:
        with args.times.open("wb") as out:
            times.tofile(out)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
