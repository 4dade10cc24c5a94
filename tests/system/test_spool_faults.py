"""A real ``relay run`` whose spool is on a full disk: an 8 MiB tmpfs.

- The relay leaves the full disk by itself: once the backlog is delivered, new records are
  accepted and delivered again (issue 10, defect 1: the default 32 MiB segment is larger than
  the disk, so the active segment is the only one).
- A restart on a full disk starts with what is there instead of exiting 78 (defect 2); a spool
  directory that cannot be created for want of space exits 75, which systemd retries.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from spool.tmpfs import fill, tmpfs
from support.netflow_builder import Header, Record, datagram
from support.relayproc import LOOPBACK, START_TIMEOUT, RelayProcess, relay_processes, tls_args

from relay.certs import TlsFiles, server_context
from relay.errors import EX_TEMPFAIL
from relay.testing.sink import SyslogSink

RECORDS = 30
DISK_KIB = 8 << 10


class Feed:
    """Distinct v5 records: ``packets`` is the record's id."""

    def __init__(self) -> None:
        self.next_id = 1

    def make(self) -> bytes:
        header = Header(
            sys_uptime=3_600_000, unix_secs=int(time.time()), flow_sequence=self.next_id
        )
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
            )
            for i in range(self.next_id, self.next_id + RECORDS)
        ]
        self.next_id += RECORDS
        return datagram(5, records, header=header)


@asynccontextmanager
async def sink_on(
    port: int, tls_server: TlsFiles, tls_ca: TlsFiles, *, keep_lines: int | None = 0
) -> AsyncIterator[SyslogSink]:
    context = server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    sink = SyslogSink(ssl_context=context, port=port, keep_lines=keep_lines)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        yield sink
        nursery.cancel_scope.cancel()


def relay_args(config: Path, spool: Path, port: int, tls_client: TlsFiles) -> list[str]:
    return [
        "-c",
        str(config),
        "--listen",
        f"{LOOPBACK}:0",
        "--endpoint",
        f"{LOOPBACK}:{port}",
        *tls_args(ca=tls_client.ca, cert=tls_client.cert, key=tls_client.key),
        "--spool",
        str(spool),
        "--metrics",
        f"{LOOPBACK}:0",
    ]


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "relay.toml"
    config.write_text(
        "[forward]\nbackoff_initial = 0.05\nbackoff_max = 0.2\nconnect_timeout = 2.0\n"
        "drain_timeout = 2.0\n"
    )
    return config


async def fill_the_disk(relay: RelayProcess, feed: Feed, sender: socket.socket) -> None:
    """Send records until the relay counts lines refused for a full disk (bounded)."""
    target = (LOOPBACK, relay.udp_port)
    for _ in range(400):  # up to 400 x 10 datagrams: 120,000 records, far more than 8 MiB
        for _ in range(10):
            sender.sendto(feed.make(), target)
        await trio.sleep(0.005)
        scraped = await relay.scrape_async()
        if scraped.get("flowrelay_lines_dropped_total", reason="disk_full") > 0:
            return
    raise AssertionError("the disk never filled up: " + relay.log_tail())


