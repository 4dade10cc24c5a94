"""Records/s of decode alone and of decode+render for full NetFlow v5 datagrams, one core;
and of decode+render of NetFlow v9 (softflowd's IPv4 template) and IPFIX (a template with a
variable-length string), from the datagram to its lines.

    python3 -m bench.decode [--seconds 3] [--repeat 5] [--case v5|v9|ipfix-varlen|all]
    python3 -m bench.decode --instructions      # needs valgrind (Debian package)

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
import struct
import subprocess
import sys
import time
from collections.abc import Callable

from relay.flows import decode, ipfix, v9
from relay.flows.records import RecordPlan, plan_for
from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template
from relay.render import Renderer, RenderOptions
from relay.render.template_line import NO_OPTIONS
from relay.testing.synth import SyntheticExporter

RECORDS = 30  # a full v5 datagram, and the records of each v9 / IPFIX datagram here
CASES = ("v5", "v9", "ipfix-varlen")

# softflowd 1.1.0 (Debian), `softflowd -v 9`: its IPv4 template (ID 1024), as it sends it.
SOFTFLOWD_V9 = Template(
    template_id=1024,
    fields=tuple(
        FieldSpec(element=e, length=n)
        for e, n in ((8, 4), (12, 4), (22, 4), (21, 4), (1, 4), (2, 4), (10, 4), (14, 4),
                     (61, 1), (136, 1), (7, 2), (11, 2), (4, 1), (6, 1), (60, 1), (5, 1))
    ),
)  # fmt: skip
# An IPFIX template of the kind application-aware exporters send: absolute times, 64-bit
# counters and applicationName (96) as a variable-length string.
IPFIX_VARLEN = Template(
    template_id=300,
    fields=tuple(
        FieldSpec(element=e, length=n)
        for e, n in ((8, 4), (12, 4), (152, 8), (153, 8), (1, 8), (2, 8), (10, 4), (14, 4),
                     (7, 2), (11, 2), (4, 1), (6, 1), (5, 1), (96, VARIABLE_LENGTH))
    ),
)  # fmt: skip
_APPLICATIONS = (b"ssl", b"http", b"dns", b"google-services", b"ms-office-365", b"ntp")


def datagrams(n: int) -> list[bytes]:
    exporter = SyntheticExporter(rng=random.Random(7), boot_time=time.time() - 86400)
    now = time.time()
    return [exporter.datagram(5, RECORDS, now + i * 0.001) for i in range(n)]


def _template_record(rng: random.Random, template: Template, now_ms: int, uptime: int) -> bytes:
    values: dict[int, int | bytes] = {
        8: bytes([10, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)]),
        12: bytes([192, 0, 2, rng.randrange(1, 255)]),
        7: rng.randrange(1024, 65536), 11: rng.choice((53, 80, 443, 123)),
        4: rng.choice((6, 17)), 6: rng.randrange(64), 5: 0, 10: rng.randrange(1, 48),
        14: rng.randrange(1, 48), 1: rng.randrange(40, 10_000_000), 2: rng.randrange(1, 9000),
        61: rng.randrange(2), 136: rng.randrange(1, 4), 60: 4,
    }  # fmt: skip
    start = rng.randrange(1_000, 300_000)
    out = []
    for spec in template.fields:
        e = spec.element
        if spec.variable:
            name = rng.choice(_APPLICATIONS)
            out.append(bytes([len(name)]) + name)
        elif e in (22, 21):
            out.append(struct.pack("!I", (uptime - start - (0 if e == 22 else -500)) % 2**32))
        elif e in (152, 153):
            out.append(struct.pack("!Q", now_ms - start + (0 if e == 152 else 500)))
        else:
            value = values[e]
            out.append(value if isinstance(value, bytes) else value.to_bytes(spec.length, "big"))
    return b"".join(out)


def template_datagrams(case: str, n: int) -> list[bytes]:
    """``n`` datagrams of RECORDS records each, all of one data set of the case's template
    (the template itself travels apart: the bench hands the renderer its plan)."""
    rng = random.Random(7)
    template = SOFTFLOWD_V9 if case == "v9" else IPFIX_VARLEN
    out = []
    for i in range(n):
        secs = 1_700_000_000 + i // 100
        records = b"".join(
            _template_record(rng, template, secs * 1000, 86_400_000 + i) for _ in range(RECORDS)
        )
        data_set = struct.pack("!HH", template.template_id, 4 + len(records)) + records
        if case == "v9":
            header = struct.pack("!HHIIII", 9, RECORDS, 86_400_000 + i, secs, i, 0)
        else:
            header = struct.pack("!HHIII", 10, 16 + len(data_set), secs, i * RECORDS, 0)
        out.append(header + data_set)
    return out


def template_work(case: str, renderer: Renderer) -> Callable[[bytes], object]:
    """Decode+render of one datagram: the message cut into sets, each data set's template
    found by its ID (a dict standing in for the template cache), its lines rendered."""
    parse = v9.parse if case == "v9" else ipfix.parse
    template = SOFTFLOWD_V9 if case == "v9" else IPFIX_VARLEN
    plans: dict[int, RecordPlan] = {
        template.template_id: plan_for(template, 9 if case == "v9" else 10)
    }

    def work(data: bytes) -> list[bytes]:
        message = parse(data)
        header = message.header
        lines: list[bytes] = []
        for data_set in message.data_sets:
            found, _ = renderer.render_template(
                plans[data_set.template_id], data_set.data, header, "10.0.0.1", NO_OPTIONS,
                part=data_set.part, offset=data_set.offset,
            )  # fmt: skip
            lines += found
        return lines

    return work


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


def instructions_per_record(body: str, case: str = "v5") -> float:
    """Instructions per record of render_datagram: callgrind of this script rendering N and
    0 datagrams; the difference over N x 30 records leaves start-up out."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")

    def total(count: int) -> int:
        run = subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                sys.executable, __file__, "--render-only", str(count), "--body", body,
                "--case", case,
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


