"""Logging: one JSON object per line (python-json-logger) or plain text, and rate limiting.

``auto``, the default, is text when stderr is a terminal (a person at ``relay run``) and JSON
otherwise (the journal, a container's log, a file: read by programs and shippers).

Modules log a sentence for people and a stable event name plus details in ``extra``:
``log.warning("datagram dropped: ...", extra={"event": "datagram_malformed", ...})``.
Only the CLI calls :func:`configure`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from relay import values

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class TextFormatter(logging.Formatter):
    """``2026-11-23T13:04:05Z warning [datagram_malformed] datagram dropped ... reason=...``"""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and k != "event"
        )
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        event = getattr(record, "event", None)
        tag = f" [{event}]" if event else ""
        line = f"{stamp}Z {record.levelname.lower()}{tag} {record.getMessage()}"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LogFormat(StrEnum):
    AUTO = "auto"  # text when stderr is a terminal, JSON otherwise
    JSON = "json"  # one object per line, for journald/Loki/Elastic
    TEXT = "text"  # for people at a terminal


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """The ``[log]`` section, checked once; the level is taken in any case (``"INFO"``)."""

    format: LogFormat = LogFormat.AUTO
    level: LogLevel = LogLevel.INFO
    # Seconds between the "stats" lines.
    stats_interval: float = 60.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "format", LogFormat(values.choice(self.format, tuple(LogFormat), "log.format")))
        level: Any = self.level
        level = str(level).lower()
        set_(self, "level", LogLevel(values.choice(level, tuple(LogLevel), "log.level")))
        set_(
            self,
            "stats_interval",
            values.number(self.stats_interval, "log.stats_interval", 1, 86400),
        )


FORMATS = tuple(LogFormat)


def resolve_format(fmt: str, *, terminal: bool) -> str:
    """``auto`` as ``text`` on a terminal, ``json`` otherwise; the others as they are."""
    if fmt == "auto":
        return "text" if terminal else "json"
    return fmt


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # closed
        return False


def configure(*, fmt: str = "auto", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if resolve_format(fmt, terminal=_is_terminal(sys.stderr)) == "json":
        formatter: logging.Formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
            },
            datefmt="%Y-%m-%dT%H:%M:%SZ",
        )
    else:
        formatter = TextFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@dataclass(slots=True)
class RateLimiter:
    """At most ``burst`` events per key per ``interval`` seconds; counts what it held back,
    so the next allowed line can say "skipped N" (time is injected: pure)."""

    interval: float = 10.0
    burst: int = 5
    # Keys remembered at most; past it the oldest window is forgotten (a flood of forged
    # sources must not grow memory, nor, by clearing every window, unmute every key).
    max_keys: int = 10000
    _windows: dict[Any, list[float]] = field(default_factory=dict)

    def allow(self, key: Any, now: float) -> tuple[bool, int]:
        """(whether to log now, how many were skipped since the last logged one)."""
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval:
            skipped = int(window[2]) if window else 0
            if window is not None:
                del self._windows[key]  # re-inserted last: the dict stays oldest first
            elif len(self._windows) >= self.max_keys:
                del self._windows[next(iter(self._windows))]
            self._windows[key] = [now, 1, 0]
            return True, skipped
        if window[1] < self.burst:
            window[1] += 1
            return True, 0
        window[2] += 1
        return False, 0


class RateLimitedLog:
    """The one rate-limited logger: the first ``burst`` lines per key per ``interval``, then
    silence, and the next line let through says how many were held back (``skipped``).

    Used wherever a peer or the disk can make the relay repeat itself (malformed datagrams,
    connection failures, spool drops): a flood costs a few lines, and nothing is hidden,
    because the count of what was muted is always logged with the next line.

    Keys are chosen by the caller (often per exporter), and forged source addresses are free,
    so each event also has a limit of its own over all keys (``event_burst`` per interval):
    a flood of distinct keys costs that many lines, and the next line let through for the
    event says how many the event limit held back (``skipped_event``).
    """

    __slots__ = ("_clock", "_events", "_limiter", "_logger")

    def __init__(
        self,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 10.0,
        burst: int = 5,
        limiter: RateLimiter | None = None,
        event_burst: int = 50,
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._limiter = limiter or RateLimiter(interval=interval, burst=burst)
        self._events = RateLimiter(interval=self._limiter.interval, burst=event_burst)

    def emit(
        self,
        key: Hashable,
        message: str,
        *,
        event: str,
        level: int = logging.WARNING,
        **extra: object,
    ) -> bool:
        """Log ``message`` unless ``key`` or ``event`` is over its limit; returns whether it
        was logged."""
        now = self._clock()
        allowed, skipped = self._limiter.allow(key, now)
        if not allowed:
            return False
        # Only lines their own key lets through count against the event's limit; what the
        # event limit then holds back is reported by the event's next line.
        event_allowed, event_skipped = self._events.allow(event, now)
        if not event_allowed:
            return False
        fields: dict[str, object] = {"event": event, **extra}
        if skipped:
            fields["skipped"] = skipped
        if event_skipped:
            fields["skipped_event"] = event_skipped
        self._logger.log(level, message, extra=fields)
        return True
