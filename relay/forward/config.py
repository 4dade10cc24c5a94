"""The forwarder's configuration: the ``[forward]`` section, endpoints, validated once.

The one place of the forwarder's defaults and bounds. ``ForwardSettings`` is the section as
the file gives it (``relay.config`` builds it, errors name the file's key); ``TlsSettings``
is what :func:`relay.service.build_ssl_context` needs besides the endpoints' files; and
``ForwarderConfig`` is the settings plus what only exists at start (the endpoints, the TLS
context, the framing), so that the parsed configuration never holds an ``ssl.SSLContext``.
A drain budget of 0 means "do not wait".
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, fields
from typing import Any

from relay import values
from relay.addresses import format_hostport, parse_hostport
from relay.errors import ConfigError
from relay.framing import FRAMINGS, Framing

# Smaller writes make Python TLS slow.
MIN_BATCH_BYTES = 64 << 10
# One TLS write, held in memory (up to catch_up_factor of them while behind).
MAX_BATCH_BYTES = 64 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One platform address. ``server_name`` overrides the name sent as SNI and checked
    against the certificate (default: ``host``)."""

    host: str
    port: int
    server_name: str | None = None

    def __post_init__(self) -> None:
        if not self.host or self.host != self.host.strip():
            raise ConfigError(f"endpoint host {self.host!r} is empty or has spaces", key="endpoint")
        if not 0 < self.port < 65536:
            raise ConfigError(
                f"endpoint port {self.port} is out of range; use 1-65535", key="endpoint"
            )
        if self.server_name is not None and not self.server_name:
            raise ConfigError(
                "server name is empty; leave it unset to use the host", key="endpoint"
            )

    def __str__(self) -> str:
        return format_hostport(self.host, self.port)

    @property
    def tls_name(self) -> str:
        """The name sent as SNI and checked against the server's certificate."""
        return self.server_name or self.host

    @classmethod
    def parse(cls, text: str, *, server_name: str | None = None) -> Endpoint:
        """``host:port`` or ``[v6-address]:port``."""
        parsed = parse_hostport(text, key="endpoint")
        return cls(host=parsed.host, port=parsed.port, server_name=server_name)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """``forward.tls`` and ``forward.verify``: off only when set so (and warned about)."""

    tls: bool = True
    verify: bool = True

    def __post_init__(self) -> None:
        values.boolean(self.tls, "forward.tls")
        values.boolean(self.verify, "forward.verify")


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardSettings:
    """How to deliver. Times are seconds; each bound is the file's (``forward.<key>``)."""

    # Bytes of spool data per write (the file's batch_size); large writes make Python TLS fast.
    batch_bytes: int = 256 << 10
    # While behind, writes grow up to this many times batch_bytes (see the sender in loop.py).
    catch_up_factor: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # Consecutive failures on one endpoint before trying the next one.
    failover_after: int = 3
    # Covers TCP connect plus TLS handshake.
    connect_timeout: float = 10.0
    # While on a fallback endpoint, how often to try the first one again.
    primary_retry_interval: float = 300.0
    # Budget of a clean close: wait for acknowledgements, close_notify, the peer's EOF; the
    # same SIGTERM budget as the drain. 0: close at once.
    drain_timeout: float = 10.0
    # Data outstanding and not one byte acknowledged for this long: the link is dead, and the
    # next endpoint is tried at once. Also the kernel's TCP_USER_TIMEOUT, and what keepalive
    # is derived from, so that an idle dead link is noticed as soon (see link.py).
    stall_timeout: float = 20.0
    # How often the kernel is asked what has been acknowledged while data is outstanding.
    ack_poll_interval: float = 0.01
    # TLS 1.3 servers reject a client certificate only after the client's handshake is done.
    # Nothing is committed on a new connection until the server's verdict is in: a session
    # ticket, or this long without an alert. (Sending waits for the verdict only about as long
    # as the handshake took, so a rejected certificate usually sends nothing at all.)
    confirm_timeout: float = 1.0
    # Identical connection failure lines are logged at most once per this interval.
    log_interval: float = 60.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(
            self,
            "batch_bytes",
            values.size(
                self.batch_bytes,
                "forward.batch_size",
                minimum=MIN_BATCH_BYTES,
                maximum=MAX_BATCH_BYTES,
            ),
        )
        for name, low, high in _FILE_BOUNDS:
            set_(self, name, values.number(getattr(self, name), f"forward.{name}", low, high))
        set_(
            self,
            "failover_after",
            values.integer(self.failover_after, "forward.failover_after", 1, 100),
        )
        if self.backoff_max < self.backoff_initial:
            raise ConfigError(
                "forward.backoff_max must not be smaller than forward.backoff_initial",
                key="forward.backoff_max",
            )
        # Not in the file: the forwarder's own knobs, for tests and benchmarks.
        if isinstance(self.catch_up_factor, bool) or not (
            isinstance(self.catch_up_factor, int) and self.catch_up_factor >= 1
        ):
            raise ConfigError("catch_up_factor must be at least 1", key="catch_up_factor")
        for name in ("ack_poll_interval", "confirm_timeout", "log_interval"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value}", key=name)


# (field, low, high) of the file's [forward] times; the file's key is the field's name.
_FILE_BOUNDS: tuple[tuple[str, float, float], ...] = (
    ("backoff_initial", 0.01, 600),
    ("backoff_max", 0.01, 3600),
    ("connect_timeout", 0.1, 600),
    ("primary_retry_interval", 1, 86400),
    ("drain_timeout", 0, 3600),
    ("stall_timeout", 2, 3600),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwarderConfig(ForwardSettings):
    """How to reach the platform: the settings, the endpoints, the TLS context, the framing.
    ``ssl_context=None`` means plain TCP (explicit choice only; warned about at start)."""

    endpoints: tuple[Endpoint, ...]
    ssl_context: ssl.SSLContext | None
    framing: Framing = Framing.NEWLINE
    # Whether ssl_context presents a client certificate (None: not known). Only for the
    # diagnosis of a TLS 1.2 handshake_failure alert (see diagnosis.py).
    client_certificate: bool | None = None

    @classmethod
    def of(cls, settings: ForwardSettings, **start: Any) -> ForwarderConfig:
        """``settings`` plus what only exists at start (endpoints, ssl_context, ...)."""
        given = {f.name: getattr(settings, f.name) for f in fields(ForwardSettings)}
        return cls(**given, **start)

    def __post_init__(self) -> None:
        # Not super(): slots=True makes a new class, which zero-argument super() misses.
        ForwardSettings.__post_init__(self)
        if not self.endpoints:
            raise ConfigError("no endpoint configured; set at least one --endpoint HOST:PORT")
        if self.framing not in FRAMINGS:
            raise ConfigError(
                f"framing {self.framing!r} is unknown; use newline or octet-counting",
                key="framing",
            )
        object.__setattr__(self, "framing", Framing(self.framing))
        context = self.ssl_context
        if context is not None and context.minimum_version in (
            ssl.TLSVersion.MINIMUM_SUPPORTED,
            ssl.TLSVersion.SSLv3,
            ssl.TLSVersion.TLSv1,
            ssl.TLSVersion.TLSv1_1,
        ):
            raise ConfigError("the TLS context allows versions below TLS 1.2; the relay refuses")
