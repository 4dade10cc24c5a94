"""Addresses as users write them and as the relay shows them (pure).

``HOST:PORT`` is parsed in one place for every flag and key that takes one (listen
addresses, endpoints, the metrics address, ``send-test --to``), and an exporter's address is
normalised in one place for the allow-list and for the lines: a dual-stack socket sees an
IPv4 exporter as IPv4-mapped IPv6 (``::ffff:10.0.0.1``), which is the same router.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from relay.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOSTPORT = re.compile(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)")


def format_hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return format_hostport(self.host, self.port)


def parse_hostport(text: str, *, key: str, bind: bool = False) -> HostPort:
    """``HOST:PORT`` or ``[IPV6]:PORT``; port 0 (any free port) only for ``bind``.

    Raises ConfigError naming ``key`` (the flag or configuration key the text came from).
    """
    text = str(text).strip()
    match = _HOSTPORT.fullmatch(text)
    if not match:
        raise ConfigError(f"{key}: {text!r} is not HOST:PORT (IPv6 as [ADDR]:PORT)", key=key)
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not (0 if bind else 1) <= port < 65536:
        raise ConfigError(f"{key}: port {port} in {text!r} is not between 1 and 65535", key=key)
    return HostPort(host=host, port=port)


def normalize_ip(address: str) -> IPAddress | None:
    """The address as an IP, IPv4-mapped IPv6 as IPv4, a zone (``%eth0``) dropped; None if
    it is not an IP address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def exporter_address(address: str) -> str:
    """The exporter as it appears in a line (IPv4-mapped IPv6 shown as plain IPv4)."""
    ip = normalize_ip(address)
    return address if ip is None else str(ip)
