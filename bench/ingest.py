"""The daemon's per-datagram path without sockets: ``Ingest.process`` on datagrams of the
synthetic exporter (v9/IPFIX with their templates, options and interface names), so the
template decoder, the options and the sequence tracking are measured with the renderer.

    python -m bench.ingest [--versions 5,9,10] [--datagrams 200] [--repeat 5]

Prints, per version, the best of ``--repeat`` passes in microseconds and records per second
(one core). On a shared machine compare versions within one run.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import time

from relay.allow import AllowList
from relay.ingest import Ingest
from relay.metrics import RelayMetrics
from relay.render import Renderer
from relay.testing.synth import SyntheticExporter

RECORDS = 30


def datagrams(version: int, count: int) -> list[bytes]:
    now = time.time()
    exporter = SyntheticExporter(rng=random.Random(3), boot_time=now - 86400)
    out: list[bytes] = []
    for i in range(count):
        out += exporter.export(version, RECORDS, now + i * 0.01).datagrams
    return out


def measure(version: int, count: int, repeat: int) -> tuple[float, int]:
    """Best seconds per record over ``repeat`` passes (the first pass learns templates)."""
    data = datagrams(version, count)
    ingest = Ingest(
        renderer=Renderer(),
        allow=AllowList([ipaddress.ip_network("0.0.0.0/0")]),
        metrics=RelayMetrics(),
        clock=time.monotonic,
        wall_clock=time.time,
    )
    for d in data:
        ingest.process(d, "127.0.0.1", 5000)
    best, lines = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        lines = sum(len(ingest.process(d, "127.0.0.1", 5000)) for d in data)
        best = min(best, (time.perf_counter() - start) / lines)
    return best, lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", default="5,9,10")
    parser.add_argument("--datagrams", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    for version in (int(v) for v in args.versions.split(",")):
        seconds, lines = measure(version, args.datagrams, args.repeat)
        print(
            f"v{version}: {seconds * 1e6:.2f} us/record, {1 / seconds:,.0f} records/s "
            f"({lines} records a pass)"
        )


if __name__ == "__main__":
    main()
