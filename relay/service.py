"""``relay run``: the one top-level nursery that owns every task of the daemon.

Data path: UDP receivers → (ingest: allow, decode+render) → bounded channel → spool writer
→ disk spool → forwarder → TLS endpoint. SIGTERM/SIGINT drain: receivers stop and hand over
what the kernel already holds, the writer spools everything, the forwarder gets
``forward.drain_timeout`` to deliver, then every task is cancelled and the spool closed.
SIGHUP is logged and changes nothing (see :func:`wait_for_stop_signal`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from relay.allow import AllowList
from relay.certs import client_context
from relay.config import Config
from relay.errors import ConfigError
from relay.forward import Endpoint, Forwarder, ForwarderConfig, ForwarderStats
from relay.ingest import Ingest
from relay.metrics import RelayMetrics, serve_http
from relay.receiver import UdpReceiver, open_udp_socket
from relay.render import Renderer
from relay.sequence import SequenceTracker
from relay.spool import FsyncPolicy, Overflow, Spool, SpoolStats

log = logging.getLogger(__name__)

# Bursts in flight between receivers and the spool writer. A burst is up to BURST datagrams
# (7,680 lines of v5, ~4 MB): a full channel blocks the receivers, and the kernel's socket
# buffer holds what arrives meanwhile; more room here would only hold more in memory.
CHANNEL_BATCHES = 4
WRITE_COALESCE_LINES = 8192
# The signals that make the daemon drain and exit 0.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayHandle:
    """What ``relay run`` bound, for callers that asked for port 0 (tests, demo)."""

    listen: tuple[tuple[str, int], ...]
    metrics_port: int | None
    stop: trio.Event
    metrics: RelayMetrics


def build_ssl_context(config: Config) -> ssl.SSLContext | None:
    """One client context for all endpoints (they share the platform's CA and our cert)."""
    if not config.tls:
        return None
    first = config.endpoints[0]
    for other in config.endpoints[1:]:
        if (other.ca, other.cert, other.key) != (first.ca, first.cert, first.key):
            raise ConfigError(
                f"endpoint {other} has a different ca/cert/key than {first}: all endpoints of "
                "the platform must use the same files",
                key="endpoint",
            )
    return client_context(ca=first.ca, cert=first.cert, key=first.key, verify=config.verify)


def forwarder_config(config: Config, context: ssl.SSLContext | None) -> ForwarderConfig:
    return ForwarderConfig(
        endpoints=tuple(
            Endpoint(host=e.host, port=e.port, server_name=e.server_name) for e in config.endpoints
        ),
        ssl_context=context,
        framing=config.framing,  # type: ignore[arg-type]
        batch_bytes=config.batch_bytes,
        backoff_initial=config.backoff_initial,
        backoff_max=config.backoff_max,
        connect_timeout=config.connect_timeout,
        primary_retry_interval=config.primary_retry_interval,
        # The clean close (acknowledgements, close_notify, the peer's EOF) counts against the
        # same SIGTERM budget as the drain.
        drain_timeout=config.drain_timeout,
        stall_timeout=config.stall_timeout,
        failover_after=config.failover_after,
        client_certificate=bool(config.endpoints) and config.endpoints[0].cert is not None,
    )


def check_startup(config: Config) -> ForwarderConfig:
    """What ``relay run`` checks before it binds anything: an endpoint, the TLS context (every
    certificate file loaded), the forwarder's configuration. ConfigError (CertificateError)
    says what is wrong in one sentence."""
    if not config.endpoints:
        raise ConfigError(
            "no endpoint configured: add an [[endpoint]] table or pass --endpoint HOST:PORT",
            key="endpoint",
        )
    return forwarder_config(config, build_ssl_context(config))


async def run_relay(
    config: Config,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[RelayHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    fconfig = check_startup(config)
    sockets: list[socket.socket] = []
    try:
        for address in config.listen:
            sock = open_udp_socket(
                address, receive_buffer=config.receive_buffer, reuse_port=config.workers > 1
            )
            sockets.append(sock)
        spool = Spool.open(
            config.spool_dir,
            max_bytes=config.spool_max_bytes,
            segment_bytes=config.spool_segment_bytes,
            overflow=Overflow(config.overflow),
            fsync=FsyncPolicy(config.fsync),
        )
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    try:
        await _serve(
            config,
            spool,
            fconfig,
            sockets,
            handle_signals=handle_signals,
            task_status=task_status,
        )
    finally:
        spool.close()


async def _serve(
    config: Config,
    spool: Spool,
    fconfig: ForwarderConfig,
    sockets: Sequence[socket.socket],
    *,
    handle_signals: bool,
    task_status: trio.TaskStatus[RelayHandle],
) -> None:
    metrics = RelayMetrics()
    forwarder = Forwarder(spool, fconfig)
    ingest = Ingest(
        renderer=Renderer(config.render),
        allow=AllowList(config.allow),
        metrics=metrics,
        clock=time.monotonic,
    )
    send, recv = trio.open_memory_channel[list[bytes]](CHANNEL_BATCHES)
    receivers = [UdpReceiver(s, process=ingest.process, send=send.clone()) for s in sockets]
    send.close()
    stop = trio.Event()
    _register_collectors(metrics, spool, forwarder, receivers)
    _register_sequence_collector(metrics, ingest.sequences)
    stats = _Stats(metrics, spool, forwarder)

    def health() -> tuple[bool, str]:
        f = forwarder.statistics()
        state = "stopping" if stop.is_set() else "ok"
        return not stop.is_set(), (
            f"{state} endpoint_connected={int(f.connected)} "
            f"spool_pending_lines={spool.statistics().pending_lines}"
        )

    async with trio.open_nursery() as nursery:
        if handle_signals:
            await nursery.start(_stop_on_signal, stop)
        await nursery.start(forwarder.run)
        metrics_port = None
        if config.metrics is not None:
            metrics_port = await nursery.start(
                partial(
                    serve_http,
                    metrics.registry,
                    config.metrics.host,
                    config.metrics.port,
                    health=health,
                )
            )
        nursery.start_soon(_housekeeping, config, spool, ingest, metrics, stats)
        async with trio.open_nursery() as pipeline:
            pipeline.start_soon(_spool_writer, recv, spool, metrics)
            for receiver in receivers:
                pipeline.start_soon(receiver.run, stop)
            listen = tuple((str(r.address[0]), int(r.address[1])) for r in receivers)
            log.info(
                "relay started",
                extra={
                    "event": "started",
                    "listen": ", ".join(f"{h}:{p}" for h, p in listen),
                    "endpoints": ", ".join(str(e) for e in config.endpoints),
                    "spool": str(config.spool_dir),
                    "fsync": config.fsync,
                },
            )
            task_status.started(
                RelayHandle(listen=listen, metrics_port=metrics_port, stop=stop, metrics=metrics)
            )
        # Receivers stopped and every line they read is in the spool.
        ingest.flush()
        await trio.to_thread.run_sync(spool.sync)
        pending = spool.statistics().pending_lines
        log.info("draining", extra={"event": "draining", "pending_lines": pending})
        delivered = await forwarder.drain(timeout=config.drain_timeout)
        left = spool.statistics().pending_lines
        log.info(
            "stopped" if delivered else "stopped with lines left in the spool",
            extra={"event": "stopped", "pending_lines": left, "summary": stats.line()},
        )
        nursery.cancel_scope.cancel()


async def wait_for_stop_signal(
    *,
    on_hangup: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> signal.Signals:
    """The daemon's signal handling, for ``relay run`` and the worker supervisor alike.

    Returns at SIGTERM or SIGINT: the caller drains. SIGHUP, the usual "reload", is logged and
    the relay carries on: without a handler it would end the process at once (status 129,
    the active segment unsealed), and systemd counts death by SIGHUP as a clean exit, so
    ``Restart=on-failure`` would not bring it back. ``on_hangup`` runs on each SIGHUP (the
    supervisor passes it on to its workers). ``task_status.started()`` comes once the handlers
    are in place.
    """
    with trio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.info(
                    "SIGHUP received: nothing to reload yet, carrying on (certificate reload "
                    "comes with the operations issue)",
                    extra={"event": "sighup", "signal": name},
                )
                if on_hangup is not None:
                    on_hangup()
                continue
            log.info("signal received: draining", extra={"event": "signal", "signal": name})
            return signal.Signals(signum)
    raise AssertionError("the signal receiver ended")  # pragma: no cover


@contextlib.contextmanager
def hangup_ignored() -> Iterator[None]:
    """SIGHUP ignored until :func:`wait_for_stop_signal` takes over: a reload sent while the
    relay is still starting (loading certificates, opening the spool) must not end it."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


async def _stop_on_signal(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    await wait_for_stop_signal(task_status=task_status)
    stop.set()


async def _spool_writer(
    recv: trio.MemoryReceiveChannel[list[bytes]], spool: Spool, metrics: RelayMetrics
) -> None:
    """Coalesces bursts into one spool write (one fsync with ``fsync = always``)."""
    async with recv:
        async for first in recv:
            lines = first
            while len(lines) < WRITE_COALESCE_LINES:
                try:
                    lines = lines + recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            accepted = await spool.write(lines)
            metrics.lines_spooled.inc(accepted)


def dropped_lines(s: SpoolStats) -> tuple[tuple[str, int], ...]:
    """Every kind of line the spool drops, by the ``reason`` label of
    ``flowrelay_lines_dropped_total``. The metric and the stats line's ``dropped=`` both read
    this one list, so that the summary cannot leave a kind out (it once left out disk_full
    and spool_corrupt)."""
    return (
        ("spool_full_drop_oldest", s.lines_dropped_oldest),
        ("spool_full_drop_newest", s.lines_dropped_newest),
        ("disk_full", s.lines_dropped_no_space),
        ("spool_corrupt", s.lines_lost_corrupt),
    )


def stats_line(m: RelayMetrics, s: SpoolStats, f: ForwarderStats) -> str:
    """The periodic one-line summary (also the ``stopped`` event's ``summary``)."""
    received = sum(m.packets_received.values.values())
    malformed = sum(m.packets_malformed.values.values())
    dropped = sum(count for _, count in dropped_lines(s))
    return (
        f"received={int(received)} denied={int(m.packets_denied.get())} "
        f"malformed={int(malformed)} records={int(m.records_decoded.get())} "
        f"spooled={int(m.lines_spooled.get())} forwarded={f.lines_forwarded} "
        f"pending={s.pending_lines} dropped={dropped} "
        f"connected={int(f.connected)} kernel_drops={int(m.udp_kernel_drops.get())}"
    )


class _Stats:
    """The periodic one-line summary, from the running components."""

    def __init__(self, metrics: RelayMetrics, spool: Spool, forwarder: Forwarder) -> None:
        self._metrics = metrics
        self._spool = spool
        self._forwarder = forwarder

    def line(self) -> str:
        return stats_line(self._metrics, self._spool.statistics(), self._forwarder.statistics())


async def _housekeeping(
    config: Config, spool: Spool, ingest: Ingest, metrics: RelayMetrics, stats: _Stats
) -> None:
    next_stats = trio.current_time() + config.stats_interval
    while True:
        await trio.sleep(config.fsync_interval if config.fsync == "interval" else 1.0)
        if config.fsync == "interval":
            await trio.to_thread.run_sync(spool.sync)
        else:
            spool.save_cursor()
        ingest.tick()
        if trio.current_time() >= next_stats:
            next_stats += config.stats_interval
            log.info(stats.line(), extra={"event": "stats"})


def _register_collectors(
    metrics: RelayMetrics, spool: Spool, forwarder: Forwarder, receivers: Sequence[UdpReceiver]
) -> None:
    def collect() -> None:
        s = spool.statistics()
        metrics.spool_bytes.set(s.disk_bytes)
        metrics.spool_pending_lines.set(s.pending_lines)
        metrics.spool_max_bytes.set(s.max_bytes)
        metrics.spool_oldest_pending_seconds.set(s.oldest_pending_age(time.time()))
        metrics.spool_corrupt_frames.set(s.corrupt_frames)
        metrics.spool_segments_deleted_on_open.set(s.segments_deleted_on_open)
        for reason, value in dropped_lines(s):
            metrics.lines_dropped.set(value, (("reason", reason),))
        f = forwarder.statistics()
        metrics.lines_forwarded.set(f.lines_forwarded)
        metrics.lines_resent.set(f.duplicates_resent)
        metrics.forward_reconnects.set(f.reconnects)
        metrics.endpoint_connected.set(1 if f.connected else 0)
        metrics.udp_kernel_drops.set(sum(r.kernel_drops() for r in receivers))

    metrics.registry.add_collector(collect)


def _register_sequence_collector(metrics: RelayMetrics, sequences: SequenceTracker) -> None:
    def collect() -> None:
        s = sequences.statistics()
        metrics.sequence_streams.set(s.streams)
        metrics.sequence_streams_evicted.set(s.streams_evicted, (("reason", "cap"),))
        metrics.sequence_streams_evicted.set(s.streams_expired, (("reason", "idle"),))

    metrics.registry.add_collector(collect)
