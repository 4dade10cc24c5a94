"""Records/s of decode alone and of decode+render for full NetFlow v5 datagrams, one core.

    python bench/decode.py [--seconds 3] [--repeat 5]
    python bench/decode.py --instructions      # needs valgrind (Debian package)

Prints the best of ``--repeat`` runs of each measurement (the best run is the one least
disturbed by other load on the machine), with the machine and date, as a Markdown table.

Wall-clock figures on a shared virtual machine move by +-40 % from minute to minute.
``--instructions`` counts instead what the CPU executes per record of decode+render, under
valgrind's callgrind, with a fixed hash seed: the same count on every run of the same
code, whatever else the machine does, so it compares two versions of the hot path exactly
(it does not see cache misses, which the wall-clock figures do).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from relay.flows import decode
from relay.render import Renderer, RenderOptions
from relay.testing.synth import SyntheticExporter

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


def instructions_per_record(body: str) -> float:
    """Instructions per record of render_datagram: callgrind of this script rendering N and
    0 datagrams; the difference over N x 30 records leaves start-up out."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")

    def total(count: int) -> int:
        run = subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                sys.executable, __file__, "--render-only", str(count), "--body", body,
            ],
            capture_output=True, text=True, check=True,
            # str hashing is salted per process: without a fixed seed, dict and set layouts
            # move the count by about 1 % from run to run of the same code.
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        found = re.search(r"Collected : (\d+)", run.stderr)
        if found is None:
            raise SystemExit(f"callgrind printed no total:\n{run.stderr[-2000:]}")
        return int(found[1])

    count = 400
    return (total(count) - total(0)) / (count * RECORDS)


def render_only(count: int, body: str) -> None:
    """The measured work of --instructions: render ``count`` datagrams, nothing else."""
    exporter = SyntheticExporter(rng=random.Random(7), boot_time=1_700_000_000 - 86400)
    data = [exporter.datagram(5, RECORDS, 1_700_000_000 + i * 0.001) for i in range(200)]
    renderer = Renderer(RenderOptions(body=body))  # type: ignore[arg-type]
    renderer.render_datagram(data[0], "10.0.0.1")  # caches and templates, outside the count
    for i in range(count):
        renderer.render_datagram(data[i % len(data)], "10.0.0.1")


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
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    parser.add_argument("--render-only", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--body", default="json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render_only is not None:
        render_only(args.render_only, args.body)
        return
    if args.instructions:
        print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
        print("| decode+render, fused hot path | instructions per record (callgrind) |")
        print("|---|---|")
        for body in ("json", "kv"):
            print(f"| {body} body | {instructions_per_record(body):,.0f} |")
        return
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
