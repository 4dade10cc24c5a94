"""``kill -9`` of a ``relay run`` subprocess at random moments, with ``fsync = always``: every
line the relay had counted as spooled arrives at the platform after a restart on the same
spool; nothing arrives that was not fed (a torn tail is cut, never sent); duplicates stay
within one cycle's window per kill.

Each cycle starts the relay on the same spool directory, pointed either at a dead port
(nothing listens: the spool only grows), at a slow platform (forwarding is in progress when
the kill comes) or at a fast one; sends a batch of distinct records; waits until
``flowrelay_lines_spooled_total`` says all are spooled; sometimes sends more and kills at
once (the kill may land inside a spool write); otherwise kills after a random delay. One
in-process TLS sink plays the platform for the whole test; a last relay run delivers the rest.
"""

from __future__ import annotations

import os
import random
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from support.netflow_builder import Header, Record, datagram
from support.relayproc import LOOPBACK, RelayProcess, relay_processes, tls_args

from relay.certs import TlsFiles, server_context
from relay.testing.sink import SyslogSink

CYCLES = 22
DATAGRAMS_PER_CYCLE = 6
RECORDS_PER_DATAGRAM = 25
LINES_PER_CYCLE = DATAGRAMS_PER_CYCLE * RECORDS_PER_DATAGRAM
ID_RE = re.compile(rb'"packets":(\d+),"bytes":(\d+)')
MODES = ("dead", "slow", "live")


@dataclass(slots=True)
class Feed:
    """Distinct records: the ``packets`` field is the record's id, ``bytes`` is 7 × id."""

    next_id: int = 1
    sequence: int = 0

    def make(self) -> tuple[bytes, list[int]]:
        header = Header(
            sys_uptime=3_600_000,
            unix_secs=int(time.time()),
            flow_sequence=self.sequence,
            engine_id=1,
        )
        ids = list(range(self.next_id, self.next_id + RECORDS_PER_DATAGRAM))
        self.next_id += RECORDS_PER_DATAGRAM
        self.sequence += RECORDS_PER_DATAGRAM
        records = [
            Record(
                src_addr="10.9.8.7",
                dst_addr="192.0.2.9",
                packets=i,
                bytes=7 * i,
                first=3_590_000,
                last=3_599_000,
                src_port=40000,
                dst_port=443,
                protocol=6,
                tcp_flags=0x18,
            )
            for i in ids
        ]
        return datagram(5, records, header=header), ids


@asynccontextmanager
async def running_sink(tls_server: TlsFiles, tls_ca: TlsFiles) -> AsyncIterator[SyslogSink]:
    context = server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    sink = SyslogSink(ssl_context=context)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        yield sink
        nursery.cancel_scope.cancel()


