"""Debian's rsyslogd as the cloud platform: a TLS syslog receiver the tests start and stop.

Every instance is self-contained in its own directory: config file, pid file, work directory,
output files and rsyslogd's own log. It reads no system configuration (``-f CONF``), loads no
local inputs (no imuxsock, no imklog), writes nothing under /var, needs no root and drops no
privileges. The tests' fixture factory (tests/support/rsyslog.py) stops every process it started at
teardown, pass or fail; benchmarks use :class:`Rsyslog` directly.

The input is imtcp with the ``ossl`` stream driver (``gtls`` when rsyslog-openssl is not
installed), TLS only, mutual authentication by default with ``StreamDriver.AuthMode
x509/certvalid``: the client must present a certificate that chains to the CA and is within
its validity period, whatever its name. That is how the platform treats customers (it issued
their certificates), and it keeps this fixture independent of client certificate names. Pass
``permitted_peers`` to switch to ``x509/name``, which also requires the certificate's name
to be listed; that uses the gtls driver when installed, because ossl in rsyslog 8.2302 lets
some connections from peers that are not permitted through (rsyslog/rsyslog#6350).

Outputs, one message per line:

- ``raw.log`` with the template ``%rawmsg%``: exactly the message as received, without
  framing, header untouched by rsyslog's parser, so tests can compare byte for byte. rsyslog
  escapes control characters on receive (``parser.escapeControlCharactersOnReceive``, on by
  default as on a real platform): an LF inside an octet-counted message appears as ``#012``.
  A correct relay never sends control characters (JSON escapes them), so this only shows up
  when something is wrong.
- ``parsed.log``: what rsyslog's RFC 3164/5424 parser made of each message (pri, hostname,
  syslogtag, programname, msg) as one JSON object per line, so tests can check that the
  platform sees the tag and the JSON body as intended. For the RFC 3164 header ``%msg%``
  keeps the space after ``TAG:``; :meth:`Rsyslog.messages` strips it into ``body``. Writing
  it costs rsyslog about a third of its throughput: benchmarks pass ``parse=False``.

Ingest rate measured on this 2-core machine (ossl, 400-byte lines, a Python TLS sender with
1 MiB writes, raw.log only): about 240,000-280,000 lines/s, both framings alike; with
parsed.log as well, about 150,000-180,000 lines/s. gtls is within a few per cent of ossl.

Both framings of RFC 6587 are accepted: imtcp's ``SupportOctetCountedFraming`` is on by
default, and the tests check it.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import trio

from relay.certs import TlsFiles
from relay.testing.ports import free_port

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0
# Where Debian and other distributions keep rsyslog's loadable modules.
_MODULE_GLOBS = (
    "/usr/lib/*/rsyslog",
    "/usr/lib/rsyslog",
    "/usr/lib64/rsyslog",
    "/usr/local/lib/rsyslog",
)


# Every rsyslogd started and not yet stopped: a script that uses Rsyslog without the fixture
# and dies on an exception still takes its daemons with it.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_LIVE):
        if process.poll() is None:
            process.kill()
            process.wait()


def find_rsyslogd() -> str | None:
    """The rsyslogd binary; /usr/sbin is searched even when it is not on a user's PATH."""
    return shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")


def installed_drivers() -> list[Literal["ossl", "gtls"]]:
    """rsyslog's TLS stream drivers on this machine, ossl (rsyslog-openssl) first."""
    drivers: tuple[Literal["ossl", "gtls"], ...] = ("ossl", "gtls")
    return [
        driver
        for driver in drivers
        if any(glob.glob(os.path.join(p, f"lmnsd_{driver}.so")) for p in _MODULE_GLOBS)
    ]


def tls_driver() -> Literal["ossl", "gtls"] | None:
    """The TLS stream driver to use: ossl preferred, else gtls."""
    drivers = installed_drivers()
    return drivers[0] if drivers else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One message as rsyslog's parser understood it."""

    pri: int
    hostname: str
    tag: str  # syslogtag, e.g. "netstat.netflow.lt:" (RFC 3164 keeps the colon)
    programname: str  # the tag without the colon
    body: str  # the message after the header, leading space removed


