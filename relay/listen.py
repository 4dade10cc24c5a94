"""Where the relay listens: the ``[listen]`` and ``[metrics]`` sections, each checked once.

Built from what the file (or a flag) gave: addresses and networks may come as text, sizes
with units; ``__post_init__`` checks type and range, stores the typed value, and raises
ConfigError naming the file's key (``relay.config`` renames it to the flag where a flag gave
the value). The receivers and the metrics server take these values as they are.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from relay import values
from relay.addresses import HostPort, parse_hostport
from relay.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_LISTEN = ("0.0.0.0:12999", "[::]:12999")
# Loopback, RFC 1918, shared address space (CGNAT), link-local, unique local.
DEFAULT_ALLOW = (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10", "169.254.0.0/16", "fe80::/10", "fc00::/7",
)  # fmt: skip
DEFAULT_METRICS = HostPort(host="127.0.0.1", port=9712)
# SO_RCVBUF takes a C int. The kernel caps what it grants at net.core.rmem_max anyway (and the
# relay logs what it asked for and what it got), so a larger value would buy nothing.
MAX_RECEIVE_BUFFER = (1 << 31) - 1
MAX_WORKERS = 64


def _addresses(raw: Any, key: str) -> tuple[HostPort, ...]:
    if isinstance(raw, tuple) and all(isinstance(a, HostPort) for a in raw):
        return raw
    return tuple(values.bind_address(a, key) for a in values.strings(_listed(raw), key))


def _networks(raw: Any, key: str) -> tuple[Network, ...]:
    if isinstance(raw, tuple) and all(isinstance(n, Network) for n in raw):
        return raw
    return tuple(values.network(c, key=key) for c in values.strings(_listed(raw), key))


def _listed(raw: Any) -> Any:
    """A tuple of strings is as good as the file's list."""
    return list(raw) if isinstance(raw, tuple) else raw


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenConfig:
    """The UDP side: sockets to bind, their buffer, who may send, how many processes."""

    addresses: tuple[HostPort, ...] = tuple(
        parse_hostport(a, key="listen.addresses", bind=True) for a in DEFAULT_LISTEN
    )
    # SO_RCVBUF asked for each socket: what the kernel holds while the relay is busy.
    receive_buffer: int = 32 << 20
    # Exporters whose datagrams are taken; the rest are counted and dropped.
    allow: tuple[Network, ...] = tuple(ipaddress.ip_network(c) for c in DEFAULT_ALLOW)
    # Processes sharing the sockets with SO_REUSEPORT (1: no supervisor).
    workers: int = 1

    def __post_init__(self) -> None:
        addresses = _addresses(self.addresses, "listen.addresses")
        if not addresses:
            raise ConfigError(
                "listen.addresses is empty: give at least one ADDR:PORT", key="listen"
            )
        set_ = object.__setattr__
        set_(self, "addresses", addresses)
        set_(self, "allow", _networks(self.allow, "listen.allow"))
        set_(
            self,
            "receive_buffer",
            values.size(self.receive_buffer, "listen.receive_buffer", maximum=MAX_RECEIVE_BUFFER),
        )
        set_(self, "workers", values.integer(self.workers, "listen.workers", 1, MAX_WORKERS))


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """Where Prometheus scrapes ``/metrics``; ``address=None`` serves none."""

    address: HostPort | None = DEFAULT_METRICS
    # Exporters with series of their own (flowrelay_exporter_*); the rest are summed under
    # exporter="other" (relay.exporters bounds its table with it).
    max_exporters: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "max_exporters",
            values.integer(self.max_exporters, "metrics.max_exporters", 1, 65536),
        )
        raw: Any = self.address
        if raw is None or isinstance(raw, HostPort):
            return
        if raw in ("", "off", "none"):
            object.__setattr__(self, "address", None)
            return
        text = values.string(raw, "metrics.address")
        object.__setattr__(self, "address", values.bind_address(text, "metrics.address"))
