"""Prometheus' own checker reads a running relay's /metrics: ``promtool check metrics`` (from
Debian's prometheus package) exits 0 and has nothing to say, for one relay and for the
workers supervisor's sum.

promtool 2.42 lints the text format 0.0.4 only (fed OpenMetrics, it reads each counter's
HELP line, which OpenMetrics writes without ``_total``, as missing): the OpenMetrics answer
is read by prometheus_client's OpenMetrics parser and the suite's strict reader instead, and
must hold the same series.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import trio
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from support.relayproc import LOOPBACK, RelayProcess, relay_processes

from relay.certs import TlsFiles
from relay.testing.ports import free_port
from relay.testing.prometheus import Scrape, parse_metrics
from relay.testing.synth import SyntheticExporter

from .test_spool_faults import relay_args, write_config
from .test_workers import _run_args, _stop, _supervisor, _wait_for, _workers_up

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def fetch(port: int, accept: str | None = None) -> tuple[str, str]:
    """(Content-Type, body) of GET /metrics, with ``accept`` as the Accept header if given."""
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as reply:
        return reply.headers["Content-Type"], reply.read().decode()


def promtool() -> str:
    """promtool's path; a failure, not a skip, without it: the check would silently go."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: tests/setup.sh installs Debian's prometheus package")
    return path


def promtool_check(text: str) -> None:
    result = subprocess.run(
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    complaints = (result.stdout + result.stderr).strip()
    assert (result.returncode, complaints) == (0, ""), complaints


def check_both_formats(port: int) -> Scrape:
    """promtool on the text format, the OpenMetrics parsers on OpenMetrics; the text scrape."""
    content_type, text = fetch(port)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    promtool_check(text)
    content_type, om = fetch(port, OPENMETRICS)
    assert content_type.startswith(OPENMETRICS)
    families = text_string_to_metric_families(om)  # type: ignore[no-untyped-call]
    names = {f.name for f in families}  # the parse raises on any fault
    assert "flowrelay_packets_received" in names
    # Values move between the two scrapes (CPU, memory); the series and their kinds do not.
    text_scrape, om_scrape = parse_metrics(text), parse_metrics(om, openmetrics=True)
    assert om_scrape.types == text_scrape.types
    assert set(om_scrape.samples) == set(text_scrape.samples)
    return text_scrape


def send_datagrams(port: int, count: int) -> None:
    exporter = SyntheticExporter(rng=random.Random(12), boot_time=time.time() - 60)
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(exporter.datagram(5, 30, time.time()), (LOOPBACK, port))
            s.sendto(b"\x00\x05\x00", (LOOPBACK, port))  # malformed: a labelled series too


def test_promtool_finds_nothing_to_lint_in_a_running_relays_metrics(
    tmp_path: Path, tls_client: TlsFiles
) -> None:
    with (
        relay_processes() as made,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved,
    ):
        reserved.bind((LOOPBACK, 0))  # the endpoint refuses: lines stay pending
        relay = RelayProcess(
            relay_args(write_config(tmp_path), tmp_path / "spool", reserved.getsockname()[1],
                       tls_client),
            tmp_path / "relay.log",
        )  # fmt: skip
        made.append(relay)
        relay.start()
        send_datagrams(relay.udp_port, 5)
        relay.wait_metric("flowrelay_spool_pending_lines", 150, timeout=10)
        assert relay.metrics_port is not None
        scrape = check_both_formats(relay.metrics_port)
        assert scrape.value("flowrelay_packets_received_total", version="5") == 10  # 5 bad
        assert scrape.total("flowrelay_packets_malformed_total") == 5
        assert scrape.value("flowrelay_spool_oldest_pending_seconds") > 0
        assert scrape.value("process_open_fds") > 0
        relay.signal(15)
        assert relay.wait(timeout=15) == 0, relay.log_tail()


@pytest.mark.slow
async def test_promtool_finds_nothing_to_lint_in_the_workers_sum(
    tmp_path: Path, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    udp_port, metrics_port = free_port(kind=socket.SOCK_DGRAM), free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved:
        reserved.bind((LOOPBACK, 0))
        ports = (udp_port, reserved.getsockname()[1], metrics_port)
        args = _run_args(tmp_path, tls_ca, tls_client, ports)
        with _supervisor(args, tmp_path / "relay.log") as relay:
            await _workers_up(f"http://{LOOPBACK}:{metrics_port}")
            send_datagrams(udp_port, 20)

            def summed() -> bool:
                text = fetch(metrics_port)[1]
                return parse_metrics(text).total("flowrelay_packets_received_total") == 40

            await _wait_for(summed, 10, "the workers' samples summed")
            scrape = await trio.to_thread.run_sync(check_both_formats, metrics_port)
            assert scrape.total("flowrelay_spool_pending_lines") == 600
            # The supervisor's own process metrics, once, not the workers' summed.
            assert scrape.value("process_start_time_seconds") > 0
            await _stop(relay)
