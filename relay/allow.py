"""The exporter allow-list: which source addresses may send NetFlow to the relay."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from relay.addresses import normalize_ip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_LIMIT = 65536


class AllowList:
    """Answers per datagram, so verdicts are cached per source address (bounded)."""

    __slots__ = ("_cache", "_networks")

    def __init__(self, networks: Iterable[Network]) -> None:
        self._networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def allows(self, address: str) -> bool:
        verdict = self._cache.get(address)
        if verdict is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            verdict = self._cache[address] = self._check(address)
        return verdict

    def _check(self, address: str) -> bool:
        ip = normalize_ip(address)
        if ip is None:
            return False
        return any(ip in net for net in self._networks if net.version == ip.version)
