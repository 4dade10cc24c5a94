"""``workers = N``: N relay processes on the same UDP ports, one supervisor.

Each worker is a full ``relay run`` with its own sockets (SO_REUSEPORT, steered by source
address by relay.steering, so one exporter's templates, options and flow_sequence stay on
one worker whatever its source port), its own spool directory (``SPOOL/worker-I``) and its
own forwarder connection. The supervisor starts them, restarts one that crashes (with
backoff), stops all of them on SIGTERM (each drains its own spool), passes SIGHUP on to
them (signals are handled as ``relay run`` handles them), exits 78 when a worker
reports a configuration error, and serves one ``/metrics`` that sums the workers' samples.

Under systemd only the supervisor talks to it (workers get no ``$NOTIFY_SOCKET``): READY=1
once every worker is up, STATUS= with how many are, STOPPING=1 at SIGTERM, and WATCHDOG=1 from
its own event loop. Workers prove that their loops turn by a heartbeat line on stdout every
second; one silent for the watchdog's timeout (``$WATCHDOG_USEC``, or 30 s without systemd's
watchdog) is killed and restarted like a crashed one, so a hung worker costs its own restart,
not the whole relay's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import trio
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from relay.addresses import HostPort
from relay.config import Config, load, to_document
from relay.errors import EX_CONFIG, EX_OK, ConfigError
from relay.metrics import client_registry, expose, serve_http
from relay.service import wait_for_stop_signal
from relay.status import Document, merge
from relay.systemd import (
    READY,
    STOPPING,
    Notifier,
    ping_watchdog,
    status,
    watchdog_timeout,
    without_notify,
)

log = logging.getLogger(__name__)

READY_PREFIX = b"relay-worker-ready metrics_port="
HEARTBEAT = b"relay-worker-alive"
HEARTBEAT_INTERVAL = 1.0
# A worker whose heartbeat is this much overdue is hung (without systemd's watchdog).
HANG_TIMEOUT = 30.0
# Never less than this many heartbeats: one late line must not kill a healthy worker.
MIN_HANG_HEARTBEATS = 5
RESTART_DELAY = 1.0


@dataclass(slots=True)
class _Worker:
    index: int
    process: trio.Process | None = None
    metrics_port: int | None = None
    restarts: int = 0
    ready: trio.Event = field(default_factory=trio.Event)
    # trio.current_time() of its last heartbeat (or ready line).
    alive_at: float = 0.0


def worker_argv(index: int) -> list[str]:
    """The command line of worker ``index``; its configuration comes on stdin
    (:func:`worker_document`)."""
    return [sys.executable, "-m", "relay", "run", "--worker-index", str(index)]


def worker_document(config: Config) -> bytes:
    """What the supervisor writes to each worker's stdin: the configuration it resolved
    (file, flags, environment), as a document :func:`relay.config.load` reads back to the
    same value. Every worker, restarted ones included, runs with exactly the configuration the
    supervisor started with, even if the file has changed since; no argv is re-parsed."""
    return json.dumps(to_document(config)).encode()


def worker_config(text: str, index: int) -> Config:
    """A worker's configuration from the document on its stdin."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"worker {index}: the supervisor's configuration is not JSON: {exc}"
        ) from None
    return as_worker(load(document, environ={}), index)


async def worker_heartbeat(stop: trio.Event) -> None:
    """In a worker: the line that tells the supervisor its event loop still turns, until the
    worker stops (the supervisor does not look for it while its workers drain)."""
    while not stop.is_set():
        sys.stdout.buffer.write(HEARTBEAT + b"\n")
        sys.stdout.flush()
        with trio.move_on_after(HEARTBEAT_INTERVAL):
            await stop.wait()


async def run_supervisor(config: Config) -> int:
    workers = [_Worker(index=i) for i in range(config.listen.workers)]
    document = worker_document(config)
    stopping = trio.Event()
    config_error = trio.Event()
    notify = Notifier.from_environ()
    hang_timeout = max(
        watchdog_timeout(os.environ, os.getpid()) or HANG_TIMEOUT,
        MIN_HANG_HEARTBEATS * HEARTBEAT_INTERVAL,
    )
    try:
        return await _supervise(
            config,
            workers,
            document=document,
            stopping=stopping,
            config_error=config_error,
            notify=notify,
            hang_timeout=hang_timeout,
        )
    finally:
        notify.close()


