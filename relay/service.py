"""``relay run``: the one top-level nursery that owns every task of the daemon.

Data path: UDP receivers → (ingest: allow, decode+render) → bounded channel → spool writer
→ disk spool → forwarder → TLS endpoint. SIGTERM/SIGINT drain: receivers stop and hand over
what the kernel already holds, the writer spools everything, the forwarder gets
``forward.drain_timeout`` to deliver, then every task is cancelled and the spool closed.
SIGHUP re-reads the CA, certificate and key files (relay.certwatch): a good set is used
from the next connection, a bad one is refused and the old one kept.

Under systemd (``Type=notify``) it says READY=1 once the sockets are bound and the spool is
open, STOPPING=1 when the drain starts, the stats line as STATUS=, and pings the watchdog from
the event loop itself, so that a loop that hangs stops the pings and systemd restarts it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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
from relay.certwatch import ClientTls, register_expiry_metric
from relay.config import Config
from relay.errors import ConfigError
from relay.exporters import ExporterTable
from relay.flows.config import TemplatesConfig, TemplateScopeMode
from relay.flows.template_decoder import TemplateDecoder
from relay.flows.template_store import FILE_NAME as TEMPLATE_FILE
from relay.flows.templates import TemplateCache
from relay.forward import Endpoint, Forwarder, ForwarderConfig, ForwarderStats
from relay.ingest import Ingest
from relay.metrics import RelayMetrics, register_exporter_collector, serve_http
from relay.receiver import UdpReceiver, open_udp_socket
from relay.render import Renderer
from relay.sequence import SequenceTracker
from relay.spool import FsyncPolicy, Spool, SpoolStats
from relay.status import DropWindow, Pipeline, document, sorted_views
from relay.systemd import (
    READY,
    STOPPING,
    TEST_HANG_ENV,
    Notifier,
    hang_on_sigusr1,
    ping_watchdog,
    status,
)
from relay.template_state import TemplateState

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
    if not config.tls.tls:
        return None
    first = config.endpoints[0]
    for other in config.endpoints[1:]:
        if (other.ca, other.cert, other.key) != (first.ca, first.cert, first.key):
            raise ConfigError(
                f"endpoint {other} has a different ca/cert/key than {first}: all endpoints of "
                "the platform must use the same files",
                key="endpoint",
            )
    return client_context(ca=first.ca, cert=first.cert, key=first.key, verify=config.tls.verify)


def forwarder_config(config: Config, context: ssl.SSLContext | None) -> ForwarderConfig:
    """The file's [forward] settings with what exists only at start: the endpoints (the TLS
    files stay behind, in ``context``) and the framing."""
    return ForwarderConfig.of(
        config.forward,
        endpoints=tuple(
            Endpoint(host=e.host, port=e.port, server_name=e.server_name) for e in config.endpoints
        ),
        ssl_context=context,
        framing=config.framing,
        client_certificate=bool(config.endpoints) and config.endpoints[0].cert is not None,
    )


def template_decoder(t: TemplatesConfig) -> TemplateDecoder:
    """The v9/IPFIX template decoder the [templates] section describes."""
    cache = TemplateCache(
        max_templates_per_exporter=t.max_per_exporter,
        max_bytes_per_exporter=t.max_bytes_per_exporter,
        max_templates=t.max_total,
        max_bytes=t.max_bytes,
        max_age=t.max_age,
    )
    return TemplateDecoder(
        scope_port=t.scope is TemplateScopeMode.ADDRESS_PORT,
        cache=cache,
        hold_age=t.hold_age,
        hold_bytes_per_exporter=t.hold_bytes_per_exporter,
        hold_bytes=t.hold_bytes,
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
    notifier: Notifier | None = None,
    task_status: trio.TaskStatus[RelayHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``notifier``: where READY=1 and the rest go (default: ``$NOTIFY_SOCKET``, if any)."""
    fconfig = check_startup(config)
    sockets: list[socket.socket] = []
    try:
        listen = config.listen
        for address in listen.addresses:
            sock = open_udp_socket(
                address,
                receive_buffer=listen.receive_buffer,
                reuse_port=listen.workers > 1,
                steer_workers=listen.workers,
            )
            sockets.append(sock)
        spool = Spool.open(
            config.spool.directory,
            max_bytes=config.spool.max_bytes,
            segment_bytes=config.spool.segment_bytes,
            overflow=config.spool.overflow,
            fsync=config.spool.fsync,
        )
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    own_notifier = notifier is None
    notify = Notifier.from_environ() if notifier is None else notifier
    try:
        await _serve(
            config,
            spool,
            fconfig,
            sockets,
            handle_signals=handle_signals,
            notify=notify,
            task_status=task_status,
        )
    finally:
        spool.close()
        if own_notifier:
            notify.close()


