"""Records/s of decode alone and of decode+render for full NetFlow v5 datagrams, one core.

    python bench/decode.py [--seconds 3] [--repeat 5]

Prints the best of ``--repeat`` runs of each measurement (the best run is the one least
disturbed by other load on the machine), with the machine and date, as a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import time
from collections.abc import Callable

from relay.netflow import decode
from relay.render import Renderer, RenderOptions
from relay.synth import SyntheticExporter

RECORDS = 30  # a full v5 datagram


def datagrams(n: int) -> list[bytes]:
    exporter = SyntheticExporter(rng=random.Random(7), boot_time=time.time() - 86400)
    now = time.time()
    return [exporter.datagram(5, RECORDS, now + i * 0.001) for i in range(n)]


def measure(work: Callable[[bytes], object], data: list[bytes], seconds: float) -> float:
    """Records per second over at least ``seconds``."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for d in data:
            work(d)
        done += len(data) * RECORDS
    return done / (time.perf_counter() - start)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data = datagrams(1000)
    json_renderer = Renderer()
    kv_renderer = Renderer(RenderOptions(body="kv", header="rfc5424"))
    cases: list[tuple[str, Callable[[bytes], object]]] = [
        ("decode (records as NamedTuples)", decode),
        (
            "decode+render, fused hot path (render_datagram), json",
            lambda d: json_renderer.render_datagram(d, "10.0.0.1"),
        ),
        (
            "decode+render, fused hot path, rfc5424 + kv",
            lambda d: kv_renderer.render_datagram(d, "10.0.0.1"),
        ),
        (
            "decode then render (reference path), json",
            lambda d: json_renderer.render(decode(d), "10.0.0.1"),
        ),
    ]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"load average at start: {os.getloadavg()[0]:.2f}\n")
    print(f"| measurement | records/s (best of {args.repeat} x {args.seconds:.0f} s) |")
    print("|---|---|")
    for name, work in cases:
        best = max(measure(work, data, args.seconds) for _ in range(args.repeat))
        print(f"| {name} | {best:,.0f} |")


if __name__ == "__main__":
    main()