async def _supervise(
    config: Config,
    workers: Sequence[_Worker],
    *,
    document: bytes,
    stopping: trio.Event,
    config_error: trio.Event,
    notify: Notifier,
    hang_timeout: float,
) -> int:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_workers, workers, stopping, notify, hang_timeout)
        if notify.watchdog_period is not None:
            nursery.start_soon(ping_watchdog, notify, notify.watchdog_period)
        for worker in workers:
            nursery.start_soon(_keep_running, worker, document, stopping, config_error)
        if (address := config.metrics.address) is not None:
            total = MetricsSum()
            nursery.start_soon(_refresh_forever, workers, total)
            await nursery.start(
                partial(
                    serve_http,
                    total,
                    address.host,
                    address.port,
                    health=lambda: _health(workers, stopping),
                    status=total.status_json,
                )
            )
        log.info(
            f"supervising {config.listen.workers} workers",
            extra={"event": "workers_started", "workers": config.listen.workers},
        )
        async with trio.open_nursery() as waiter:

            async def on_signal() -> None:
                await wait_for_stop_signal(on_hangup=partial(_pass_hangup, workers))

            for fn in (on_signal, config_error.wait):
                waiter.start_soon(_first_of, fn, waiter.cancel_scope)
        stopping.set()
        notify.send(STOPPING + status("draining the workers"))
        for worker in workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        # Each worker drains within its forward.drain_timeout; give them that and a margin.
        with trio.move_on_after(config.forward.drain_timeout + 15):
            for worker in workers:
                if worker.process is not None:
                    await worker.process.wait()
        for worker in workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.kill()
        nursery.cancel_scope.cancel()
    return EX_CONFIG if config_error.is_set() else EX_OK


def _pass_hangup(workers: Sequence[_Worker]) -> None:
    """SIGHUP to each worker that is up: each re-reads the certificate files itself (one worker
    may refuse a set another took, if the files change between them; each says so). A
    worker still starting has no handler yet, and would die of it."""
    for worker in workers:
        process = worker.process
        if worker.ready.is_set() and process is not None and process.returncode is None:
            process.send_signal(signal.SIGHUP)


async def _watch_workers(
    workers: Sequence[_Worker], stopping: trio.Event, notify: Notifier, hang_timeout: float
) -> None:
    """READY=1 once every worker is up, STATUS= with how many are, and a hung worker (no
    heartbeat for ``hang_timeout``) killed: :func:`_keep_running` restarts it."""
    said_ready = False
    while True:
        await trio.sleep(HEARTBEAT_INTERVAL)
        now = trio.current_time()
        for worker in workers:
            process = worker.process
            if (
                not stopping.is_set()
                and worker.ready.is_set()
                and process is not None
                and process.returncode is None
                and now - worker.alive_at > hang_timeout
            ):
                log.error(
                    f"worker {worker.index} has not answered for {now - worker.alive_at:.0f} s; "
                    "killing it to restart it",
                    extra={"event": "worker_hung", "worker": worker.index},
                )
                process.kill()
        up = sum(1 for w in workers if w.ready.is_set() and w.process is not None)
        text = f"workers_up={up}/{len(workers)}"
        if not said_ready and up == len(workers):
            said_ready = True
            notify.send(READY + status(text))
        elif notify.enabled:
            notify.send(status(text))


