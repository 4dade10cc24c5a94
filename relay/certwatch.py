"""The client certificate while the relay runs: a daily warning before it expires, and the
CA, certificate and key files re-read at SIGHUP.

Why here and not in the forwarder: a lapsed client certificate is the silent failure of a
relay on a customer's LAN (the platform refuses it, the spool fills, lines are dropped), so
the relay says so a month ahead, once a day, in its log and in
``flowrelay_tls_client_certificate_expiry_timestamp_seconds``; and the operator who renewed
the files must not have to restart it. :func:`expiry_check` is the pure decision (the clock
is the caller's); :class:`ClientTls` is the thin part that reads files and logs.

A reload builds a whole new TLS context from the files, with every check ``relay run`` makes
at start. A bad set (a key that does not match, a file half written, a CA that will not load)
is refused with the one sentence that names the file, and the set in use is kept. A good set
is used from the next connection: the current one is not dropped, because a reconnect only
for a reload would resend what is in flight for nothing.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from relay.certs import EXPIRY_WARNING_DAYS, certificate_not_after
from relay.errors import ConfigError
from relay.metrics import Registry

log = logging.getLogger(__name__)

DAY: Final = 86400.0
# Warn while the certificate has less than this left (the same 30 days as `certs check`).
WARN_BEFORE: Final = EXPIRY_WARNING_DAYS * DAY
# And again every this often while it does.
WARN_EVERY: Final = DAY


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpiryWatch:
    """One client certificate's expiry and when it was last warned about (UNIX times)."""

    path: str
    not_after: float
    warned_at: float | None = None


def expiry_message(path: str, not_after: float, now: float) -> str:
    day = datetime.fromtimestamp(not_after, UTC).strftime("%Y-%m-%d %H:%M UTC")
    left = not_after - now
    if left <= 0:
        return (
            f"client certificate {path} expired on {day}; the platform refuses it and lines "
            "stay in the spool: install a renewed certificate and key and reload the relay "
            "(SIGHUP, systemctl reload flowrelay)"
        )
    return (
        f"client certificate {path} expires on {day}, in {int(left // DAY)} day(s); renew it "
        "with the platform and reload the relay (SIGHUP, systemctl reload flowrelay)"
    )


def expiry_check(watch: ExpiryWatch, now: float) -> tuple[ExpiryWatch, str | None]:
    """(the new state, the warning to log now or None): a warning while under 30 days are
    left (or after expiry), at most one per day."""
    if watch.not_after - now >= WARN_BEFORE:
        return watch, None
    if watch.warned_at is not None and now - watch.warned_at < WARN_EVERY:
        return watch, None
    return replace(watch, warned_at=now), expiry_message(watch.path, watch.not_after, now)


class ClientTls:
    """The TLS files in use: their expiry (watched) and their reload at SIGHUP.

    ``load`` builds a context from the files as configured (raises ConfigError, whose
    CertificateError names the file); ``use`` hands a new one to the forwarder; ``cert`` is
    the client certificate file (None without mutual TLS: nothing expires then).
    """

    __slots__ = ("_clock", "_load", "_use", "_watch", "cert", "refusals", "reloads")

    def __init__(
        self,
        *,
        load: Callable[[], ssl.SSLContext | None],
        use: Callable[[ssl.SSLContext | None], None],
        cert: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load = load
        self._use = use
        self._clock = clock
        self.cert = cert
        self.reloads = 0
        self.refusals = 0
        # The start-up check has read this file already: it cannot fail here but by a race.
        self._watch = self._read_watch()

    @property
    def not_after(self) -> float | None:
        """The client certificate's notAfter as UNIX time; None without mutual TLS."""
        return self._watch.not_after if self._watch is not None else None

    def _read_watch(self) -> ExpiryWatch | None:
        if self.cert is None:
            return None
        not_after = certificate_not_after(self.cert).timestamp()
        return ExpiryWatch(path=str(self.cert), not_after=not_after)

    def tick(self) -> None:
        """Warn about expiry if due (call it often: it warns once a day)."""
        if self._watch is None:
            return
        self._watch, warning = expiry_check(self._watch, self._clock())
        if warning is not None:
            log.warning(
                warning,
                extra={
                    "event": "tls_certificate_expiring",
                    "path": self._watch.path,
                    "not_after": int(self._watch.not_after),
                },
            )

    def reload(self) -> bool:
        """Re-read the files; whether the new set was taken."""
        try:
            context = self._load()
            watch = self._read_watch()
        except ConfigError as exc:
            self.refusals += 1
            log.error(
                "certificate reload refused, the certificates in use are kept: %s",
                exc,
                extra={"event": "tls_reload_refused", "path": getattr(exc, "path", None)},
            )
            return False
        self._use(context)
        self._watch = watch
        self.reloads += 1
        extra: dict[str, object] = {"event": "tls_reloaded"}
        if watch is not None:
            extra["not_after"] = int(watch.not_after)
        log.info(
            "certificates reloaded: the next connection to the platform uses them "
            "(the current one is kept)",
            extra=extra,
        )
        # A renewed certificate says so at once; one still expiring warns at once again.
        self.tick()
        return True


def register_expiry_metric(registry: Registry, tls: ClientTls) -> None:
    """Only with a client certificate: without one the series is absent (not 0), so that an
    alert on ``expiry - time() < 14d`` needs no guard against a 1970 expiry."""
    if tls.cert is None:
        return
    expiry = registry.family(
        "flowrelay_tls_client_certificate_expiry_timestamp_seconds",
        "gauge",
        "When the client certificate in use expires (notAfter, UNIX time)",
    )

    def collect() -> None:
        if tls.not_after is not None:
            expiry.set(tls.not_after)

    registry.add_collector(collect)