def dead_port() -> socket.socket:
    """A TCP port bound but not listening: connections to it are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    return sock


def set_speed(sink: SyslogSink, mode: str) -> None:
    if mode == "slow":
        sink.read_delay, sink.read_size = 0.02, 2048
    else:
        sink.read_delay, sink.read_size = 0.0, 65536


async def test_kill_9_at_random_moments_loses_no_spooled_line(
    tmp_path: Path, tls_server: TlsFiles, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    seed = int(os.environ.get("FLOWRELAY_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    context = f"(seed {seed}; rerun with FLOWRELAY_CRASH_SEED={seed})"
    spool_dir = tmp_path / "spool"
    config = tmp_path / "relay.toml"
    config.write_text(
        '[spool]\nfsync = "always"\n'
        "[forward]\nbackoff_initial = 0.05\nbackoff_max = 0.2\nconnect_timeout = 2.0\n"
        "drain_timeout = 5.0\n"
    )
    feed = Feed()
    must: set[int] = set()  # counted as spooled before the kill
    maybe: set[int] = set()  # sent right before the kill: may or may not have been spooled
    kills: Counter[str] = Counter()
    kills_mid_write = 0
    forwarded_at_kill: list[int] = []  # connected cycles: lines forwarded just before the kill
    windows: list[int] = []  # connected cycles: lines the killed process had to send

    def relay_args(port: int) -> list[str]:
        return [
            "-c",
            str(config),
            "--listen",
            f"{LOOPBACK}:0",
            "--endpoint",
            f"{LOOPBACK}:{port}",
            *tls_args(ca=tls_client.ca, cert=tls_client.cert, key=tls_client.key),
            "--spool",
            str(spool_dir),
            "--metrics",
            f"{LOOPBACK}:0",
        ]

    started = time.monotonic()
    with (
        relay_processes() as made,
        dead_port() as dead,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        async with running_sink(tls_server, tls_ca) as sink:
            assert sink.port is not None
            for cycle in range(CYCLES):
                mode = MODES[cycle % 3] if cycle < 3 else rng.choice(MODES)
                set_speed(sink, mode)
                port = dead.getsockname()[1] if mode == "dead" else sink.port
                relay = RelayProcess(relay_args(port), tmp_path / f"relay{cycle:02d}.log")
                made.append(relay)
                await relay.start_async()
                target = (LOOPBACK, relay.udp_port)
                first_id = feed.next_id
                this_cycle: list[int] = []
                for _ in range(DATAGRAMS_PER_CYCLE):
                    data, ids = feed.make()
                    sender.sendto(data, target)
                    this_cycle += ids
                # Only what the relay counted as spooled is promised; with fsync = always that
                # count moves once the write is on disk.
                await relay.wait_metric_async(
                    "flowrelay_lines_spooled_total", LINES_PER_CYCLE, timeout=10
                )
                must.update(this_cycle)
                if mode != "dead":
                    # Connected, the backlog of earlier cycles and this one is on its way: the
                    # kill below lands while lines are being forwarded.
                    await relay.wait_metric_async("flowrelay_endpoint_connected", 1, timeout=10)
                    forwarded = (await relay.scrape_async()).total(
                        "flowrelay_lines_forwarded_total"
                    )
                    forwarded_at_kill.append(int(forwarded))
                if rng.random() < 0.4:
                    # More lines, and the kill right behind them: it may land mid-write.
                    for _ in range(rng.randint(1, 4)):
                        data, ids = feed.make()
                        sender.sendto(data, target)
                        maybe.update(ids)
                    await trio.sleep(rng.uniform(0, 0.01))
                    kills_mid_write += 1
                else:
                    await trio.sleep(rng.uniform(0, 0.3))
                relay.kill()
                kills[mode] += 1
                if mode != "dead":
                    # What this process could have sent: the backlog it found, and its own.
                    (opened,) = relay.events("spool_opened")
                    windows.append(opened["pending_lines"] + feed.next_id - first_id)

            # The last run: a fast platform, until the spool is empty; then a clean stop.
            set_speed(sink, "live")
            final = RelayProcess(relay_args(sink.port), tmp_path / "relay-final.log")
            made.append(final)
            await final.start_async()
            await final.wait_metric_async("flowrelay_spool_pending_lines", 0, timeout=30)
            with trio.move_on_after(10):
                while not must <= {i for i, _ in parsed(sink.lines)}:
                    await trio.sleep(0.05)
            final.signal(15)
            assert await final.wait_async(timeout=15) == 0, final.log_tail()

    elapsed = time.monotonic() - started
    got = parsed(sink.lines)
    arrived = Counter(i for i, _ in got)
    sent = must | maybe
    missing = sorted(must - arrived.keys())
    assert not missing, (
        f"{len(missing)} spooled lines never arrived, e.g. ids {missing[:10]} {context}; "
        f"kills {dict(kills)}"
    )
    foreign = sorted(arrived.keys() - sent)
    assert not foreign, f"lines that were never fed arrived: ids {foreign[:10]} {context}"
    assert all(b == 7 * i for i, b in got), f"a line arrived damaged {context}"
    duplicates = sum(arrived.values()) - len(arrived)
    # A line is sent again only after the kill of a connected process that had sent it before
    # its cursor reached the disk: each kill duplicates at most what that process had to send
    # (the backlog it found in the spool and its own lines), never more.
    assert duplicates <= sum(windows), (
        f"{duplicates} duplicates, more than the {sum(windows)} lines the killed connected "
        f"processes had to send {context}"
    )
    most = max(arrived.values())
    assert most <= 1 + len(windows), f"a line arrived {most} times {context}"
    assert all(kills[mode] for mode in MODES), f"not every mode was run: {dict(kills)}"
    assert elapsed < 90, f"the crash test took {elapsed:.0f} s"
    print(
        f"crash test {context}: {CYCLES} kills {dict(kills)}, {kills_mid_write} right after "
        f"sending; {len(must)} lines promised, {len(maybe & arrived.keys())} of {len(maybe)} "
        f"unconfirmed ones arrived, {duplicates} duplicates, {elapsed:.1f} s; forwarded "
        f"before the kill in connected cycles: {forwarded_at_kill}"
    )


def parsed(lines: list[bytes]) -> list[tuple[int, int]]:
    out = []
    for line in lines:
        match = ID_RE.search(line)
        assert match is not None, f"not a flow line: {line[:200]!r}"
        out.append((int(match.group(1)), int(match.group(2))))
    return out


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
async def test_kill_9_of_an_idle_relay_resends_nothing(
    fsync: str, tmp_path: Path, tls_server: TlsFiles, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    """The platform took every line and the relay then sat idle for 2 s: the cursor must be on
    disk by then, so a kill -9 leaves nothing to send again. (The resend window after a crash
    is what was in flight, not whatever the last burst happened to be.)"""
    spool_dir = tmp_path / "spool"
    feed = Feed()
    with (
        relay_processes() as made,
        dead_port() as dead,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        async with running_sink(tls_server, tls_ca) as sink:
            assert sink.port is not None

            def args(port: int) -> list[str]:
                return [
                    "--listen",
                    f"{LOOPBACK}:0",
                    "--endpoint",
                    f"{LOOPBACK}:{port}",
                    *tls_args(ca=tls_client.ca, cert=tls_client.cert, key=tls_client.key),
                    "--spool",
                    str(spool_dir),
                    "--metrics",
                    f"{LOOPBACK}:0",
                    "--fsync",
                    fsync,
                ]

            relay = RelayProcess(args(sink.port), tmp_path / "relay.log")
            made.append(relay)
            await relay.start_async()
            await relay.wait_metric_async("flowrelay_endpoint_connected", 1, timeout=10)
            for _ in range(DATAGRAMS_PER_CYCLE):
                sender.sendto(feed.make()[0], (LOOPBACK, relay.udp_port))
                await trio.sleep(0.02)  # a few bursts, a few commits
            await relay.wait_metric_async(
                "flowrelay_lines_forwarded_total", LINES_PER_CYCLE, timeout=10
            )
            await sink.wait_lines(LINES_PER_CYCLE, timeout=5)
            await trio.sleep(2.0)
            relay.kill()
            # Restarted towards a dead port, so that nothing it finds can leave the spool.
            after = RelayProcess(args(dead.getsockname()[1]), tmp_path / "after.log")
            made.append(after)
            await after.start_async()
            (opened,) = after.events("spool_opened")
            after.kill()
    assert opened["pending_lines"] == 0, (
        f"fsync {fsync}: the platform had taken all {LINES_PER_CYCLE} lines 2 s before the "
        f"kill, yet the restarted relay found {opened['pending_lines']} pending and would "
        "send them again: the cursor of the last commits was never written"
    )