async def _first_of(fn: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await fn()
    scope.cancel()


async def _keep_running(
    worker: _Worker, document: bytes, stopping: trio.Event, config_error: trio.Event
) -> None:
    while not stopping.is_set():
        worker.ready = trio.Event()
        async with trio.open_nursery() as nursery:
            process = await trio.lowlevel.open_process(
                worker_argv(worker.index),
                stdout=subprocess.PIPE,
                stdin=subprocess.PIPE,
                env=without_notify(os.environ),
            )
            worker.process = process
            await _send_document(process, document)
            nursery.start_soon(_read_ready, worker, process)
            code = await process.wait()
            nursery.cancel_scope.cancel()
        worker.metrics_port = None
        if stopping.is_set():
            return
        if code == EX_CONFIG:
            log.error(
                f"worker {worker.index} cannot start with this configuration; stopping",
                extra={"event": "worker_config_error", "worker": worker.index},
            )
            config_error.set()
            return
        worker.restarts += 1
        log.error(
            f"worker {worker.index} exited with status {code}; restarting it",
            extra={"event": "worker_restart", "worker": worker.index, "status": code},
        )
        await trio.sleep(min(30.0, RESTART_DELAY * worker.restarts))


async def _send_document(process: trio.Process, document: bytes) -> None:
    assert process.stdin is not None
    # A worker that died before reading it is seen, and restarted, by process.wait().
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await process.stdin.send_all(document)
    await process.stdin.aclose()


async def _read_ready(worker: _Worker, process: trio.Process) -> None:
    assert process.stdout is not None
    buffer = b""
    async for chunk in process.stdout:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line == HEARTBEAT:
                worker.alive_at = trio.current_time()
            elif line.startswith(READY_PREFIX):
                worker.metrics_port = int(line[len(READY_PREFIX) :])
                worker.alive_at = trio.current_time()
                worker.ready.set()


def _health(workers: Sequence[_Worker], stopping: trio.Event) -> tuple[bool, str]:
    up = sum(1 for w in workers if w.metrics_port is not None)
    ok = up == len(workers) and not stopping.is_set()
    return ok, f"{'ok' if ok else 'degraded'} workers_up={up}/{len(workers)}"


class MetricsSum(Collector):
    """The sum of every worker's samples (:meth:`update`), exposed with the supervisor's own
    process metrics (a worker's ``process_*`` are its own, and are not summed)."""

    def __init__(self) -> None:
        self._families: list[Metric] = []
        self._statuses: list[Document] = []
        self._client = client_registry(self)

    def update(self, texts: Sequence[str], statuses: Sequence[str] = ()) -> None:
        """Replace the sum with that of the workers' expositions ``texts``, and the status
        with the merge of their /status documents ``statuses`` (one that does not parse,
        a worker cut off mid-answer, is left out)."""
        self._families = sum_expositions(texts)
        docs = []
        for text in statuses:
            try:
                doc = json.loads(text)
            except ValueError:
                continue
            if isinstance(doc, dict) and "pipeline" in doc:
                docs.append(doc)
        self._statuses = docs

    def status_json(self) -> bytes:
        """The workers' /status merged (relay.status.merge), as of the last refresh."""
        return json.dumps(merge(self._statuses, time.time())).encode()

    def collect(self) -> list[Metric]:
        return self._families

    def exposition(self, accept: str) -> tuple[bytes, str]:
        return expose(self._client, accept)

    def render(self) -> str:
        return generate_latest(self._client).decode()


async def _refresh_forever(workers: Sequence[_Worker], total: MetricsSum) -> None:
    """Scrape the workers once a second, so a scrape of the supervisor never waits on one."""
    while True:
        ports = [w.metrics_port for w in workers if w.metrics_port is not None]
        texts = [await trio.to_thread.run_sync(_scrape, port) for port in ports]
        statuses = [await trio.to_thread.run_sync(_scrape, port, "/status") for port in ports]
        total.update(texts, statuses)
        await trio.sleep(1.0)


def _scrape(port: int, path: str = "/metrics") -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


MAXIMA = frozenset(
    {"flowrelay_spool_oldest_pending_seconds", "flowrelay_exporter_last_seen_timestamp_seconds"}
)
"""Gauges whose total over the workers is their maximum (the oldest line of all spools; an
exporter was last seen when any worker last saw it)."""
MINIMA = frozenset({"flowrelay_exporter_silent"})
"""Gauges whose total is their minimum: an exporter is silent only if silent on every worker
that knows it (datagrams that reached another worker while its own was starting leave a row
there that falls silent)."""


def sum_expositions(texts: Sequence[str]) -> list[Metric]:
    """The families of the text expositions ``texts``, each series summed over them.

    Counters and gauges only (all the relay has); a worker's ``process_*`` families are
    left out, and so is an exposition that does not parse (a worker cut off mid-answer). An
    age is not a sum: for the families in :data:`MAXIMA` the largest value is taken.
    """
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError:
            log.warning("a worker's /metrics did not parse", extra={"event": "worker_scrape"})
            continue
        for family in parsed:
            if family.name.startswith("process_") or family.type not in ("counter", "gauge"):
                continue
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                sums[family.name] = {}
            series = sums[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                if key not in series:
                    series[key] = sample.value
                elif family.name in MAXIMA:
                    series[key] = max(series[key], sample.value)
                elif family.name in MINIMA:
                    series[key] = min(series[key], sample.value)
                elif family.name.endswith("_timestamp_seconds"):
                    # A moment, not a count: the earliest is what needs attention (a worker
                    # that refused a reload still holds the older certificate).
                    series[key] = min(series[key], sample.value)
                else:
                    series[key] += sample.value
    for name, metric in families.items():
        for (sample_name, labels), value in sorted(sums[name].items()):
            metric.add_sample(sample_name, dict(labels), value)
    return list(families.values())


def as_worker(config: Config, index: int) -> Config:
    """Worker ``index``'s view of the configuration: its own spool, a private metrics port
    (the supervisor serves the public one), sockets shared with SO_REUSEPORT."""
    return replace(
        config,
        spool=replace(config.spool, directory=config.spool.directory / f"worker-{index}"),
        metrics=replace(config.metrics, address=HostPort(host="127.0.0.1", port=0)),
    )
