"""``relay run`` as a whole: every datagram accounted for, /metrics and /healthz, framing on the
wire, and SIGTERM under load losing nothing that was received.

The relay runs in-process under trio (``run_relay``) where the test needs its exact counters,
and as a ``python -m relay run`` subprocess where a real signal and a real exit code matter.
The platform is :class:`relay.testing.sink.SyslogSink` over mutual TLS on 127.0.0.1. A second
loopback address, 127.0.0.2, plays an exporter outside the allow-list.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from support.netflow_builder import Header, Record, datagram
from support.relayproc import (
    RelayProcess,
    Scrape,
    http_get_async,
    parse_metrics,
    parse_summary,
    relay_processes,
    tls_args,
)
from support.syslog import parse_line

from relay.certs import TlsFiles, server_context
from relay.config import Config, Overrides, load
from relay.forward import ForwarderStats
from relay.metrics import RelayMetrics
from relay.service import RelayHandle, dropped_lines, run_relay, stats_line
from relay.spool import Spool, SpoolStats
from relay.testing.sink import SyslogSink

LOOPBACK = "127.0.0.1"
DENIED_SOURCE = "127.0.0.2"  # loopback too, but outside --allow 127.0.0.1/32
# Export time of the accounting test: 2 December, so the RFC 3164 day is padded ("Dec  2").
ONE_DIGIT_DAY = 1_796_216_645  # 2026-12-02T13:04:05Z
ID_RE = re.compile(rb'"packets":(\d+)')

# Every family the product contract names, with its kind.
REQUIRED_FAMILIES = {
    "flowrelay_packets_received_total": "counter",
    "flowrelay_records_decoded_total": "counter",
    "flowrelay_packets_malformed_total": "counter",
    "flowrelay_packets_denied_total": "counter",
    "flowrelay_flows_lost_total": "counter",
    "flowrelay_udp_kernel_drops_total": "counter",
    "flowrelay_lines_spooled_total": "counter",
    "flowrelay_spool_bytes": "gauge",
    "flowrelay_spool_pending_lines": "gauge",
    "flowrelay_lines_forwarded_total": "counter",
    "flowrelay_forward_reconnects_total": "counter",
    "flowrelay_lines_dropped_total": "counter",
    "flowrelay_endpoint_connected": "gauge",
}


# ---- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def sink_context(tls_server: TlsFiles, tls_ca: TlsFiles) -> Any:
    """The platform's side of mutual TLS: its certificate, client certificates required."""
    return server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)


def relay_config(
    tmp_path: Path,
    sink_port: int,
    client: TlsFiles,
    *,
    framing: str = "newline",
    document: dict[str, Any] | None = None,
) -> Config:
    return load(
        {
            "forward": {"backoff_initial": 0.05, "backoff_max": 0.5},
            "listen": {"receive_buffer": "4MiB"},
            **(document or {}),
        },
        Overrides(
            listen=[f"{LOOPBACK}:0"],
            endpoints=[f"{LOOPBACK}:{sink_port}"],
            ca=str(client.ca),
            cert=str(client.cert),
            key=str(client.key),
            server_name="localhost",
            spool=str(tmp_path / "spool"),
            metrics=f"{LOOPBACK}:0",
            allow=[f"{LOOPBACK}/32"],
            framing=framing,
        ),
        environ={},
    )


@asynccontextmanager
async def running_relay(config: Config) -> AsyncIterator[RelayHandle]:
    """run_relay in a nursery; on the way out it is told to drain and must finish in time."""
    async with trio.open_nursery() as nursery:
        handle: RelayHandle = await nursery.start(partial(run_relay, config, handle_signals=False))
        try:
            yield handle
        finally:
            handle.stop.set()
            # Drain timeout plus a margin: a relay that does not stop fails the test.
            nursery.cancel_scope.deadline = trio.current_time() + config.forward.drain_timeout + 10


