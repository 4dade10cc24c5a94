"""Test helpers that run real NetFlow exporters from Debian (softflowd, fprobe, pmacct's
pmacctd with its nfprobe plugin) against a UDP socket the test owns on 127.0.0.1, and collect
what they send.

Every wait is bounded and every process is reaped, also when a test fails half way.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"
# Debian installs both exporters in /usr/sbin, which is not on every user's PATH.
_SBIN_PATH = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))


def find_binary(name: str) -> str | None:
    """The exporter's path, looking in the sbin directories as well as PATH."""
    return shutil.which(name, path=os.pathsep.join((os.environ.get("PATH", ""), _SBIN_PATH)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """One datagram as the collector socket got it: when, from whom, what."""

    timestamp_ns: int
    src: tuple[str, int]
    payload: bytes


class UdpCollector:
    """A UDP socket on 127.0.0.1 playing the NetFlow collector."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Exporters send in bursts; keep the kernel from dropping any while the test sleeps.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._sock.bind((LOOPBACK, 0))
        self.address: tuple[str, int] = self._sock.getsockname()
        self.received: list[Received] = []

    @property
    def port(self) -> int:
        return self.address[1]

    def __enter__(self) -> UdpCollector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def receive(self, *, until_idle: float, deadline: float) -> list[Received]:
        """Take datagrams until none came for ``until_idle`` seconds, or ``deadline``
        (a ``time.monotonic()`` value) passed. Returns what arrived during this call."""
        got: list[Received] = []
        while True:
            now = time.monotonic()
            wait = min(until_idle, deadline - now)
            if wait <= 0:
                break
            readable, _, _ = select.select([self._sock], [], [], wait)
            if not readable:
                break
            payload, src = self._sock.recvfrom(65535)
            got.append(Received(timestamp_ns=time.time_ns(), src=src, payload=payload))
        self.received.extend(got)
        return got

    def receive_until(
        self, predicate: Callable[[list[Received]], bool], *, deadline: float
    ) -> list[Received]:
        """Take datagrams until ``predicate(all taken in this call)`` holds or ``deadline``
        (a ``time.monotonic()`` value) passed; returns them."""
        got: list[Received] = []
        while not predicate(got):
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            readable, _, _ = select.select([self._sock], [], [], wait)
            if not readable:
                break
            payload, src = self._sock.recvfrom(65535)
            got.append(Received(timestamp_ns=time.time_ns(), src=src, payload=payload))
        self.received.extend(got)
        return got


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftflowdRun:
    returncode: int
    stdout: str
    stderr: str
    started_ns: int
    finished_ns: int
    pid: int = 0  # IPFIX softflowd exports it as meteringProcessId


def run_softflowd(
    binary: str,
    capture: Path,
    collector: tuple[str, int],
    *,
    version: int,
    sampling: int | None = None,
    timeout: float = 20.0,
) -> SoftflowdRun:
    """Run ``softflowd -r CAPTURE -n HOST:PORT -v VERSION [-s SAMPLING]`` to its end.

    Reading a file, softflowd stays in the foreground and expires flows only when its table
    is full (``-m``, 8192 flows); at end of file it flushes every flow it tracks, so each flow
    of a small capture is exported exactly once, whatever its timeouts. No ``-c``/``-p``:
    ``-r`` turns the control socket off, and a ``-c`` given after it turns it back on, after
    which softflowd 1.1.0 blocks in accept() instead of exiting. ``-s N`` samples the 1st,
    (N+1)th, ... packet of the capture (systematic count-based sampling).
    """
    cmd = [binary, "-r", str(capture), "-n", f"{collector[0]}:{collector[1]}", "-v", str(version)]
    if sampling is not None:
        cmd += ["-s", str(sampling)]
    started = time.time_ns()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            raise
    return SoftflowdRun(
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        started_ns=started,
        finished_ns=time.time_ns(),
        pid=proc.pid,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PmacctRun:
    returncode: int
    log: str
    started_ns: int
    finished_ns: int

    @property
    def finished(self) -> bool:
        """Whether pmacctd read its capture to the end and its nfprobe plugin shut down
        cleanly. pmacctd 1.7.7 exits 1 when that plugin ends before the core notices
        ("connection lost to 'default_nfprobe-nfprobe'"), a race seen in CI, though every
        flow was exported: the plugin's own "Shutting down on user request" says it was."""
        if self.returncode == 0:
            return True
        return (
            self.returncode == 1
            and "Shutting down on user request" in self.log
            and "connection lost to 'default_nfprobe-nfprobe'" in self.log
        )


def pmacctd_config(
    capture: Path,
    collector: tuple[str, int],
    *,
    version: int,
    sampling_rate: int | None = None,
    engine: int | None = None,
) -> str:
    """A pmacctd configuration: read ``capture`` once, export it with the nfprobe plugin.

    Timeouts of 1 s (the least nfprobe takes) so flows leave its cache within seconds; at
    the end of the file pmacctd stops and the plugin flushes what it still holds.
    ``sampling_rate: N`` samples packets at random, 1 in N on average (CONFIG-KEYS);
    ``nfprobe_engine: N`` makes N the v9 Source ID / IPFIX Observation Domain ID, so that
    several pmacctd on one address keep their templates apart at the collector.
    """
    lines = [
        "daemonize: false",
        "plugins: nfprobe",
        f"nfprobe_receiver: {collector[0]}:{collector[1]}",
        f"nfprobe_version: {version}",
        "nfprobe_timeouts: tcp=1:tcp.rst=1:tcp.fin=1:udp=1:icmp=1:general=1:maxlife=1:expint=1",
        f"pcap_savefile: {capture}",
    ]
    if sampling_rate is not None:
        lines.append(f"sampling_rate: {sampling_rate}")
    if engine is not None:
        lines.append(f"nfprobe_engine: {engine}")
    return "\n".join(lines) + "\n"


def run_pmacctd(
    binary: str,
    capture: Path,
    collector: tuple[str, int],
    *,
    version: int,
    config_dir: Path,
    sampling_rate: int | None = None,
    engine: int | None = None,
    timeout: float = 30.0,
) -> PmacctRun:
    """Run pmacctd over ``capture`` to its end (it sleeps 2 s before reading a savefile,
    then exits once the plugin flushed); its log (stderr) is kept with stdout."""
    config = config_dir / f"pmacctd-v{version}-{sampling_rate or 1}-{engine or 0}.conf"
    config.write_text(
        pmacctd_config(
            capture, collector, version=version, sampling_rate=sampling_rate, engine=engine
        )
    )
    started = time.time_ns()
    with subprocess.Popen(
        [binary, "-f", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # pmacctd forks its plugin: end the whole group it leads, nothing else.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
            raise
    return PmacctRun(
        returncode=proc.returncode, log=log, started_ns=started, finished_ns=time.time_ns()
    )


class Fprobe:
    """fprobe capturing live on an interface, in the foreground, until ``stop()``.

    ``-l 2`` logs to stdout, which also keeps fprobe from daemonising; the ident after the
    colon names its pid file (/var/run/fprobe[IDENT].pid) so parallel runs do not collide.
    """

    def __init__(
        self,
        binary: str,
        *,
        collector: tuple[str, int],
        interface: str,
        bpf_filter: str,
        version: int,
        extra_args: Sequence[str] = (),
        ident: str | None = None,
    ) -> None:
        self.ident = ident or f"flowrelay-test-{os.getpid()}-{time.monotonic_ns()}"
        self.cmd = [
            binary,
            "-i",
            interface,
            "-f",
            bpf_filter,
            "-n",
            str(version),
            "-l",
            f"2:{self.ident}",
            *extra_args,
            f"{collector[0]}:{collector[1]}",
        ]
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = bytearray()

    @property
    def log(self) -> str:
        return self._log.decode(errors="replace")

    @property
    def pidfile(self) -> Path:
        return Path("/var/run") / f"fprobe[{self.ident}].pid"

    def start(self, *, ready_timeout: float = 10.0) -> None:
        """Start fprobe and return once it logged its collector, which it does after the
        capture is open and the filter set: traffic sent from then on is seen."""
        self._proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + ready_timeout
        while b"collector #1" not in self._log:
            if self._proc.poll() is not None:
                self._read_available(0)
                raise RuntimeError(f"fprobe exited with {self._proc.returncode}: {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"fprobe not ready after {ready_timeout} s: {self.log}")
            self._read_available(0.1)

    def _read_available(self, wait: float) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        stdout = self._proc.stdout
        readable, _, _ = select.select([stdout], [], [], wait)
        if readable:
            chunk = os.read(stdout.fileno(), 65536)
            self._log += chunk

    def stop(self, *, timeout: float = 5.0) -> int:
        """SIGTERM (fprobe flushes its cache and exits), SIGKILL after ``timeout``.
        Returns the exit status."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            self._read_available(0.1)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)
            # Killed, it could not remove its pid file.
            with contextlib.suppress(OSError):
                self.pidfile.unlink()
        with contextlib.suppress(OSError, ValueError):
            self._read_available(0)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> Fprobe:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def reserved_port(kind: int = socket.SOCK_STREAM) -> Iterator[int]:
    """A port on 127.0.0.1 held by a bound (not listening) socket for the duration, so no
    other program's traffic can use it while a capture filter selects on it."""
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()
