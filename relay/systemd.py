"""systemd's notify protocol (sd_notify): READY=1, STOPPING=1, STATUS=, WATCHDOG=1, and the
watchdog's pinger in the event loop.

The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace), and the watchdog's
period is ``$WATCHDOG_USEC`` (for the process ``$WATCHDOG_PID``, when set). That is a dozen
lines, so they are written here rather than taken from a library: the Python bindings
(python-systemd) need libsystemd and a C compiler, and the pure-Python ``sdnotify`` package is
unmaintained and swallows every error without a word.

The message building and the reading of the environment are pure; :class:`Notifier` is the
thin sender. Without ``$NOTIFY_SOCKET`` (not under systemd, or a worker whose supervisor does
the talking) every send is a no-op.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from typing import Final

import trio

log = logging.getLogger(__name__)

# Only the tests set it: SIGUSR1 then blocks the event loop, as a hung relay would, to show
# that the watchdog pings stop (a pinging thread would carry on and hide the hang).
TEST_HANG_ENV: Final = "FLOWRELAY_TEST_HANG_ON_SIGUSR1"
# What the supervisor takes out of its workers' environment: only the main process talks to
# systemd (the unit's default NotifyAccess=main ignores, and logs, anything else).
ENVIRONMENT: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class NotifyError(ValueError):
    """A message that the protocol cannot carry (a caller's bug, never the peer's fault)."""


def message(fields: Mapping[str, str]) -> bytes:
    """``{"READY": "1", "STATUS": "ok"}`` as the datagram ``READY=1\\nSTATUS=ok\\n``.

    One line per field: a value cannot hold a newline, a key is upper case (sd_notify(3)).
    """
    if not fields:
        raise NotifyError("a notify message needs at least one field")
    lines = []
    for key, value in fields.items():
        if not key or not all(c.isupper() or c.isdigit() or c == "_" for c in key):
            raise NotifyError(f"notify field name {key!r} is not upper-case A-Z, 0-9 or _")
        if "\n" in value:
            raise NotifyError(f"notify field {key} holds a newline")
        lines.append(f"{key}={value}\n")
    return "".join(lines).encode()


def status(text: str) -> bytes:
    """``STATUS=`` with ``text`` folded onto one line (what ``systemctl status`` shows)."""
    return message({"STATUS": " ".join(text.split())})


READY: Final = message({"READY": "1"})
STOPPING: Final = message({"STOPPING": "1"})
WATCHDOG: Final = message({"WATCHDOG": "1"})


def socket_address(value: str | None) -> str | bytes | None:
    """The ``sendto`` address for ``$NOTIFY_SOCKET``: an absolute path, or ``@name`` for the
    abstract namespace (a leading NUL byte). Anything else (unset, empty, relative, a vsock
    address) is None: not ours to talk to."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_period(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of ``$WATCHDOG_USEC`` (sd_watchdog_enabled(3)
    advises pinging at half the timeout), or None when no watchdog is asked of ``pid``."""
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


def watchdog_timeout(environ: Mapping[str, str], pid: int) -> float | None:
    """The whole ``$WATCHDOG_USEC`` in seconds (None as for :func:`watchdog_period`)."""
    period = watchdog_period(environ, pid)
    return None if period is None else 2 * period


def without_notify(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for a child process that must not talk to systemd itself."""
    return {k: v for k, v in environ.items() if k not in ENVIRONMENT}


class Notifier:
    """Sends notify datagrams to ``$NOTIFY_SOCKET``; a no-op without one.

    A send never raises and never blocks: systemd gone or its queue full must not stop the
    relay, so a failure is logged once, and the next success says so.
    """

    __slots__ = ("_failed", "_sock", "_target", "watchdog_period")

    def __init__(self, address: str | bytes | None, *, watchdog_period: float | None) -> None:
        self._target = address
        self._sock: socket.socket | None = None
        self._failed = False
        self.watchdog_period = watchdog_period if self._target is not None else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(
            socket_address(env.get("NOTIFY_SOCKET")),
            watchdog_period=watchdog_period(env, os.getpid()),
        )

    @property
    def enabled(self) -> bool:
        return self._target is not None

    def send(self, datagram: bytes) -> bool:
        """Send one message; whether it went out (False also when not under systemd)."""
        if self._target is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(datagram, self._target)
        except OSError as exc:
            if not self._failed:
                log.warning(
                    "cannot notify systemd at $NOTIFY_SOCKET (%s); carrying on without it",
                    exc.strerror or exc,
                    extra={"event": "systemd_notify_failed"},
                )
            self._failed = True
            return False
        if self._failed:
            log.info("notifying systemd again", extra={"event": "systemd_notify_restored"})
            self._failed = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def ping_watchdog(notify: Notifier, period: float) -> None:
    """WATCHDOG=1 every ``period`` seconds, from the event loop: if the loop hangs, the pings
    stop and systemd (``WatchdogSec=``) kills and restarts the relay."""
    while True:
        notify.send(WATCHDOG)
        await trio.sleep(period)


async def hang_on_sigusr1() -> None:
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            log.warning("blocking the event loop for the tests", extra={"event": "test_hang"})
            time.sleep(3600)  # noqa: ASYNC251 - the point: a loop that does not come back