@asynccontextmanager
async def running_sink(context: Any, **kwargs: Any) -> AsyncIterator[SyslogSink]:
    sink = SyslogSink(ssl_context=context, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        yield sink
        nursery.cancel_scope.cancel()


async def scrape(port: int | None) -> Scrape:
    assert port is not None
    status, body = await http_get_async(port, "/metrics")
    assert status == 200, body
    return parse_metrics(body)


async def wait_metric(
    port: int | None,
    name: str,
    value: float,
    *,
    timeout: float,
) -> Scrape:
    deadline = trio.current_time() + timeout
    while True:
        scraped = await scrape(port)
        if scraped.total(name) == value:
            return scraped
        if trio.current_time() > deadline:
            raise TimeoutError(f"{name} is {scraped.total(name)}, not {value}, after {timeout} s")
        await trio.sleep(0.05)


def udp_socket(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    return sock


def flow(ident: int, header: Header) -> Record:
    """A record whose ``packets`` field is ``ident``: every line can be told apart."""
    return Record(
        src_addr=f"10.{ident >> 16 & 255}.{ident >> 8 & 255}.{ident & 255}",
        dst_addr="192.0.2.53",
        next_hop="10.0.0.1",
        input_if=1,
        output_if=2,
        packets=ident,
        bytes=ident * 64,
        first=header.sys_uptime - 4000,
        last=header.sys_uptime - 1000,
        src_port=1024 + ident % 60000,
        dst_port=53,
        protocol=17,
        tos=0,
        src_as=64512,
        dst_as=15169,
        src_mask=24,
        dst_mask=24,
        in_encaps=1,
        out_encaps=2,
        peer_next_hop="10.255.0.1",
        flags1=1,
        flags2=2,
        router_sc="10.0.0.254",
    )


@dataclass(slots=True)
class Stream:
    """Builds datagrams of one exporter engine with unique record ids."""

    next_id: int
    now: int

    def make(
        self,
        version: int,
        count: int,
        *,
        sequence: int = 0,
        engine_id: int = 0,
        trailing: bytes = b"",
    ) -> tuple[bytes, list[int]]:
        header = Header(
            sys_uptime=3_600_000,
            unix_secs=self.now,
            unix_nsecs=250_000_000,
            flow_sequence=sequence,
            engine_type=0,
            engine_id=engine_id,
        )
        ids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        records = [flow(i, header) for i in ids]
        return datagram(version, records, header=header, trailing=trailing), ids


def line_ids(lines: Sequence[bytes]) -> Counter[int]:
    ids: Counter[int] = Counter()
    for line in lines:
        match = ID_RE.search(line)
        assert match is not None, f"not a flow line: {line[:200]!r}"
        ids[int(match.group(1))] += 1
    return ids


def version_label(data: bytes) -> str:
    version = data[0] << 8 | data[1] if len(data) >= 2 else -1
    return str(version) if version in (1, 5, 6, 7, 9, 10) else "other"


# ---- accounting -----------------------------------------------------------------------------


async def test_every_datagram_and_record_is_forwarded_or_counted(
    tmp_path: Path, sink_context: Any, tls_client: TlsFiles
) -> None:
    """Valid datagrams of every version (two with warnings), one malformed datagram per reason,
    datagrams from a denied exporter, a duplicated datagram, a sequence gap and a reordering.
    The sums must match exactly, and every forwarded line is one that was fed."""
    s = Stream(next_id=1000, now=ONE_DIGIT_DAY)
    good: list[bytes] = []  # from 127.0.0.1, in sending order
    forwarded: Counter[int] = Counter()  # record ids the sink must receive, with multiplicity

    def valid(data_ids: tuple[bytes, list[int]], *, times: int = 1) -> None:
        data, ids = data_ids
        for _ in range(times):
            good.append(data)
            forwarded.update(ids)

    valid(s.make(1, 3))
    valid(s.make(1, 30))  # over v1's documented maximum of 24: decoded, with a warning
    valid(s.make(7, 3, sequence=0, trailing=b"\x00" * 7))  # trailing bytes: decoded, warned
    valid(s.make(7, 3, sequence=3))
    # Engine 1: a gap of one datagram (5 flows) that never fills.
    for seq in (0, 5, 10, 20, 25):
        valid(s.make(5, 5, sequence=seq, engine_id=1))
    s.next_id += 5  # the records of the lost datagram are never sent
    # Engine 2: seq 15 arrives before seq 10; once 10 arrives nothing is lost.
    reorder = {seq: s.make(5, 5, sequence=seq, engine_id=2) for seq in (0, 5, 10, 15, 20)}
    for seq in (0, 5, 15, 10, 20):
        valid(reorder[seq])
    # Engine 3 (v6): the same datagram twice. Both copies are forwarded; no loss is counted.
    v6 = {seq: s.make(6, 4, sequence=seq, engine_id=3) for seq in (0, 4, 8)}
    valid(v6[0])
    valid(v6[4], times=2)
    valid(v6[8])
    lost_expected = 5

    malformed = {
        "empty": b"",
        "short_header": b"\x00",
        "unknown_version": b"\x00\x0b" + bytes(18),  # version 11: none
        "zero_count": datagram(5, [], count=0),
        "short_records": datagram(5, [Record()] * 2, count=3),
    }
    malformed_v5_short = datagram(5, [])[:20]  # a v5 header cut short
    denied = [s.make(5, 5, sequence=0, engine_id=9)[0], s.make(1, 2)[0], b"garbage"]

    async with (
        running_sink(sink_context) as sink,
        running_relay(relay_config(tmp_path, sink.port or 0, tls_client)) as relay,
    ):
        target = (LOOPBACK, relay.listen[0][1])
        with udp_socket(LOOPBACK) as ok_sock, udp_socket(DENIED_SOURCE) as bad_sock:
            sent: list[bytes] = []
            for data in good[:6]:
                ok_sock.sendto(data, target)
                sent.append(data)
            for data in [*malformed.values(), malformed_v5_short]:
                ok_sock.sendto(data, target)
                sent.append(data)
            for data in denied:
                bad_sock.sendto(data, target)
                sent.append(data)
            for data in good[6:]:
                ok_sock.sendto(data, target)
                sent.append(data)

        records = sum(forwarded.values())
        await sink.wait_lines(records, timeout=10)
        # The gap is held for late datagrams (2 s), then counted.
        scraped = await wait_metric(relay.metrics_port, "flowrelay_flows_lost_total", 5, timeout=8)
        await wait_metric(relay.metrics_port, "flowrelay_lines_forwarded_total", records, timeout=5)
        scraped = await scrape(relay.metrics_port)

    received = scraped.total("flowrelay_packets_received_total")
    malformed_total = scraped.total("flowrelay_packets_malformed_total")
    denied_total = scraped.value("flowrelay_packets_denied_total")
    assert received == len(sent)
    assert scraped.by_label("flowrelay_packets_received_total", "version") == {
        label: float(n) for label, n in Counter(version_label(d) for d in sent).items()
    }
    assert denied_total == len(denied)
    reasons = Counter(malformed.keys())
    reasons["short_header"] += 1  # the cut v5 header
    assert scraped.by_label("flowrelay_packets_malformed_total", "reason") == {
        reason: float(n) for reason, n in reasons.items()
    }
    assert received - malformed_total - denied_total == len(good)
    assert scraped.value("flowrelay_packets_warning_total", warning="over_max_count") == 1
    assert scraped.value("flowrelay_packets_warning_total", warning="trailing_bytes") == 1

    assert scraped.value("flowrelay_records_decoded_total") == records
    assert scraped.value("flowrelay_lines_spooled_total") == records
    assert scraped.value("flowrelay_lines_forwarded_total") == records
    assert sink.statistics().lines == records
    assert line_ids(sink.lines) == forwarded  # each line once, the duplicate datagram twice
    assert scraped.value("flowrelay_flows_lost_total") == lost_expected
    assert scraped.total("flowrelay_lines_dropped_total") == 0
    assert scraped.value("flowrelay_udp_kernel_drops_total") == 0
    # The shutdown settles open gaps too: still exactly the one gap.
    assert relay.metrics.flows_lost.get() == lost_expected
    for line in sink.lines:
        parsed = parse_line(line)
        assert parsed.host == LOOPBACK, line[:80]
        assert parsed.timestamp == "Dec  2 13:04:05"  # a one-digit day: padded, not split
        body = json.loads(parsed.body)
        assert body["exporter"] == LOOPBACK


# ---- /metrics and /healthz ------------------------------------------------------------------


async def test_metrics_and_health_over_http(
    tmp_path: Path, sink_context: Any, tls_client: TlsFiles
) -> None:
    s = Stream(next_id=1, now=int(time.time()))
    async with (
        running_sink(sink_context) as sink,
        running_relay(relay_config(tmp_path, sink.port or 0, tls_client)) as relay,
    ):
        port = relay.metrics_port
        status, body = await http_get_async(port or 0, "/healthz")
        assert status == 200
        assert body.startswith("ok")

        target = (LOOPBACK, relay.listen[0][1])
        with udp_socket(LOOPBACK) as sock:
            for n in range(50):  # light load: 50 datagrams, 1,000 records
                sock.sendto(s.make(5, 20, sequence=n * 20, engine_id=4)[0], target)
            sock.sendto(b"\x00\x0b" + bytes(14), target)  # version 11: unknown
        await sink.wait_lines(1000, timeout=10)
        scraped = await wait_metric(port, "flowrelay_spool_pending_lines", 0, timeout=5)
        status, text = await http_get_async(port or 0, "/metrics")
        status_404, _ = await http_get_async(port or 0, "/nothing")
        _, health = await http_get_async(port or 0, "/healthz")

    assert status == 200
    assert status_404 == 404
    assert "endpoint_connected=1" in health
    for name, kind in REQUIRED_FAMILIES.items():
        assert scraped.types.get(name) == kind, f"{name}: TYPE {scraped.types.get(name)}"
        assert scraped.helps.get(name), f"{name} has no HELP"
        assert any(n == name for n, _ in scraped.samples), f"{name} has no sample"
    for name, kind in scraped.types.items():
        assert name.startswith(("flowrelay_", "process_")), name  # process_: prometheus_client
        assert (kind == "counter") == name.endswith("_total"), f"{name} is a {kind}"

    assert scraped.value("flowrelay_packets_received_total", version="5") == 50
    assert scraped.value("flowrelay_packets_received_total", version="other") == 1
    assert scraped.value("flowrelay_packets_malformed_total", reason="unknown_version") == 1
    assert scraped.value("flowrelay_records_decoded_total") == 1000
    assert scraped.value("flowrelay_lines_spooled_total") == 1000
    assert scraped.value("flowrelay_lines_forwarded_total") == 1000
    assert scraped.value("flowrelay_spool_pending_lines") == 0
    assert scraped.value("flowrelay_spool_bytes") > 0
    assert scraped.value("flowrelay_packets_denied_total") == 0
    assert scraped.value("flowrelay_flows_lost_total") == 0
    assert scraped.value("flowrelay_forward_reconnects_total") == 0
    assert scraped.value("flowrelay_endpoint_connected") == 1
    # Kernel drops are measured, and light load drops nothing.
    assert scraped.value("flowrelay_udp_kernel_drops_total") == 0
    dropped = scraped.by_label("flowrelay_lines_dropped_total", "reason")
    assert {"spool_full_drop_oldest", "spool_full_drop_newest"} <= dropped.keys()
    assert set(dropped.values()) == {0}
    # The text is the exposition format: HELP and TYPE precede each family's samples.
    lines = text.splitlines()
    first_sample = next(i for i, ln in enumerate(lines) if ln.startswith("flowrelay_records"))
    assert lines[first_sample - 1] == "# TYPE flowrelay_records_decoded_total counter"
    assert lines[first_sample - 2].startswith("# HELP flowrelay_records_decoded_total ")


# ---- framing on the wire --------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["newline", "octet-counting"])
async def test_framing_on_the_wire(
    framing: str, tmp_path: Path, sink_context: Any, tls_client: TlsFiles
) -> None:
    """The sink counts plaintext bytes read with and without framing: the difference is one
    LF per line, or RFC 6587's ``LEN SP`` per line."""
    s = Stream(next_id=1, now=int(time.time()))
    async with (
        running_sink(sink_context) as sink,
        running_relay(relay_config(tmp_path, sink.port or 0, tls_client, framing=framing)) as relay,
    ):
        with udp_socket(LOOPBACK) as sock:
            for n in range(10):
                sock.sendto(s.make(7, 10, sequence=n * 10)[0], (LOOPBACK, relay.listen[0][1]))
        await sink.wait_lines(100, timeout=10)
    stats = sink.statistics()
    assert stats.lines == 100
    assert stats.framing_errors == 0
    if framing == "newline":
        overhead = len(sink.lines)
    else:
        overhead = sum(len(f"{len(line)} ") for line in sink.lines)
    assert stats.wire_bytes - stats.bytes == overhead
    assert all(b"\n" not in line for line in sink.lines)


# ---- SIGTERM under load ---------------------------------------------------------------------

LOAD_RECORDS = 20_000
PER_DATAGRAM = 25
RATE = 10_000  # records per second
SIGNAL_AT = LOAD_RECORDS // 2


@pytest.mark.parametrize("endpoint", ["fast", "slow"])
async def test_sigterm_under_load_loses_nothing_received(
    endpoint: str, tmp_path: Path, sink_context: Any, tls_client: TlsFiles
) -> None:
    """A ``relay run`` subprocess gets 20,000 records at 10,000/s and SIGTERM half way.

    It must exit 0 within its drain timeout, and every record it decoded (its "stopped" log
    line says how many) is either at the sink or still in the spool. With a fast endpoint the
    drain delivers everything; with a slow one and a 1 s drain timeout lines stay in the spool,
    and the ones in flight at the end may be at the sink and in the spool both (at least once).
    """
    drain_timeout = 10.0 if endpoint == "fast" else 1.0
    config = tmp_path / "relay.toml"
    config.write_text(
        f"[forward]\ndrain_timeout = {drain_timeout}\nbackoff_initial = 0.05\n"
        '[listen]\nreceive_buffer = "8MiB"\n'
    )
    spool_dir = tmp_path / "spool"
    s = Stream(next_id=1, now=int(time.time()))
    sent_before_signal = 0
    sent_total = 0
    with relay_processes() as made:
        async with running_sink(sink_context) as sink:
            if endpoint == "slow":
                sink.read_delay = 0.01
                sink.read_size = 4096
            relay = RelayProcess(
                [
                    "-c",
                    str(config),
                    "--listen",
                    f"{LOOPBACK}:0",
                    "--endpoint",
                    f"{LOOPBACK}:{sink.port}",
                    *tls_args(ca=tls_client.ca, cert=tls_client.cert, key=tls_client.key),
                    "--spool",
                    str(spool_dir),
                    "--metrics",
                    f"{LOOPBACK}:0",
                    "--allow",
                    f"{LOOPBACK}/32",
                ],
                tmp_path / "relay.log",
            )
            made.append(relay)
            await relay.start_async()
            assert relay.process is not None
            signalled_at = None
            with udp_socket(LOOPBACK) as sock:
                start = trio.current_time()
                while sent_total < LOAD_RECORDS and relay.process.poll() is None:
                    # A fixed rate: send what the schedule says is due, then sleep.
                    due = min(LOAD_RECORDS, int((trio.current_time() - start) * RATE))
                    while sent_total + PER_DATAGRAM <= due:
                        data, _ = s.make(5, PER_DATAGRAM, sequence=sent_total)
                        sock.sendto(data, (LOOPBACK, relay.udp_port))
                        sent_total += PER_DATAGRAM
                    if signalled_at is None and sent_total >= SIGNAL_AT:
                        sent_before_signal = sent_total
                        relay.signal(signal.SIGTERM)
                        signalled_at = trio.current_time()
                    await trio.sleep(0.005)
            assert signalled_at is not None
            code = await relay.wait_async(timeout=drain_timeout + 10)
            exited_after = trio.current_time() - signalled_at
            stopped = relay.events("stopped")
    assert code == 0, relay.log_tail()
    assert len(stopped) == 1, relay.log_tail()
    summary = parse_summary(stopped[0]["summary"])
    decoded = summary["records"]

    with Spool.open(spool_dir) as spool:
        pending = spool.statistics().pending_lines
        in_spool: list[bytes] = []
        batch = spool.read()
        while batch.lines:
            in_spool += batch.lines
            batch = spool.read(batch.end)
    # "spool_closed" is logged last, once the forwarder has let go of the spool; "stopped"
    # comes just before the forwarder's clean shutdown, which may still commit acknowledged
    # lines, so its count can only be higher.
    (closed,) = relay.events("spool_closed")
    assert len(in_spool) == pending == closed["pending_lines"]
    assert stopped[0]["pending_lines"] >= pending

    at_sink = line_ids(sink.lines)
    spooled = line_ids(in_spool)
    assert summary["kernel_drops"] == 0
    assert summary["spooled"] == decoded
    # Everything sent before the signal was received (loopback, no kernel drops)...
    assert sent_before_signal <= decoded <= sent_total
    # ... and since UDP on loopback keeps order, the records received are the first ones sent.
    assert set(at_sink) | set(spooled) == set(range(1, decoded + 1))
    duplicates = sum(at_sink.values()) + pending - decoded
    if endpoint == "fast":
        assert pending == 0
        assert max(at_sink.values()) == 1
        assert sum(at_sink.values()) == decoded
    else:
        assert pending > 0, "the slow endpoint took everything: the test proved nothing"
        assert max(at_sink.values()) == 1
        # Only lines in flight when the drain ended (what the kernel's send buffer held, a few
        # hundred KiB) can be at the sink and still in the spool.
        assert 0 <= duplicates <= 2000, f"{duplicates} lines both delivered and still spooled"
    # The drain timeout bounds the stop; the margin covers the clean TLS close and process exit.
    assert exited_after < drain_timeout + 2.0, (
        f"exit took {exited_after:.2f} s after SIGTERM with forward.drain_timeout = "
        f"{drain_timeout:g} s"
    )


async def test_verification_off_is_said_once_when_the_relay_starts(
    tmp_path: Path, sink_context: Any, tls_client: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    document = {"forward": {"verify": False, "backoff_initial": 0.05, "backoff_max": 0.5}}
    with caplog.at_level(logging.WARNING, logger="relay"):
        async with (
            running_sink(sink_context) as sink,
            running_relay(relay_config(tmp_path, sink.port or 0, tls_client, document=document)),
        ):
            pass
    said = [r for r in caplog.records if "verification" in r.getMessage().lower()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    assert "attacker" in said[0].getMessage()


def drop_fields() -> list[str]:
    """Every SpoolStats counter of lines dropped or lost, by its name."""
    names = [f.name for f in fields(SpoolStats)]
    return [n for n in names if n.startswith(("lines_dropped_", "lines_lost_"))]


def test_the_stats_lines_dropped_counts_every_drop_the_spool_reports(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "spool")
    try:
        empty = spool.statistics()
    finally:
        spool.close()
    forwarder = ForwarderStats(
        lines_forwarded=0, bytes_acked=0, lines_sent=0, reconnects=0, connection_failures=0,
        duplicates_resent=0, connected=False, endpoint=None, last_error=None,
    )  # fmt: skip
    assert drop_fields(), "SpoolStats has no drop counters any more"
    for n, name in enumerate(drop_fields(), 1):
        # Each kind alone, with a count of its own: none is left out of dropped=.
        alone = replace(empty, **{name: 1000 * n})
        summary = parse_summary(stats_line(RelayMetrics(), alone, forwarder))
        assert summary["dropped"] == 1000 * n, name
        # And the metric's reason labels carry the same count.
        assert sum(count for _, count in dropped_lines(alone)) == 1000 * n, name
    every = replace(empty, **dict.fromkeys(drop_fields(), 7))
    summary = parse_summary(stats_line(RelayMetrics(), every, forwarder))
    assert summary["dropped"] == 7 * len(drop_fields())
    assert {reason for reason, _ in dropped_lines(every)} == {
        "spool_full_drop_oldest", "spool_full_drop_newest", "disk_full", "spool_corrupt",
    }  # fmt: skip
