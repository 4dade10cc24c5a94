"""The forwarder's configuration: endpoints and the knobs of delivery, validated once.

``ForwarderConfig`` is the one check of the forwarder's values; ``relay.config`` reads the
file and builds it. The bounds here are the forwarder's own invariants (a batch holds at least
64 KiB, times are finite and positive, a drain budget of 0 means "do not wait").
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass

from relay.addresses import format_hostport, parse_hostport
from relay.errors import ConfigError
from relay.framing import FRAMINGS, Framing

# Smaller writes make Python TLS slow, and the file's forward.batch_size has the same floor.
MIN_BATCH_BYTES = 64 << 10


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
class ForwarderConfig:
    """How to reach the platform. ``ssl_context=None`` means plain TCP (explicit choice only;
    warned about at start). Times are seconds."""

    endpoints: tuple[Endpoint, ...]
    ssl_context: ssl.SSLContext | None
    framing: Framing = "newline"
    # Bytes of spool data per write; large writes are what makes Python TLS fast.
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
    # Budget of a clean close: wait for acknowledgements, close_notify, the peer's EOF.
    # 0: close at once.
    drain_timeout: float = 5.0
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
    # Whether ssl_context presents a client certificate (None: not known). Only for the
    # diagnosis of a TLS 1.2 handshake_failure alert (see diagnosis.py).
    client_certificate: bool | None = None

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ConfigError("no endpoint configured; set at least one --endpoint HOST:PORT")
        if self.framing not in FRAMINGS:
            raise ConfigError(
                f"framing {self.framing!r} is unknown; use newline or octet-counting",
                key="framing",
            )
        if self.batch_bytes < MIN_BATCH_BYTES:
            raise ConfigError(
                f"batch_bytes {self.batch_bytes} is below {MIN_BATCH_BYTES}", key="batch_bytes"
            )
        if self.catch_up_factor < 1:
            raise ConfigError("catch_up_factor must be at least 1", key="catch_up_factor")
        if self.failover_after < 1:
            raise ConfigError("failover_after must be at least 1", key="failover_after")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ConfigError(
                f"backoff bounds {self.backoff_initial}..{self.backoff_max} are not "
                f"0 < initial <= max",
                key="backoff",
            )
        for name in (
            "backoff_max",
            "connect_timeout",
            "primary_retry_interval",
            "stall_timeout",
            "ack_poll_interval",
            "confirm_timeout",
            "log_interval",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value}", key=name)
        if not (self.drain_timeout >= 0 and math.isfinite(self.drain_timeout)):
            raise ConfigError(
                f"drain_timeout must be 0 or more seconds, got {self.drain_timeout}",
                key="drain_timeout",
            )
        context = self.ssl_context
        if context is not None and context.minimum_version in (
            ssl.TLSVersion.MINIMUM_SUPPORTED,
            ssl.TLSVersion.SSLv3,
            ssl.TLSVersion.TLSv1,
            ssl.TLSVersion.TLSv1_1,
        ):
            raise ConfigError("the TLS context allows versions below TLS 1.2; the relay refuses")