async def _serve(
    config: Config,
    spool: Spool,
    fconfig: ForwarderConfig,
    sockets: Sequence[socket.socket],
    *,
    handle_signals: bool,
    notify: Notifier,
    task_status: trio.TaskStatus[RelayHandle],
) -> None:
    metrics = RelayMetrics()
    forwarder = Forwarder(spool, fconfig)
    ingest = Ingest(
        renderer=Renderer(config.output),
        allow=AllowList(config.listen.allow),
        metrics=metrics,
        clock=time.monotonic,
        templates=template_decoder(config.templates),
        wall_clock=time.time,
        exporters=ExporterTable(
            wall_clock=time.time,
            max_exporters=config.metrics.max_exporters,
            silent_after=config.exporters.silent_after,
        ),
    )
    decoder = ingest.templated.decoder
    state_file = config.spool.directory / TEMPLATE_FILE if config.templates.persist else None
    templates = TemplateState(decoder.cache, state_file, clock=time.time)
    templates.restore(time.time())
    send, recv = trio.open_memory_channel[list[bytes]](CHANNEL_BATCHES)
    receivers = [UdpReceiver(s, process=ingest.process, send=send.clone()) for s in sockets]
    send.close()
    stop = trio.Event()
    _register_collectors(metrics, spool, forwarder, receivers)
    _register_sequence_collector(metrics, ingest.sequences)
    _register_template_collector(metrics, decoder)
    register_exporter_collector(
        metrics.registry, ingest.exporters, lambda: dict(decoder.statistics().per_exporter)
    )
    stats = _Stats(metrics, spool, forwarder)
    tls = None
    if fconfig.ssl_context is not None:
        tls = ClientTls(
            load=partial(build_ssl_context, config),
            use=forwarder.use_ssl_context,
            cert=config.endpoints[0].cert,
        )
        register_expiry_metric(metrics.registry, tls)
    overview = _Status(ingest, spool, forwarder, receivers, tls)

    def health() -> tuple[bool, str]:
        f = forwarder.statistics()
        state = "stopping" if stop.is_set() else "ok"
        return not stop.is_set(), (
            f"{state} endpoint_connected={int(f.connected)} "
            f"spool_pending_lines={spool.statistics().pending_lines}"
        )

    async with trio.open_nursery() as nursery:
        if handle_signals:
            await nursery.start(_stop_on_signal, stop, tls)
        await nursery.start(forwarder.run)
        metrics_port = None
        if (address := config.metrics.address) is not None:
            metrics_port = await nursery.start(
                partial(
                    serve_http,
                    metrics.registry,
                    address.host,
                    address.port,
                    health=health,
                    status=overview.json,
                )
            )
        nursery.start_soon(
            partial(
                _housekeeping,
                config,
                spool,
                ingest,
                templates,
                stats,
                notify=notify,
                tls=tls,
                overview=overview,
            )
        )
        if notify.watchdog_period is not None:
            nursery.start_soon(ping_watchdog, notify, notify.watchdog_period)
        if os.environ.get(TEST_HANG_ENV) == "1":
            nursery.start_soon(hang_on_sigusr1)
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
                    "spool": str(config.spool.directory),
                    "fsync": str(config.spool.fsync),
                },
            )
            task_status.started(
                RelayHandle(listen=listen, metrics_port=metrics_port, stop=stop, metrics=metrics)
            )
            notify.send(READY + status(stats.line()))
        notify.send(STOPPING + status("draining: " + stats.line()))
        # Receivers stopped and every line they read is in the spool.
        ingest.flush()
        await templates.save()
        await trio.to_thread.run_sync(spool.sync)
        pending = spool.statistics().pending_lines
        log.info("draining", extra={"event": "draining", "pending_lines": pending})
        delivered = await forwarder.drain(timeout=config.forward.drain_timeout)
        left = spool.statistics().pending_lines
        log.info(
            "stopped" if delivered else "stopped with lines left in the spool",
            extra={"event": "stopped", "pending_lines": left, "summary": stats.line()},
        )
        nursery.cancel_scope.cancel()