class Rsyslog:
    """One rsyslogd process receiving syslog over TLS on ``host:port``.

    ``tls`` is the server's CA, certificate and key; clients are verified against ``tls.ca``
    when ``mutual`` is true. ``port=None`` picks a free port once; it is kept across
    :meth:`restart`. The output files survive restarts (rsyslog appends). ``parse=False``
    writes only raw.log (faster; :meth:`messages` then returns nothing).
    """

    def __init__(
        self,
        directory: Path,
        tls: TlsFiles,
        port: int | None = None,
        *,
        mutual: bool = True,
        host: str = "127.0.0.1",
        permitted_peers: Sequence[str] | None = None,
        driver: Literal["ossl", "gtls"] | None = None,
        parse: bool = True,
    ) -> None:
        binary = find_rsyslogd()
        if binary is None:
            raise FileNotFoundError("rsyslogd is not installed (apt-get install rsyslog)")
        chosen = driver or tls_driver()
        if permitted_peers and driver is None and "gtls" in installed_drivers():
            # rsyslog's ossl driver does not reliably enforce x509/name: measured here with
            # 8.2302, 5 of 10 connections from a peer that is not permitted got their messages
            # written (rsyslog/rsyslog#6350). gtls refused all of them.
            chosen = "gtls"
        if chosen is None:
            raise FileNotFoundError(
                "no rsyslog TLS driver is installed (apt-get install rsyslog-openssl)"
            )
        self.binary = binary
        self.driver: Literal["ossl", "gtls"] = chosen
        self.directory = directory
        self.tls = tls
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.mutual = mutual
        self.permitted_peers = tuple(permitted_peers or ())
        self.parse = parse
        self.config_file = directory / "rsyslog.conf"
        self.pid_file = directory / "rsyslogd.pid"
        self.work_dir = directory / "work"
        self.raw_file = directory / "raw.log"
        self.parsed_file = directory / "parsed.log"
        self.log_file = directory / "rsyslogd.log"  # rsyslogd's own messages
        self.stderr_file = directory / "rsyslogd.stderr"
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(exist_ok=True)
        self.config_file.write_text(self._config())

    # ---- life cycle -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start rsyslogd and return once its port accepts connections."""
        if self.running:
            raise RuntimeError("rsyslogd is already running")
        self.pid_file.unlink(missing_ok=True)
        with self.stderr_file.open("ab") as stderr:
            self._process = subprocess.Popen(
                [self.binary, "-n", "-f", str(self.config_file), "-i", str(self.pid_file)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self.directory,
                # Its own process group: a Ctrl-C meant for pytest does not reach it first, and
                # the fixture still stops it in order.
                start_new_session=True,
            )
        _LIVE.add(self._process)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"rsyslogd exited with status {self._process.returncode} at start:\n"
                    + self.diagnostics()
                )
            if self._port_accepts() and self._pid_written():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"rsyslogd did not listen on {self.host}:{self.port} within {_START_TIMEOUT:g} s:\n"
            + self.diagnostics()
        )

    def stop(self) -> None:
        """Stop rsyslogd (SIGTERM, SIGKILL after 10 s); a no-op when it is not running."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT)
        _LIVE.discard(process)
        self._process = None

    def kill(self) -> None:
        """SIGKILL, like a crashed platform: nothing is flushed or closed politely."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=_STOP_TIMEOUT)
        if self._process is not None:
            _LIVE.discard(self._process)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # Async forms for trio tests: waiting in a thread keeps the relay under test running.
    async def start_async(self) -> None:
        await trio.to_thread.run_sync(self.start)

    async def stop_async(self) -> None:
        await trio.to_thread.run_sync(self.stop)

    async def restart_async(self, *, downtime: float = 0.0) -> None:
        await trio.to_thread.run_sync(self.stop)
        await trio.sleep(downtime)
        await trio.to_thread.run_sync(self.start)

    # ---- output ---------------------------------------------------------------------------

    def raw_lines(self) -> list[bytes]:
        """Every message written so far, exactly as received (complete lines only)."""
        try:
            data = self.raw_file.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        return lines[:-1]  # the last piece is empty or a line rsyslog is still writing

    def lines(self) -> list[str]:
        """:meth:`raw_lines` as text (invalid UTF-8 kept as surrogate escapes)."""
        return [line.decode("utf-8", "surrogateescape") for line in self.raw_lines()]

    def messages(self) -> list[Message]:
        """Every message as rsyslog's parser split it into header fields and body."""
        try:
            data = self.parsed_file.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for raw in data.split(b"\n")[:-1]:
            fields = json.loads(raw.decode("utf-8", "surrogateescape"))
            msg: str = fields["msg"]
            out.append(
                Message(
                    pri=int(fields["pri"]),
                    hostname=fields["hostname"],
                    tag=fields["syslogtag"],
                    programname=fields["programname"],
                    body=msg.removeprefix(" "),
                )
            )
        return out

    def count(self) -> int:
        """How many messages have been written to every output file so far."""
        counts = [_count_lines(self.raw_file)]
        if self.parse:
            counts.append(_count_lines(self.parsed_file))
        return min(counts)

    def wait_lines_blocking(self, n: int, *, timeout: float) -> int:
        """Wait until at least ``n`` messages are written; TimeoutError says how many were."""
        deadline = time.monotonic() + timeout
        while (count := self.count()) < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(self._shortfall(count, n, timeout))
            time.sleep(0.02)
        return count

    async def wait_lines(self, n: int, *, timeout: float) -> int:
        """The async form of :meth:`wait_lines_blocking`, for trio tests."""
        deadline = trio.current_time() + timeout
        while (count := self.count()) < n:
            if trio.current_time() >= deadline:
                raise TimeoutError(self._shortfall(count, n, timeout))
            await trio.sleep(0.02)
        return count

    def diagnostics(self) -> str:
        """The tail of rsyslogd's own log and stderr, for failure messages."""
        parts = []
        for path in (self.log_file, self.stderr_file):
            with contextlib.suppress(FileNotFoundError):
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append(f"--- {path.name}:\n" + "\n".join(text.splitlines()[-20:]))
        return "\n".join(parts) or "(rsyslogd wrote no messages)"

    # ---- internals ------------------------------------------------------------------------

    def _shortfall(self, count: int, n: int, timeout: float) -> str:
        return f"rsyslogd wrote only {count} of {n} lines within {timeout:g} s\n" + (
            self.diagnostics()
        )

    def _pid_written(self) -> bool:
        try:
            return self.pid_file.read_text().strip() == str(self.pid)
        except FileNotFoundError:
            return False

    def _port_accepts(self) -> bool:
        # Look for the listening socket in /proc rather than connecting: a probe connection
        # that never does TLS would put a handshake error in rsyslogd's log every start.
        table = "/proc/net/tcp6" if ":" in self.host else "/proc/net/tcp"
        try:
            with open(table) as sockets:
                next(sockets)
                for row in sockets:
                    local, state = row.split()[1], row.split()[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == self.port:
                        return True
        except FileNotFoundError:
            return self._connects()
        return False

    def _connects(self) -> bool:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            try:
                probe.connect((self.host, self.port))
            except OSError:
                return False
        return True

    def _config(self) -> str:
        if self.mutual:
            auth = "x509/name" if self.permitted_peers else "x509/certvalid"
        else:
            auth = "anon"
        peers = ""
        if self.permitted_peers:
            peers = "permittedPeer=[" + ", ".join(_q(p) for p in self.permitted_peers) + "]"
        # Notes on the choices below:
        # - processInternalMessages="on": rsyslogd's own messages go through this config (to
        #   rsyslogd.log), not to the host's /dev/log.
        # - The input is bound to its own ruleset so that those internal messages never mix
        #   with the received ones.
        # - maxMessageSize 64k: rsyslog's 8k default would truncate long test messages
        #   silently.
        # - ioBufferSize/flushOnTXEnd: write in large blocks but flush at the end of each
        #   batch, so readers see whole lines soon after they arrive.
        parsed = (
            f'action(type="omfile" file={_q(self.parsed_file)} template="flowrelay_parsed" '
            'ioBufferSize="256k" flushOnTXEnd="on")'
            if self.parse
            else ""
        )
        return f"""\
global(
    workDirectory={_q(self.work_dir)}
    processInternalMessages="on"
    maxMessageSize="64k"
    net.enableDNS="off"
    defaultNetstreamDriver={_q(self.driver)}
    defaultNetstreamDriverCAFile={_q(self.tls.ca)}
    defaultNetstreamDriverCertFile={_q(self.tls.cert)}
    defaultNetstreamDriverKeyFile={_q(self.tls.key)}
)
main_queue(queue.size="200000" queue.dequeueBatchSize="2048")
module(
    load="imtcp"
    streamDriver.name={_q(self.driver)}
    streamDriver.mode="1"
    streamDriver.authMode={_q(auth)}
    maxSessions="1000"
    {peers}
)
template(name="flowrelay_raw" type="string" string="%rawmsg%\\n")
template(name="flowrelay_parsed" type="list" option.jsonf="on") {{
    property(outname="pri" name="pri" format="jsonf")
    property(outname="hostname" name="hostname" format="jsonf")
    property(outname="syslogtag" name="syslogtag" format="jsonf")
    property(outname="programname" name="programname" format="jsonf")
    property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="platform") {{
    action(type="omfile" file={_q(self.raw_file)} template="flowrelay_raw"
           ioBufferSize="256k" flushOnTXEnd="on")
    {parsed}
}}
input(type="imtcp" address={_q(self.host)} port="{self.port}" ruleset="platform")
action(type="omfile" file={_q(self.log_file)})
"""


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as output:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: output.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def _q(value: object) -> str:
    """A RainerScript string constant."""
    text = str(value)
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"{text!r} cannot be put in an rsyslog config string")
    return f'"{text}"'
