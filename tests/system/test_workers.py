"""``workers = 2``: two relay processes on one port, supervised, metrics summed."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from relay.certs import TlsFiles, certificate_not_after, server_context
from relay.testing.ports import free_port
from relay.testing.prometheus import parse_metrics
from relay.testing.sink import SyslogSink
from relay.testing.synth import SyntheticExporter

DATAGRAMS = 40
RECORDS = 30


def _run_args(
    tmp_path: Path, tls_ca: TlsFiles, tls_client: TlsFiles, ports: tuple[int, int, int]
) -> list[str]:
    udp_port, sink_port, metrics_port = ports
    return [
        "--workers", "2",
        "--listen", f"127.0.0.1:{udp_port}", "--endpoint", f"127.0.0.1:{sink_port}",
        "--ca", str(tls_ca.ca), "--cert", str(tls_client.cert),
        "--key", str(tls_client.key), "--server-name", "localhost",
        "--spool", str(tmp_path / "spool"), "--metrics", f"127.0.0.1:{metrics_port}",
    ]  # fmt: skip


@contextlib.contextmanager
def _supervisor(args: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``relay run ARGS`` with its log in ``log_path``; killed on the way out if still up."""
    with log_path.open("wb") as log_file:
        relay = subprocess.Popen([sys.executable, "-m", "relay", "run", *args], stderr=log_file)
        try:
            yield relay
        finally:
            if relay.poll() is None:
                relay.kill()
                relay.wait()


async def _workers_up(metrics: str) -> None:
    await _wait_for(
        lambda: _get(f"{metrics}/healthz")[1].startswith("ok workers_up=2/2"),
        20,
        "both workers up",
    )


async def _stop(relay: subprocess.Popen[bytes]) -> None:
    relay.send_signal(signal.SIGTERM)
    code = await trio.to_thread.run_sync(lambda: relay.wait(timeout=40))
    assert code == 0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _metric(text: str, name: str) -> float:
    return parse_metrics(text).total(name)


async def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = trio.current_time() + timeout
    while not await trio.to_thread.run_sync(predicate):
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await trio.sleep(0.2)


