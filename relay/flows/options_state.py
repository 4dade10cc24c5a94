"""What an exporter's options records said, per (address, version, domain): sampling per
sampler ID, systemInitTimeMilliseconds, interface names (sans-IO, time injected).

Options state is per exporter address and domain whatever ``templates.scope`` says (SPEC
"Templates"): exporters send options from another process, hence another source port, than
their flows. The integrator decodes options data records and fills this store; the flow
path asks it. v9 and IPFIX never share an entry (the version is part of the key: a v9 Source
ID and an IPFIX Observation Domain ID are different numbers).

Bounded like every per-exporter map (issue 10, item 3): domains per exporter address and in
total, samplers and interfaces per domain, and the length of a name. What does not fit is
refused and counted; a domain not updated for ``max_age`` is forgotten on tick(). Exporters
resend options with their templates, so what is forgotten comes back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["OptionsKey", "OptionsState", "OptionsStatistics", "Sampling"]

DEFAULT_MAX_DOMAINS = 16_384
DEFAULT_MAX_DOMAINS_PER_EXPORTER = 256
DEFAULT_MAX_SAMPLERS = 256  # per domain
DEFAULT_MAX_INTERFACES = 4096  # per domain: a chassis of 100 line cards x 40 ports
MAX_NAME_LENGTH = 255  # interfaceName and interfaceDescription are truncated to this


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionsKey:
    exporter: str
    version: int  # 9 or 10
    domain: int  # v9 Source ID or IPFIX Observation Domain ID


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampling:
    """``interval`` 1 in N packets; ``mode`` the exporter's algorithm number (0 unknown)."""

    interval: int
    mode: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionsStatistics:
    domains: int
    samplers: int
    interfaces: int
    refused: int  # values not stored because a bound was reached
    expired: int  # domains forgotten after max_age without an update


@dataclass(slots=True)
class _Domain:
    updated_at: float
    # None: the domain-wide sampling (options with no sampler ID, or v9's 34/35 alone).
    sampling: dict[int | None, Sampling] = field(default_factory=dict)
    system_init_ms: int | None = None
    interfaces: dict[int, str] = field(default_factory=dict)


class OptionsState:
    """Per-(address, version, domain) options, bounded and expiring; ``now`` must not go
    backwards."""

    def __init__(
        self,
        *,
        max_domains: int = DEFAULT_MAX_DOMAINS,
        max_domains_per_exporter: int = DEFAULT_MAX_DOMAINS_PER_EXPORTER,
        max_samplers: int = DEFAULT_MAX_SAMPLERS,
        max_interfaces: int = DEFAULT_MAX_INTERFACES,
        max_age: float = 24 * 3600.0,
    ) -> None:
        for name, value in (
            ("max_domains", max_domains),
            ("max_domains_per_exporter", max_domains_per_exporter),
            ("max_samplers", max_samplers),
            ("max_interfaces", max_interfaces),
            ("max_age", max_age),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        self._max_domains = max_domains
        self._max_per_exporter = max_domains_per_exporter
        self._max_samplers = max_samplers
        self._max_interfaces = max_interfaces
        self._max_age = max_age
        self._domains: OrderedDict[OptionsKey, _Domain] = OrderedDict()  # least recent first
        self._per_exporter: dict[str, int] = {}
        self._samplers = 0
        self._interfaces = 0
        self._refused = 0
        self._expired = 0

    def set_sampling(
        self, key: OptionsKey, sampler_id: int | None, sampling: Sampling, now: float
    ) -> bool:
        """Record the sampling of one sampler (None: the whole domain); False if refused."""
        domain = self._touch(key, now)
        if domain is None:
            return False
        if sampler_id not in domain.sampling:
            if len(domain.sampling) >= self._max_samplers:
                self._refused += 1
                return False
            self._samplers += 1
        domain.sampling[sampler_id] = sampling
        return True

    def sampling_for(self, key: OptionsKey, sampler_id: int | None) -> Sampling | None:
        """The sampling of the record's sampler, else the domain-wide one, else None."""
        domain = self._domains.get(key)
        if domain is None:
            return None
        found = domain.sampling.get(sampler_id)
        return found if found is not None else domain.sampling.get(None)

    def set_system_init_ms(self, key: OptionsKey, value: int, now: float) -> bool:
        domain = self._touch(key, now)
        if domain is None:
            return False
        domain.system_init_ms = value
        return True

    def system_init_ms(self, key: OptionsKey) -> int | None:
        domain = self._domains.get(key)
        return None if domain is None else domain.system_init_ms

    def set_interface_name(self, key: OptionsKey, index: int, name: str, now: float) -> bool:
        domain = self._touch(key, now)
        if domain is None:
            return False
        if index not in domain.interfaces:
            if len(domain.interfaces) >= self._max_interfaces:
                self._refused += 1
                return False
            self._interfaces += 1
        domain.interfaces[index] = name[:MAX_NAME_LENGTH]
        return True

    def interface_names(self, key: OptionsKey) -> Mapping[int, str] | None:
        """The domain's ifIndex -> name table (read-only; None when it names none): the
        renderer looks names up in it per record, which through interface_name() cost a
        tenth of a v9 relay's time."""
        domain = self._domains.get(key)
        return domain.interfaces if domain is not None and domain.interfaces else None

    def interface_name(self, key: OptionsKey, index: int) -> str | None:
        domain = self._domains.get(key)
        return None if domain is None else domain.interfaces.get(index)

    def tick(self, now: float) -> int:
        """Forget domains not updated for max_age; returns how many."""
        expired = 0
        while self._domains:
            key, domain = next(iter(self._domains.items()))
            if now - domain.updated_at < self._max_age:
                break
            self._forget(key)
            expired += 1
        self._expired += expired
        return expired

    def __len__(self) -> int:
        return len(self._domains)

    def statistics(self) -> OptionsStatistics:
        return OptionsStatistics(
            domains=len(self._domains),
            samplers=self._samplers,
            interfaces=self._interfaces,
            refused=self._refused,
            expired=self._expired,
        )

    def _touch(self, key: OptionsKey, now: float) -> _Domain | None:
        domain = self._domains.get(key)
        if domain is not None:
            domain.updated_at = now
            self._domains.move_to_end(key)
            return domain
        count = self._per_exporter.get(key.exporter, 0)
        if count >= self._max_per_exporter or len(self._domains) >= self._max_domains:
            self._refused += 1
            return None
        self._per_exporter[key.exporter] = count + 1
        domain = self._domains[key] = _Domain(updated_at=now)
        return domain

    def _forget(self, key: OptionsKey) -> None:
        domain = self._domains.pop(key)
        self._samplers -= len(domain.sampling)
        self._interfaces -= len(domain.interfaces)
        left = self._per_exporter[key.exporter] - 1
        if left:
            self._per_exporter[key.exporter] = left
        else:
            del self._per_exporter[key.exporter]
