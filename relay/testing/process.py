"""``relay run`` as a subprocess, for end-to-end tests and benchmarks.

:class:`RelayProcess` starts ``python -m relay run`` with JSON logs on stderr (kept in a file),
learns the UDP and metrics ports it bound from its ``started`` and ``metrics_listening`` log
events (tests pass port 0, so there is no race for a free port), scrapes ``/metrics``, and is
always reaped: ``close()`` (and the context manager) kills whatever is still running.

Its ``/metrics`` is read with :mod:`relay.testing.prometheus`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from relay.testing.prometheus import Scrape, parse_metrics

# The directory that holds the ``relay`` package this process imported: the child imports
# the same tree (a checkout under test, or site-packages).
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 15.0


def http_get(
    port: int, path: str, *, host: str = LOOPBACK, timeout: float = 5.0
) -> tuple[int, str]:
    """(status, body) of ``GET path`` over a plain socket: no HTTP library in between."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return _split_response(b"".join(chunks))


async def http_get_async(
    port: int,
    path: str,
    *,
    host: str = LOOPBACK,
    timeout: float = 5.0,
) -> tuple[int, str]:
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            chunks = []
            while chunk := await stream.receive_some(65536):
                chunks.append(chunk)
    return _split_response(b"".join(chunks))


def _split_response(data: bytes) -> tuple[int, str]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode()
    return int(status_line.split()[1]), body.decode()


# ---- the relay process ----------------------------------------------------------------------


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log objects in a relay's stderr file (other lines, if any, are skipped)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


def parse_summary(text: str) -> dict[str, int]:
    """The ``key=value`` numbers of the relay's stats / stopped summary line."""
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}


class RelayProcess:
    """``python -m relay run ARGS`` with stderr in ``log_file``.

    ``start()`` returns once the relay logged ``started`` (and ``metrics_listening`` unless
    ``--metrics off``); ``udp_port``/``metrics_port`` are what it bound.
    """

    def __init__(self, args: Sequence[str], log_file: Path) -> None:
        self.args = [sys.executable, "-m", "relay", "run", *args]
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self.udp_ports: list[int] = []
        self.metrics_port: int | None = None

    @property
    def udp_port(self) -> int:
        return self.udp_ports[0]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, timeout: float = START_TIMEOUT) -> RelayProcess:
        """Start and wait for the started event (blocking; see :meth:`start_async`)."""
        self._spawn()
        deadline = time.monotonic() + timeout
        while not self._ready():
            self._check_alive(timeout)
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"relay did not start within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.02)
        return self

    async def start_async(self, *, timeout: float = START_TIMEOUT) -> RelayProcess:
        self._spawn()
        deadline = trio.current_time() + timeout
        while not self._ready():
            self._check_alive(timeout)
            if trio.current_time() > deadline:
                self.kill()
                raise TimeoutError(f"relay did not start within {timeout} s:\n{self.log_tail()}")
            await trio.sleep(0.02)
        return self

    def _spawn(self) -> None:
        if self.process is not None:
            raise RuntimeError("a RelayProcess starts once; make a new one to restart")
        env = {**os.environ, "PYTHONPATH": str(_PACKAGE_ROOT), "PYTHONUNBUFFERED": "1"}
        with self.log_file.open("ab") as stderr:
            self.process = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=_PACKAGE_ROOT,
                env=env,
                # Its own process group: a Ctrl-C meant for pytest does not hit it first.
                start_new_session=True,
            )

    def _check_alive(self, timeout: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"relay exited with {self.process.returncode} at start:\n{self.log_tail()}"
            )

    def _ready(self) -> bool:
        events = self.events()
        started = [e for e in events if e.get("event") == "started"]
        if not started:
            return False
        self.udp_ports = [int(a.rsplit(":", 1)[1]) for a in started[-1]["listen"].split(", ")]
        want_metrics = "off" not in self.args
        metrics = [e for e in events if e.get("event") == "metrics_listening"]
        if metrics:
            self.metrics_port = int(metrics[-1]["address"].rsplit(":", 1)[1])
        return bool(metrics) or not want_metrics

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        events = log_events(self.log_file)
        return events if name is None else [e for e in events if e.get("event") == name]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def scrape(self) -> Scrape:
        assert self.metrics_port is not None, "started with --metrics off"
        status, body = http_get(self.metrics_port, "/metrics")
        assert status == 200, f"/metrics answered {status}: {body}"
        return parse_metrics(body)

    async def scrape_async(self) -> Scrape:
        assert self.metrics_port is not None, "started with --metrics off"
        status, body = await http_get_async(self.metrics_port, "/metrics")
        assert status == 200, f"/metrics answered {status}: {body}"
        return parse_metrics(body)

    def wait_metric(self, name: str, value: float, *, timeout: float) -> Scrape:
        """Scrape until the sum of ``name`` over its labels equals ``value``."""
        deadline = time.monotonic() + timeout
        while True:
            scraped = self.scrape()
            if scraped.total(name) == value:
                return scraped
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name} is {scraped.total(name)}, not {value}, after {timeout} s"
                )
            time.sleep(0.02)

    async def wait_metric_async(
        self,
        name: str,
        value: float,
        *,
        timeout: float,
    ) -> Scrape:
        deadline = trio.current_time() + timeout
        while True:
            scraped = await self.scrape_async()
            if scraped.total(name) == value:
                return scraped
            if trio.current_time() > deadline:
                raise TimeoutError(
                    f"{name} is {scraped.total(name)}, not {value}, after {timeout} s"
                )
            await trio.sleep(0.02)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def terminate(self, *, timeout: float) -> int:
        """SIGTERM and wait; TimeoutError (after killing it) when it does not exit in time."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout=timeout)

    def wait(self, *, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"relay did not exit within {timeout} s:\n{self.log_tail()}"
            ) from None

    async def wait_async(self, *, timeout: float) -> int:
        assert self.process is not None
        deadline = trio.current_time() + timeout
        while (code := self.process.poll()) is None:
            if trio.current_time() > deadline:
                self.kill()
                raise TimeoutError(f"relay did not exit within {timeout} s:\n{self.log_tail()}")
            await trio.sleep(0.02)
        return code

    def kill(self) -> None:
        """SIGKILL and reap; a no-op once it has exited."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)

    close = kill

    def __enter__(self) -> RelayProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def relay_processes() -> Iterator[list[RelayProcess]]:
    """A list to put every started relay in; each is killed on the way out, pass or fail."""
    made: list[RelayProcess] = []
    try:
        yield made
    finally:
        for relay in made:
            relay.close()


def tls_args(*, ca: Path, cert: Path, key: Path, server_name: str = "localhost") -> list[str]:
    return [
        "--ca",
        str(ca),
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--server-name",
        server_name,
    ]
