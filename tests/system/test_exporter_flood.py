"""A flood of forged exporter identities against a real ``relay run`` (issue 10, item 3).

Any host on the LAN can forge UDP sources and engine IDs, and the relay keeps sequence state
per (exporter, version, engine_type, engine_id). Here a normal exporter runs first (65,536
datagrams: the spool's in-memory copy of recent lines, TLS buffers and the allocator reach
their steady size), then 262,144 forged identities (4 loopback source addresses x 256
engine types x 256 engine IDs, one v5 datagram each) arrive, then the normal exporter again.

Measured on the old, unbounded tracker: over the forged flood alone the relay's RSS grew by
52-55 MB (from 57-61 MB to 112-113 MB), and nothing ever gave it back. With the bound
(16,384 streams by default) it grew by 1.5-4.0 MB; the limit, ``FLOOD_GROWTH_LIMIT_KB``
(16 MiB), is well below the unbounded growth and leaves room for allocator noise. Every
identity beyond the cap must be counted as evicted, and the normal exporter must still be
relayed afterwards, with no loss counted.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.netflow_builder import Header, Record, datagram
from support.relayproc import LOOPBACK, RelayProcess, Scrape, tls_args

from relay.certs import TlsFiles, server_context
from relay.sequence import DEFAULT_MAX_STREAMS
from relay.testing.sink import SyslogSink

FORGED_SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
IDENTITIES = len(FORGED_SOURCES) * 256 * 256
NORMAL = "127.0.0.9"  # the real exporter, outside the forged range
WARMUP = 65_536  # the normal exporter's datagrams before the flood
AFTER = 10  # and after it
# Datagrams sent before waiting for the relay to have read them. A small datagram takes
# about 830 bytes of receive buffer, and the relay gets at least twice Linux's default
# rmem_max (2 x 208 kB: room for 512), so the kernel drops none of a burst of 256.
BURST = 256
# A bound on each phase, so the test always ends; it measures memory, not speed, and missed
# 45 s by under 0.1 % of the flood on a host shared with other test suites.
SEND_TIMEOUT = 120.0
FLOOD_GROWTH_LIMIT_KB = 16 * 1024
RECORD = Record(src_addr="10.0.0.1", dst_addr="10.0.0.2", packets=1, bytes=64)

Datagram = tuple[socket.socket, bytes]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def send_paced(relay: RelayProcess, datagrams: Iterator[Datagram], deadline: float) -> Scrape:
    """Send a burst at a time, each burst read by the relay before the next (so what is
    measured is the relay's state, not a kernel queue); returns the last scrape."""
    target = (LOOPBACK, relay.udp_port)
    first = relay.scrape()
    start = first.total("flowrelay_packets_received_total")
    start_drops = first.total("flowrelay_udp_kernel_drops_total")
    sent = 0
    scrape = None
    done = False
    while not done:
        for _ in range(BURST):
            item = next(datagrams, None)
            if item is None:
                done = True
                break
            item[0].sendto(item[1], target)
            sent += 1
        while True:  # what the kernel dropped never comes, but is counted
            scrape = relay.scrape()
            read = scrape.total("flowrelay_packets_received_total") - start
            dropped = scrape.total("flowrelay_udp_kernel_drops_total") - start_drops
            if read + dropped >= sent:
                break
            assert time.monotonic() < deadline, f"relay too slow: {read} of {sent} read"
            # Not faster: each scrape costs the relay ~1 ms of its loop (prometheus_client,
            # process metrics), which a 5 ms poll turned into a fifth of its time.
            time.sleep(0.05)
    assert scrape is not None
    return scrape


def normal_exporter(s: socket.socket, first: int, count: int) -> Iterator[Datagram]:
    for i in range(first, first + count):
        yield s, datagram(5, [RECORD], header=Header(flow_sequence=i, engine_id=1))


def forged(senders: list[socket.socket]) -> Iterator[Datagram]:
    for index in range(IDENTITIES):
        header = Header(engine_type=(index >> 8) & 0xFF, engine_id=index & 0xFF)
        yield senders[index >> 16], datagram(5, [RECORD], header=header)


def bound_socket(address: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((address, 0))
    return s


@pytest.mark.slow
async def test_a_flood_of_forged_exporter_identities_keeps_memory_bounded(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    normal_lines = 0

    def on_line(line: bytes) -> None:
        nonlocal normal_lines
        if f" {NORMAL} ".encode() in line:
            normal_lines += 1

    context = server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    sink = SyslogSink(ssl_context=context, keep_lines=0, on_line=on_line)
    sockets = [bound_socket(a) for a in (NORMAL, *FORGED_SOURCES)]
    normal, senders = sockets[0], sockets[1:]
    async with trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        args = [
            "--listen", f"{LOOPBACK}:0", "--endpoint", f"{LOOPBACK}:{sink_port}",
            *tls_args(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key),
            "--spool", str(tmp_path / "spool"), "--fsync", "never",
            "--metrics", f"{LOOPBACK}:0", "--allow", "127.0.0.0/8",
        ]  # fmt: skip
        try:
            with RelayProcess(args, tmp_path / "relay.log") as relay:
                await relay.start_async()
                deadline = time.monotonic() + SEND_TIMEOUT
                warm = await trio.to_thread.run_sync(
                    send_paced, relay, normal_exporter(normal, 0, WARMUP), deadline
                )
                before = rss_kb(relay.pid)
                scrape = await trio.to_thread.run_sync(send_paced, relay, forged(senders), deadline)
                after = rss_kb(relay.pid)
                growth = after - before
                print(f"RSS {before} kB before the flood, {after} kB after: +{growth} kB")
                flood = scrape.total("flowrelay_packets_received_total") - warm.total(
                    "flowrelay_packets_received_total"
                )
                assert flood >= 200_000, f"only {flood} forged identities reached the relay"
                assert growth < FLOOD_GROWTH_LIMIT_KB, f"RSS grew {growth} kB over the flood"
                # Each identity beyond the cap pushed out the least recently seen stream (the
                # normal exporter's too: it was the oldest once the flood began).
                assert scrape.value("flowrelay_sequence_streams") == DEFAULT_MAX_STREAMS
                evicted = scrape.value("flowrelay_sequence_streams_evicted_total", reason="cap")
                assert evicted == 1 + flood - DEFAULT_MAX_STREAMS

                # The normal exporter carries on: relayed, tracked again, no loss counted.
                await trio.to_thread.run_sync(
                    send_paced, relay, normal_exporter(normal, WARMUP, AFTER), deadline
                )
                with trio.fail_after(30):
                    while normal_lines < WARMUP + AFTER:
                        await trio.sleep(0.05)
                scrape = await relay.scrape_async()
                assert scrape.value("flowrelay_flows_lost_total") == 0
                assert scrape.value("flowrelay_sequence_streams") == DEFAULT_MAX_STREAMS
                assert scrape.value("flowrelay_sequence_streams_evicted_total", reason="cap") == (
                    evicted + 1
                )
                assert relay.terminate(timeout=30) == 0
        finally:
            for s in sockets:
                s.close()
        nursery.cancel_scope.cancel()
