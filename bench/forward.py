"""Forwarding throughput: spool -> TLS -> receiver on loopback, 400-byte lines.

    python -m bench.forward [--lines N] [--size BYTES] [--target sink|rsyslog|both]
                            [--framing newline|octet-counting] [--driver ossl|gtls]
                            [--profile FILE]

The spool is filled first (not timed), then one Forwarder sends it over mutual TLS to

- ``sink``: relay.testing.sink.SyslogSink in a separate process (so the receiver does not share
  the forwarder's core), or
- ``rsyslog``: Debian's rsyslogd with imtcp + ossl, writing every message to a file.

Reported per target: lines/s until the forwarder had every line acknowledged (spool empty),
lines/s until the receiver had written/counted every line, and the CPU seconds the
forwarder's process used (user + system), i.e. how much of one core forwarding costs.
"""

from __future__ import annotations

import argparse
import cProfile
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from relay.certs import (
    TlsFiles,
    client_context,
    issue_certificate,
    make_test_ca,
)
from relay.forward import Endpoint, Forwarder, ForwarderConfig
from relay.framing import Framing
from relay.spool import FsyncPolicy, Spool
from relay.testing.rsyslog import Rsyslog

_SINK_CHILD = """
import sys, trio
from pathlib import Path
from relay.certs import server_context
from relay.testing.sink import SyslogSink

async def main():
    context = server_context(cert=Path({cert!r}), key=Path({key!r}), client_ca=Path({ca!r}))
    sink = SyslogSink(ssl_context=context, keep_lines=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        print(port, flush=True)
        await sink.wait_lines({lines}, timeout=600)
        print(sink.statistics().lines, flush=True)
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def make_lines(count: int, size: int) -> list[bytes]:
    head = b"<14>Nov 23 12:00:00 10.0.0.1 netstat.netflow.lt: "
    body = b"x" * (size - len(head))
    return [head + body] * count


def fill_spool(directory: Path, lines: int, size: int) -> Spool:
    spool = Spool.open(directory, max_bytes=4 << 30, fsync=FsyncPolicy.NEVER)
    chunk = make_lines(10_000, size)
    for start in range(0, lines, len(chunk)):
        spool.append(chunk[: min(len(chunk), lines - start)])
    return spool


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def forward(
    spool: Spool,
    port: int,
    tls: TlsFiles,
    client: TlsFiles,
    framing: Framing,
    received: trio.Event | None,
) -> tuple[float, float, float]:
    """(seconds until all acknowledged, seconds until received, forwarder CPU seconds)."""
    context = client_context(ca=tls.ca, cert=client.cert, key=client.key)
    config = ForwarderConfig(
        endpoints=(Endpoint(host="127.0.0.1", port=port, server_name="localhost"),),
        ssl_context=context,
        framing=framing,
    )
    forwarder = Forwarder(spool, config)
    async with trio.open_nursery() as nursery:
        cpu0 = cpu_seconds()
        start = trio.current_time()
        await nursery.start(forwarder.run)
        if not await forwarder.drain(timeout=600):
            raise SystemExit("the forwarder did not drain the spool within 600 s")
        acked = trio.current_time() - start
        cpu = cpu_seconds() - cpu0
        if received is not None:
            await received.wait()
        done = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return acked, done, cpu


async def bench_sink(
    directory: Path, tls: TlsFiles, server: TlsFiles, client: TlsFiles, args: argparse.Namespace
) -> None:
    spool = fill_spool(directory / "spool-sink", args.lines, args.size)
    code = _SINK_CHILD.format(
        cert=str(server.cert), key=str(server.key), ca=str(tls.ca), lines=args.lines
    )
    # Started once, before anything is timed.
    process = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        received = trio.Event()

        async def watch() -> None:
            assert process.stdout is not None
            await trio.to_thread.run_sync(process.stdout.readline)
            received.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            acked, done, cpu = await forward(spool, port, tls, client, args.framing, received)
    finally:
        process.kill()
        process.wait()
        spool.close()
    report("spool -> SyslogSink (other process)", args, acked, done, cpu)


async def bench_rsyslog(
    directory: Path, tls: TlsFiles, server: TlsFiles, client: TlsFiles, args: argparse.Namespace
) -> None:
    spool = fill_spool(directory / "spool-rsyslog", args.lines, args.size)
    # Only the raw file: measure the transport, not rsyslog's parser.
    platform = Rsyslog(directory / "rsyslog", server, mutual=True, parse=False, driver=args.driver)
    await platform.start_async()
    expected = args.lines * (args.size + 1)
    received = trio.Event()

    async def watch() -> None:
        while True:
            try:
                if platform.raw_file.stat().st_size >= expected:
                    break
            except FileNotFoundError:
                pass
            await trio.sleep(0.01)
        received.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            acked, done, cpu = await forward(
                spool, platform.port, tls, client, args.framing, received
            )
    finally:
        await platform.stop_async()
        spool.close()
    report(f"spool -> rsyslogd ({platform.driver})", args, acked, done, cpu)


def report(name: str, args: argparse.Namespace, acked: float, done: float, cpu: float) -> None:
    print(
        f"{name}: {args.lines:,} lines of {args.size} B, {args.framing}\n"
        f"  acknowledged in {acked:.2f} s = {args.lines / acked:,.0f} lines/s "
        f"({args.lines * args.size / acked / 1e6:,.0f} MB/s)\n"
        f"  received in     {done:.2f} s = {args.lines / done:,.0f} lines/s\n"
        f"  forwarder CPU   {cpu:.2f} s = {args.lines / cpu:,.0f} lines per CPU-second",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-forward-") as tmp:
        directory = Path(tmp)
        tls = make_test_ca(directory / "tls")
        server = issue_certificate(tls, directory / "tls", "localhost", client=False)
        client = issue_certificate(tls, directory / "tls", "client", hosts=(), server=False)
        if args.target in ("sink", "both"):
            await bench_sink(directory, tls, server, client, args)
        if args.target in ("rsyslog", "both"):
            await bench_rsyslog(directory, tls, server, client, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--target", choices=("sink", "rsyslog", "both"), default="both")
    parser.add_argument("--framing", type=Framing, choices=list(Framing), default=Framing.NEWLINE)
    parser.add_argument("--driver", choices=("ossl", "gtls"), help="rsyslog's TLS driver")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the run")
    arguments = parser.parse_args()
    if arguments.profile:
        cProfile.run("trio.run(main, arguments)", arguments.profile)
    else:
        trio.run(main, arguments)