async def test_the_relay_leaves_a_full_disk_by_itself(
    tmp_path: Path, tls_server: TlsFiles, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    feed = Feed()
    config = write_config(tmp_path)
    with (
        tmpfs(tmp_path / "disk", kib=DISK_KIB) as disk,
        relay_processes() as made,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        # The endpoint's port is reserved but refuses connections: the spool only grows.
        reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        reserved.bind((LOOPBACK, 0))
        port = reserved.getsockname()[1]
        relay = RelayProcess(
            relay_args(config, disk / "spool", port, tls_client), tmp_path / "relay.log"
        )
        made.append(relay)
        await relay.start_async()
        await fill_the_disk(relay, feed, sender)
        reserved.close()
        async with sink_on(port, tls_server, tls_ca) as sink:
            await relay.wait_metric_async("flowrelay_spool_pending_lines", 0, timeout=60)
            delivered = await relay.scrape_async()
            spooled = delivered.total("flowrelay_lines_spooled_total")
            # New records after the drain: the spool must take them, on the same full disk.
            target = (LOOPBACK, relay.udp_port)
            for _ in range(100):
                sender.sendto(feed.make(), target)
                await trio.sleep(0.002)
            with trio.move_on_after(15):
                while (await relay.scrape_async()).total(
                    "flowrelay_lines_spooled_total"
                ) < spooled + 100 * RECORDS // 2:
                    await trio.sleep(0.05)
            after = await relay.scrape_async()
            accepted = after.total("flowrelay_lines_spooled_total") - spooled
            assert accepted >= 100 * RECORDS // 2, (
                f"only {accepted} of {100 * RECORDS} new records were spooled after the "
                f"drain; {relay.log_tail()}"
            )
            await relay.wait_metric_async("flowrelay_spool_pending_lines", 0, timeout=30)
            assert sink.port == port
        relay.signal(15)
        assert await relay.wait_async(timeout=15) == 0, relay.log_tail()


async def test_a_restart_on_a_full_disk_does_not_exit_78(
    tmp_path: Path, tls_server: TlsFiles, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    feed = Feed()
    config = write_config(tmp_path)
    with (
        tmpfs(tmp_path / "disk", kib=DISK_KIB) as disk,
        relay_processes() as made,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved,
    ):
        reserved.bind((LOOPBACK, 0))
        port = reserved.getsockname()[1]
        args = relay_args(config, disk / "spool", port, tls_client)
        first = RelayProcess(args, tmp_path / "relay1.log")
        made.append(first)
        await first.start_async()
        await fill_the_disk(first, feed, sender)
        pending = (await first.scrape_async()).total("flowrelay_spool_pending_lines")
        first.signal(15)
        assert await first.wait_async(timeout=15) == 0, first.log_tail()
        fill(disk / "filler")  # what the stop left free is taken by someone else

        second = RelayProcess(args, tmp_path / "relay2.log")
        made.append(second)
        await second.start_async()  # raises with the log if the relay exits instead
        (opened,) = second.events("spool_opened")
        assert opened["pending_lines"] >= pending > 0
        second.signal(15)
        assert await second.wait_async(timeout=15) == 0, second.log_tail()


def test_no_room_to_create_the_spool_directory_exits_75_with_one_sentence(
    tmp_path: Path, tls_client: TlsFiles
) -> None:
    """ENOSPC is transient: exit 75 (EX_TEMPFAIL, which the unit's Restart= retries), not 78
    (a configuration error, which stops the restarts). On tmpfs a directory needs an inode,
    not a block, so the file system is full of inodes here."""
    config = write_config(tmp_path)
    with tmpfs(tmp_path / "disk", kib=DISK_KIB, inodes=4) as disk:
        for i in range(10):  # the root is one inode; take the rest
            try:
                (disk / f"taken{i}").touch()
            except OSError:
                break
        spool = disk / "spool"
        args = relay_args(config, spool, 9, tls_client)  # no endpoint is reached
        ran = subprocess.run(
            [sys.executable, "-m", "relay", "run", *args],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        assert ran.returncode == EX_TEMPFAIL, ran.stderr
        # Beside the JSON log lines (a receive-buffer warning comes first), one sentence.
        (sentence,) = [ln for ln in ran.stderr.splitlines() if not ln.startswith("{")]
        assert sentence == (
            f"relay: cannot create the spool directory {spool}: No space left on device; "
            "the relay starts once its file system has room"
        )
        # Once there is room the same command starts.
        for taken in disk.glob("taken*"):
            taken.unlink()
        with relay_processes() as made:
            relay = RelayProcess(args, tmp_path / "relay.log")
            made.append(relay)
            relay.start()
            relay.signal(15)
            assert relay.wait(timeout=15) == 0, relay.log_tail()