def render_only(count: int, body: str, case: str = "v5") -> None:
    """The measured work of --instructions: render ``count`` datagrams, nothing else."""
    if case != "v5":
        work = template_work(case, Renderer(RenderOptions(body=body)))  # type: ignore[arg-type]
        data = template_datagrams(case, 200)
        work(data[0])  # caches and compiled code, outside the count
        for i in range(count):
            work(data[i % len(data)])
        return
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
    parser.add_argument("--case", default="all", choices=(*CASES, "all"))
    args = parser.parse_args()
    if args.render_only is not None:
        render_only(args.render_only, args.body, args.case)
        return
    cases = CASES if args.case == "all" else (args.case,)
    if args.instructions:
        print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
        print("| decode+render, fused hot path | instructions per record (callgrind) |")
        print("|---|---|")
        for case in cases:
            for body in ("json", "kv"):
                count = instructions_per_record(body, case)
                print(f"| {case}, {body} body | {count:,.0f} |")
        return
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"load average at start: {os.getloadavg()[0]:.2f}\n")
    print(f"| measurement | records/s (best of {args.repeat} x {args.seconds:.0f} s) |")
    print("|---|---|")
    if "v5" in cases:
        v5_cases(args.seconds, args.repeat)
    for case in cases:
        if case == "v5":
            continue
        data = template_datagrams(case, 1000)
        for name, renderer in (
            ("json", Renderer()),
            ("rfc5424 + kv", Renderer(RenderOptions(body="kv", header="rfc5424"))),
        ):
            work = template_work(case, renderer)
            best = max(measure(work, data, args.seconds) for _ in range(args.repeat))
            print(f"| {case}: decode+render (parse, render_template), {name} | {best:,.0f} |")


def v5_cases(seconds: float, repeat: int) -> None:
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
    for name, work in cases:
        best = max(measure(work, data, seconds) for _ in range(repeat))
        print(f"| {name} | {best:,.0f} |")


if __name__ == "__main__":
    main()
