"""A silently blackholed endpoint, against real processes (issue 10 item 11).

Everything runs in a network namespace of its own, on its loopback: two TLS syslog
endpoints (relay.testing.sink in child processes), a real ``relay run`` with the default
forwarding settings, and an exporter. An nftables rule inside the namespace then drops
every packet to and from the first endpoint's port: no reset, no FIN, bytes stuck
unacknowledged. The relay must be delivering to the second endpoint within 30 s, whether
the link was busy or idle when the blackhole began, and lose nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.relayproc import REPO, RelayProcess, relay_processes, tls_args

from relay.certs import TlsFiles

PRIMARY, SECONDARY = 6514, 6515
FAILOVER_BUDGET = 30.0

_SINK = """
import sys, trio
from pathlib import Path
from relay.certs import server_context
from relay.testing.sink import SyslogSink

cert, key, ca, port, out = sys.argv[1:6]
out = Path(out)

async def main():
    lines = (out / "lines").open("ab", buffering=0)
    sink = SyslogSink(
        ssl_context=server_context(cert=Path(cert), key=Path(key), client_ca=Path(ca)),
        port=int(port),
        keep_lines=0,
        on_line=lambda line: lines.write(line + b"\\n"),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        (out / "ready").touch()
        while True:
            accepted = sink.statistics().connections_accepted
            (out / "accepted.tmp").write_text(str(accepted))
            (out / "accepted.tmp").replace(out / "accepted")
            await trio.sleep(0.05)

trio.run(main)
"""

_EXPORTER = """
import socket, sys, time
from pathlib import Path
from support.netflow_builder import Header, Record, datagram

port, first, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[5])
stop_file, rate = Path(sys.argv[3]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
seq = first
began = time.monotonic()
sent = 0
# Each record is unique (packets = its number), 30 per datagram, until told to stop.
while (count and sent < count) or (not count and not stop_file.exists()):
    records = [Record(src_addr="10.1.2.3", dst_addr="192.168.1.1", packets=seq + i, bytes=100,
                      protocol=6, src_port=1234, dst_port=443) for i in range(30)]
    sock.sendto(datagram(5, records, header=Header(flow_sequence=seq, unix_secs=1_700_000_000)),
                ("127.0.0.1", port))
    seq += 30
    sent += 1
    delay = began + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(seq - first, flush=True)
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


def _unavailable() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "network namespaces need root on Linux"
    if shutil.which("ip") is None or shutil.which("nft") is None:
        return "needs ip (iproute2) and nft (nftables; tests/setup.sh installs it)"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    name = f"flowrelay-{uuid.uuid4().hex[:8]}"
    try:
        _run("ip", "netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        probe = subprocess.run(
            ["ip", "netns", "exec", name, "nft", "list", "ruleset"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip(f"nftables is not usable here: {probe.stderr.strip()}")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)


def _in(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PYTHONUNBUFFERED": "1"}


@dataclass
class Sink:
    directory: Path
    process: subprocess.Popen[bytes]

    def accepted(self) -> int:
        try:
            return int((self.directory / "accepted").read_text() or 0)
        except FileNotFoundError:
            return 0

    def lines(self) -> list[bytes]:
        return (self.directory / "lines").read_bytes().splitlines()


@contextlib.contextmanager
def sinks(ns: str, tmp_path: Path, tls_server: TlsFiles, tls_ca: TlsFiles) -> Iterator[list[Sink]]:
    made: list[Sink] = []
    try:
        for port in (PRIMARY, SECONDARY):
            directory = tmp_path / f"sink-{port}"
            directory.mkdir()
            (directory / "lines").touch()
            args = [str(tls_server.cert), str(tls_server.key), str(tls_ca.ca), str(port)]
            with (directory / "stderr").open("wb") as stderr:
                process = subprocess.Popen(
                    _in(ns, sys.executable, "-c", _SINK, *args, str(directory)),
                    env=_env(),
                    stderr=stderr,
                )
            made.append(Sink(directory, process))
        for sink in made:
            wait_until(lambda s=sink: (s.directory / "ready").exists(), 15, "sink ready")
        yield made
    finally:
        for sink in made:
            sink.process.kill()
            sink.process.wait(timeout=10)


def wait_until(predicate: object, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held (polled every 50 ms, at most ``timeout``)."""
    assert callable(predicate)
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic() - began


def blackhole(ns: str, port: int) -> None:
    drop = f"tcp dport {port} drop; tcp sport {port} drop;"
    rules = (
        "table inet blackhole {\n"
        f"  chain out {{ type filter hook output priority 0; {drop} }}\n"
        f"  chain in {{ type filter hook input priority 0; {drop} }}\n"
        "}\n"
    )
    subprocess.run(_in(ns, "nft", "-f", "-"), input=rules, text=True, check=True, timeout=30)


def export(
    ns: str, port: int, first: int, *, count: int, stop: Path, rate: float = 50.0
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _in(
            ns,
            sys.executable,
            "-c",
            _EXPORTER,
            str(port),
            str(first),
            str(stop),
            str(rate),
            str(count),
        ),
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


def start_relay(
    ns: str,
    tmp_path: Path,
    tls_ca: TlsFiles,
    tls_client: TlsFiles,
    *,
    ports: tuple[int, ...] = (PRIMARY, SECONDARY),
    config: str = "",
) -> RelayProcess:
    (tmp_path / "relay.toml").write_text(config)
    relay = RelayProcess(
        [
            "-c",
            str(tmp_path / "relay.toml"),
            "--listen",
            "127.0.0.1:0",
            *(arg for port in ports for arg in ("--endpoint", f"127.0.0.1:{port}")),
            *tls_args(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key),
            "--spool",
            str(tmp_path / "spool"),
            "--metrics",
            "off",
            "--log-format",
            "json",
        ],
        tmp_path / "relay.log",
    )
    relay.args = _in(ns, *relay.args)
    return relay


def distinct(sinks_: list[Sink]) -> set[bytes]:
    return {line for sink in sinks_ for line in sink.lines()}


@pytest.mark.parametrize("traffic", ["busy", "idle"])
def test_a_blackholed_endpoint_is_left_for_the_next_within_30_s_losing_nothing(
    netns: str,
    tmp_path: Path,
    tls_ca: TlsFiles,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
    traffic: str,
) -> None:
    with (
        sinks(netns, tmp_path, tls_server, tls_ca) as (primary, secondary),
        relay_processes() as made,
    ):
        relay = start_relay(netns, tmp_path, tls_ca, tls_client)
        made.append(relay)
        relay.start()
        stop = tmp_path / "stop-exporting"
        exporters: list[subprocess.Popen[str]] = []
        try:
            if traffic == "busy":
                exporters.append(export(netns, relay.udp_port, 0, count=0, stop=stop))
                wait_until(lambda: len(primary.lines()) >= 3000, 20, "lines at the primary")
            else:
                exporters.append(export(netns, relay.udp_port, 0, count=100, stop=stop))
                wait_until(lambda: len(primary.lines()) == 3000, 20, "lines at the primary")
                time.sleep(1.0)  # acknowledged and committed; the link is idle
            blackhole(netns, PRIMARY)
            failover = wait_until(
                lambda: secondary.accepted() > 0, FAILOVER_BUDGET + 30, "connection to the second"
            )
            if traffic == "busy":
                wait_until(lambda: len(secondary.lines()) > 0, 10, "lines at the second")
                stop.touch()
            else:
                exporters.append(export(netns, relay.udp_port, 3000, count=100, stop=stop))
            total = sum(int(e.communicate(timeout=30)[0].strip()) for e in exporters)
        finally:
            stop.touch()
            for exporter in exporters:
                exporter.kill()
                exporter.communicate(timeout=10)
        wait_until(lambda: len(distinct([primary, secondary])) >= total, 30, "every line")
        assert failover < FAILOVER_BUDGET, relay.log_tail()
        assert len(distinct([primary, secondary])) == total
        assert relay.events("forward_connected")[-1]["endpoint"] == f"127.0.0.1:{SECONDARY}"


def test_sigterm_with_a_stalled_but_connected_endpoint_exits_within_drain_timeout(
    netns: str,
    tmp_path: Path,
    tls_ca: TlsFiles,
    tls_server: TlsFiles,
    tls_client: TlsFiles,
) -> None:
    """Issue 10 item 14: the drain and the clean close after it share one drain_timeout, so
    the unit's TimeoutStopSec= holds. The stall timeout is long: the link stays connected."""
    drain_timeout = 4.0
    config = f"[forward]\ndrain_timeout = {drain_timeout}\nstall_timeout = 600.0\n"
    with sinks(netns, tmp_path, tls_server, tls_ca) as (primary, _), relay_processes() as made:
        relay = start_relay(netns, tmp_path, tls_ca, tls_client, ports=(PRIMARY,), config=config)
        made.append(relay)
        relay.start()
        stop = tmp_path / "stop-exporting"
        exporter = export(netns, relay.udp_port, 0, count=0, stop=stop)
        try:
            wait_until(lambda: len(primary.lines()) >= 3000, 20, "lines at the endpoint")
            blackhole(netns, PRIMARY)
            time.sleep(1.0)  # lines keep coming, and stay unacknowledged
            began = time.monotonic()
            code = relay.terminate(timeout=4 * drain_timeout)
            took = time.monotonic() - began
        finally:
            stop.touch()
            exporter.kill()
            exporter.communicate(timeout=10)
    assert code == 0, relay.log_tail()
    # The drain, then a close that gets only what is left (plus start-up of the stop).
    assert took < drain_timeout + 1.5, f"exit took {took:.1f} s with drain_timeout = 4 s"