def _worker_pids(supervisor: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(supervisor)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
async def test_two_workers_share_the_port_and_survive_a_worker_crash(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    sink = SyslogSink(
        ssl_context=server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    )
    udp_port, metrics_port = free_port(kind=socket.SOCK_DGRAM), free_port()
    metrics = f"http://127.0.0.1:{metrics_port}"
    async with trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        args = _run_args(tmp_path, tls_ca, tls_client, (udp_port, sink_port, metrics_port))
        with _supervisor(args, tmp_path / "relay.log") as relay:
            await _workers_up(metrics)
            exporter = SyntheticExporter(rng=random.Random(5), boot_time=time.time() - 60)
            for _ in range(DATAGRAMS):
                # A new socket per datagram: new source ports spread over both workers.
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(exporter.datagram(5, RECORDS, time.time()), ("127.0.0.1", udp_port))
            expected = DATAGRAMS * RECORDS
            await sink.wait_until(lambda st: st.lines >= expected, timeout=20)
            assert sorted(os.listdir(tmp_path / "spool")) == ["worker-0", "worker-1"]

            def summed() -> bool:
                text = _get(f"{metrics}/metrics")[1]
                return _metric(text, "flowrelay_lines_forwarded_total") == expected

            await _wait_for(summed, 10, "aggregated metrics")
            text = _get(f"{metrics}/metrics")[1]
            assert _metric(text, "flowrelay_records_decoded_total") == expected
            assert _metric(text, "flowrelay_packets_received_total") == DATAGRAMS
            # A moment, not a count: both workers' expiry is the certificate's, not twice it.
            assert (
                _metric(text, "flowrelay_tls_client_certificate_expiry_timestamp_seconds")
                == certificate_not_after(tls_client.cert).timestamp()
            )

            victim = _worker_pids(relay.pid)[0]
            os.kill(victim, signal.SIGKILL)
            await _wait_for(
                lambda: (
                    victim not in _worker_pids(relay.pid)
                    and len(_worker_pids(relay.pid)) == 2
                    and _get(f"{metrics}/healthz")[0] == 200
                ),
                20,
                "the killed worker to be replaced",
            )
            await _stop(relay)
        nursery.cancel_scope.cancel()
    # At least once: the killed worker resends what its last persisted cursor had not
    # passed, so duplicates are allowed; every line arrived.
    assert sink.statistics().lines >= expected
    assert len(set(sink.lines)) == expected


@pytest.mark.slow
async def test_sighup_to_the_supervisor_is_logged_and_passed_on_and_every_worker_stays(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    sink = SyslogSink(
        ssl_context=server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    )
    udp_port, metrics_port = free_port(kind=socket.SOCK_DGRAM), free_port()
    metrics = f"http://127.0.0.1:{metrics_port}"
    log_path = tmp_path / "relay.log"

    def hangups() -> int:
        return log_path.read_text(errors="replace").count('"event": "sighup"')

    async with trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        args = _run_args(tmp_path, tls_ca, tls_client, (udp_port, sink_port, metrics_port))
        with _supervisor(args, log_path) as relay:
            await _workers_up(metrics)
            workers = sorted(_worker_pids(relay.pid))
            relay.send_signal(signal.SIGHUP)
            # The supervisor's line and one from each worker it passed the signal to.
            await _wait_for(lambda: hangups() == 3, 10, "three sighup log lines")
            await _wait_for(
                lambda: log_path.read_text(errors="replace").count('"event": "tls_reloaded"') == 2,
                10,
                "each worker reloaded",
            )
            await trio.sleep(0.5)
            assert relay.poll() is None
            assert sorted(_worker_pids(relay.pid)) == workers
            assert _get(f"{metrics}/healthz")[1].startswith("ok workers_up=2/2")

            exporter = SyntheticExporter(rng=random.Random(6), boot_time=time.time() - 60)
            for _ in range(DATAGRAMS):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(exporter.datagram(5, RECORDS, time.time()), ("127.0.0.1", udp_port))
            await sink.wait_until(lambda st: st.lines >= DATAGRAMS * RECORDS, timeout=20)

            await _stop(relay)
        nursery.cancel_scope.cancel()
    assert hangups() == 3
    assert "worker_restart" not in log_path.read_text(errors="replace")


@pytest.mark.slow
async def test_a_restarted_worker_runs_with_the_supervisors_configuration_not_the_file_now(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    sink = SyslogSink(
        ssl_context=server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    )
    udp_port, metrics_port = free_port(kind=socket.SOCK_DGRAM), free_port()
    metrics = f"http://127.0.0.1:{metrics_port}"
    log_path = tmp_path / "relay.log"
    async with trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        config_file = tmp_path / "relay.toml"
        config_file.write_text(
            f'[listen]\naddresses = ["127.0.0.1:{udp_port}"]\nworkers = 2\n'
            f'[spool]\ndirectory = "{tmp_path / "spool"}"\n'
            f'[metrics]\naddress = "127.0.0.1:{metrics_port}"\n'
            f'[[endpoint]]\nhost = "127.0.0.1"\nport = {sink_port}\nca = "{tls_ca.ca}"\n'
            f'cert = "{tls_client.cert}"\nkey = "{tls_client.key}"\nserver_name = "localhost"\n'
        )
        with _supervisor(["-c", str(config_file)], log_path) as relay:
            await _workers_up(metrics)
            # The file changes (here: breaks) while the relay runs; a worker then crashes.
            config_file.write_text("[listen]\nworkers = 0\n")
            victim = _worker_pids(relay.pid)[0]
            os.kill(victim, signal.SIGKILL)
            await _wait_for(
                lambda: (
                    victim not in _worker_pids(relay.pid)
                    and len(_worker_pids(relay.pid)) == 2
                    and _get(f"{metrics}/healthz")[1].startswith("ok workers_up=2/2")
                ),
                20,
                "the killed worker to be replaced",
            )
            exporter = SyntheticExporter(rng=random.Random(7), boot_time=time.time() - 60)
            for _ in range(DATAGRAMS):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(exporter.datagram(5, RECORDS, time.time()), ("127.0.0.1", udp_port))
            await sink.wait_until(lambda st: st.lines >= DATAGRAMS * RECORDS, timeout=20)
            assert sorted(os.listdir(tmp_path / "spool")) == ["worker-0", "worker-1"]
            await _stop(relay)
        nursery.cancel_scope.cancel()
    assert "worker_config_error" not in log_path.read_text(errors="replace")
