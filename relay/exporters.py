"""Every exporter in view: what each one sent, lost and broke, and whether it went silent
(sans-IO, wall clock injected).

An exporter is an address for NetFlow v1-v7, and an (address, domain) for v9 and IPFIX (the
v9 Source ID or the IPFIX Observation Domain: one router exports several). The ingest path
finds an exporter's :class:`Exporter` once per datagram (one dict lookup, cached with the
address) and adds to its integer counters; nothing else happens per datagram. What needs a
clock is done by :meth:`ExporterTable.tick`, once a second: the last-seen time (to within a
second), the records of the last second into a ring of 60 (records/s over the last minute),
and the silent/back decisions, each logged once.

The table is bounded, because its keys come from datagrams that any host on the LAN may
forge: at most ``max_exporters`` entries; traffic from exporters beyond that is summed under
one entry, :data:`OTHER`, and how many distinct exporters it holds is counted (up to
:data:`MAX_OTHER_COUNTED`, a bound of its own). An entry is never evicted: a router that
stopped exporting is exactly the one the operator must go on seeing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from relay import values

log = logging.getLogger(__name__)

DEFAULT_MAX_EXPORTERS: Final = 256
MAX_EXPORTERS: Final = 65536
DEFAULT_SILENT_AFTER: Final = 900.0
# Records/s is averaged over this many one-second slots.
WINDOW: Final = 60
OTHER: Final = "other"
# Distinct exporters remembered to count those summed under OTHER (a set of their keys).
MAX_OTHER_COUNTED: Final = 65536

ExporterKey = tuple[str, int | None]  # address, domain (None for v1-v7)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportersConfig:
    """The ``[exporters]`` section: when an exporter counts as silent."""

    # Seconds without a datagram after which an exporter is silent (warned once, gauge 1).
    silent_after: float = DEFAULT_SILENT_AFTER

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "silent_after",
            values.number(self.silent_after, "exporters.silent_after", 1, 7 * 86400),
        )


@dataclass(slots=True, eq=False)
class Exporter:
    """One exporter's running counts. The hot path adds to ``datagrams`` and ``records``
    and ORs the version's bit into ``version_bits``; the rest moves on rare paths or at
    :meth:`ExporterTable.tick`."""

    address: str
    domain: int | None
    first_seen: float
    last_seen: float
    datagrams: int = 0
    records: int = 0
    flows_lost: int = 0
    version_bits: int = 0  # bit v set: version v seen
    malformed: dict[str, int] = field(default_factory=dict)
    silent: bool = False
    # Records per wall-clock second (slot: second % WINDOW), and the counts at the last tick.
    ring: list[int] = field(default_factory=lambda: [0] * WINDOW)
    seen_datagrams: int = 0
    seen_records: int = 0

    def malformed_datagram(self, reason: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ExporterView:
    """A snapshot of one exporter, as /status and the metrics show it."""

    exporter: str  # its address, or OTHER
    domain: int | None
    versions: tuple[int, ...]
    datagrams: int
    records: int
    malformed: dict[str, int]
    flows_lost: int
    first_seen: float
    last_seen: float
    records_per_second: float  # over the last minute (or since first seen, if less)
    templates: int  # known from its address (every domain of it)
    silent: bool

    @property
    def loss_ratio(self) -> float:
        """Flows lost over flows the exporter numbered (received and lost)."""
        total = self.records + self.flows_lost
        return self.flows_lost / total if total else 0.0


class ExporterTable:
    """The exporters seen, bounded in number; ``wall_clock`` is UNIX time."""

    def __init__(
        self,
        *,
        wall_clock: Callable[[], float],
        max_exporters: int = DEFAULT_MAX_EXPORTERS,
        silent_after: float = DEFAULT_SILENT_AFTER,
    ) -> None:
        if not 1 <= max_exporters <= MAX_EXPORTERS:
            raise ValueError(f"max_exporters must be 1..{MAX_EXPORTERS}, not {max_exporters}")
        self._wall = wall_clock
        self._max = max_exporters
        self._silent_after = silent_after
        self._entries: dict[ExporterKey, Exporter] = {}
        self._other: Exporter | None = None
        self._other_keys: set[ExporterKey] = set()
        self._second: int | None = None  # of the last tick

    def entry(self, address: str, domain: int | None = None) -> Exporter:
        """The exporter's entry (made, and logged once, on its first datagram); past the
        bound, the shared OTHER entry."""
        key = (address, domain)
        found = self._entries.get(key)
        if found is not None:
            return found
        return self._new(key)

    def _new(self, key: ExporterKey) -> Exporter:
        now = self._wall()
        if len(self._entries) >= self._max:
            if len(self._other_keys) < MAX_OTHER_COUNTED:
                self._other_keys.add(key)
            if self._other is None:
                self._other = Exporter(address=OTHER, domain=None, first_seen=now, last_seen=now)
                log.warning(
                    f"more than {self._max} exporters: the traffic of the others is summed "
                    'under exporter="other" (metrics.max_exporters)',
                    extra={"event": "exporters_over_bound", "max_exporters": self._max},
                )
            return self._other
        entry = Exporter(address=key[0], domain=key[1], first_seen=now, last_seen=now)
        self._entries[key] = entry
        log.info(
            f"new exporter {describe(key[0], key[1])}",
            extra={"event": "exporter_new", "exporter": key[0]}
            | ({} if key[1] is None else {"domain": key[1]}),
        )
        return entry

    def lost(self, address: str, domain: int | None, flows: int) -> None:
        """Flows lost (a sequence gap settled) from an exporter already seen."""
        entry = self._entries.get((address, domain)) or self._other
        if entry is not None:
            entry.flows_lost += flows

    def tick(self) -> None:
        """Often (the relay: every second): last seen, the records/s ring, silent and back.
        The ring has one slot per wall-clock second; seconds without a tick count 0."""
        now = self._wall()
        second = int(now)
        skipped = min(WINDOW, second - self._second) if self._second is not None else 0
        self._second = second
        slot = second % WINDOW
        for entry in self._all():
            spoke = entry.datagrams != entry.seen_datagrams
            if spoke:
                entry.last_seen = now
                entry.seen_datagrams = entry.datagrams
            ring = entry.ring
            for back in range(skipped):
                ring[(second - back) % WINDOW] = 0
            ring[slot] += entry.records - entry.seen_records
            entry.seen_records = entry.records
            if entry is self._other:
                continue
            name = describe(entry.address, entry.domain)
            if spoke and entry.silent:
                entry.silent = False
                log.info(
                    f"exporter {name} is sending again",
                    extra={"event": "exporter_back", "exporter": entry.address},
                )
            elif not entry.silent and now - entry.last_seen > self._silent_after:
                entry.silent = True
                log.warning(
                    f"exporter {name} has sent nothing for {now - entry.last_seen:.0f} s "
                    "(exporters.silent_after): check that it still exports to this relay",
                    extra={"event": "exporter_silent", "exporter": entry.address},
                )

    def _all(self) -> Iterator[Exporter]:
        yield from self._entries.values()
        if self._other is not None:
            yield self._other

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def others(self) -> int:
        """Distinct exporters summed under OTHER (at most MAX_OTHER_COUNTED)."""
        return len(self._other_keys)

    def views(self, templates: dict[str, int] | None = None) -> list[ExporterView]:
        """Every entry (OTHER last), with ``templates`` known per address."""
        known = templates or {}
        now = self._wall()
        found = []
        for entry in self._all():
            # The window is the last minute, or the time since first seen if shorter.
            span = max(1.0, min(float(WINDOW), now - entry.first_seen))
            bits = entry.version_bits
            versions = tuple(v for v in range(bits.bit_length()) if bits >> v & 1)
            found.append(
                ExporterView(
                    exporter=entry.address,
                    domain=entry.domain,
                    versions=versions,
                    datagrams=entry.datagrams,
                    records=entry.records,
                    malformed=dict(entry.malformed),
                    flows_lost=entry.flows_lost,
                    first_seen=entry.first_seen,
                    last_seen=entry.last_seen,
                    records_per_second=sum(entry.ring) / span,
                    # Templates are v9/IPFIX's: an address's v1-v7 row has none.
                    templates=known.get(entry.address, 0) if entry.domain is not None else 0,
                    silent=entry.silent,
                )
            )
        return found


def describe(address: str, domain: int | None) -> str:
    return address if domain is None else f"{address} (domain {domain})"