async def wait_for_stop_signal(
    *,
    on_hangup: Callable[[], object] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> signal.Signals:
    """The daemon's signal handling, for ``relay run`` and the worker supervisor alike.

    Returns at SIGTERM or SIGINT: the caller drains. SIGHUP, the usual "reload", runs
    ``on_hangup`` (the certificates are re-read; the supervisor passes it on to its workers)
    and the relay carries on: without a handler it would end the process at once (status 129,
    the active segment unsealed). ``task_status.started()`` comes once the handlers are in
    place.
    """
    with trio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.info(
                    "SIGHUP received: reloading the certificates"
                    if on_hangup is not None
                    else "SIGHUP received: nothing to reload (no TLS), carrying on",
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
    stop: trio.Event,
    tls: ClientTls | None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    await wait_for_stop_signal(
        on_hangup=tls.reload if tls is not None else None, task_status=task_status
    )
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


class _Status:
    """The /status document (relay.status) from the running components."""

    def __init__(
        self,
        ingest: Ingest,
        spool: Spool,
        forwarder: Forwarder,
        receivers: Sequence[UdpReceiver],
        tls: ClientTls | None,
    ) -> None:
        self._ingest, self._spool, self._forwarder = ingest, spool, forwarder
        self._receivers, self._tls = receivers, tls
        self._drops = DropWindow()
        self._recent_drops = 0

    def tick(self) -> None:
        """Every housekeeping turn: sample the kernel's drop counters for "growing"."""
        total = sum(r.kernel_drops() for r in self._receivers)
        self._recent_drops = self._drops.observe(time.monotonic(), total)

    def json(self) -> bytes:
        now = time.time()
        s, f = self._spool.statistics(), self._forwarder.statistics()
        table = self._ingest.exporters
        pipeline = Pipeline(
            spool_pending_lines=s.pending_lines,
            spool_bytes=s.disk_bytes,
            spool_max_bytes=s.max_bytes,
            spool_oldest_pending_seconds=s.oldest_pending_age(now),
            endpoint=f.endpoint if f.connected else None,
            certificate_not_after=self._tls.not_after if self._tls is not None else None,
            kernel_drops=sum(r.kernel_drops() for r in self._receivers),
            kernel_drops_last_minute=self._recent_drops,
        )
        views = sorted_views(
            table.views(dict(self._ingest.templated.decoder.statistics().per_exporter))
        )
        return json.dumps(document(views, table.others, pipeline, now)).encode()


async def _housekeeping(
    config: Config,
    spool: Spool,
    ingest: Ingest,
    templates: TemplateState,
    stats: _Stats,
    *,
    notify: Notifier,
    tls: ClientTls | None,
    overview: _Status,
) -> None:
    interval = config.spool.fsync is FsyncPolicy.INTERVAL
    next_stats = trio.current_time() + config.log.stats_interval
    while True:
        if tls is not None:
            tls.tick()
        await trio.sleep(config.spool.fsync_interval if interval else 1.0)
        if interval:
            await trio.to_thread.run_sync(spool.sync)
        else:
            spool.save_cursor()
        ingest.tick()
        overview.tick()
        if templates.due(time.time()):
            await templates.save()
        if notify.enabled:
            notify.send(status(stats.line()))
        if trio.current_time() >= next_stats:
            next_stats += config.log.stats_interval
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


def _register_template_collector(metrics: RelayMetrics, decoder: TemplateDecoder) -> None:
    def collect() -> None:
        t = decoder.statistics()
        metrics.templates.set(t.templates)
        for event, value in t.template_events.items():
            metrics.template_events.set(value, (("event", event),))
        for reason, value in t.templates_refused.items():
            metrics.templates_refused.set(value, (("reason", reason),))
        metrics.records_restored_template.set(t.records_from_restored)
        metrics.held_sets.set(t.held_sets)
        metrics.held_bytes.set(t.held_bytes)
        metrics.options_records.set(t.options_records)
        metrics.records_without_system_init.set(t.records_without_system_init)

    metrics.registry.add_collector(collect)
