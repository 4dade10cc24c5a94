"""The NetFlow v9 / IPFIX template cache (sans-IO: time is an argument, nothing is read or
written here).

A template is found by its scope (exporter address, v9 Source ID or IPFIX Observation Domain
ID, the version, and the UDP port only with ``templates.scope = "address-port"``) and its
template ID (SPEC "Templates"). Peers key the same way (nfdump, pmacct, Akvorado), but keep
every template for ever and without a bound; here the bounds are the point:

- The scope comes from the datagram, and any host on the LAN can forge UDP sources, Source
  IDs and template IDs (issue 10, item 3: one entry per forged identity grew the relay without
  limit). So the cache is bounded per exporter address (count and bytes) and in total, and a
  template beyond a bound is refused and counted, never stored. Refusing the newcomer, rather
  than evicting an older one, keeps a flood from pushing out the templates live exporters
  depend on; the flood's own entries go when they are not refreshed for ``max_age``. The
  price: a flood from many forged addresses that fills the total keeps new exporters out
  until its entries expire; the refusals count (``total_templates``) shows it.
- A template's size is its wire size (4 bytes of record header, 2 more for an options
  template, 4 per field, 4 more per enterprise field): a deterministic count that grows with
  what it costs in memory and in the persisted file.
- Stale templates (not sent again for ``max_age``, 24 h by default) are forgotten on tick().
  Exporters resend templates every few minutes (Cisco IOS and ASA: 30 min at most), so a
  day without one means the exporter is gone or has changed.
- Templates restored from the state file (relay/flows/template_store.py) are marked
  restored. RFC 7011 §8 does not let a collector assume a template outlives its session, so
  a restored template serves only data sets whose length fits it (lookup() checks; one
  mismatch and the restored template is dropped, and the data waits for the real one), the
  first template the exporter sends replaces it, and records decoded with one are counted
  apart (:meth:`TemplateCache.count_restored_records`).
- Withdrawals over UDP (an IPFIX template record with a field count of 0, RFC 7011 §8.1)
  are ignored and counted (§8.4: over UDP a template is only replaced or timed out). A v9
  template with no fields never becomes a Template: the decoder reports it with refuse() and
  it is counted.

``now`` is seconds on one clock for the process's whole life and across restarts (the
persisted file carries these times): use wall-clock time. It must not go backwards; a
restored time in the future is taken as now.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from relay.flows.template import Template, TemplateScope

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_BYTES_PER_EXPORTER",
    "DEFAULT_MAX_TEMPLATES",
    "DEFAULT_MAX_TEMPLATES_PER_EXPORTER",
    "Known",
    "Refusal",
    "StoredTemplate",
    "TemplateCache",
    "TemplateEvent",
    "TemplateStatistics",
    "fits",
    "template_size",
]

# A large router exports a few templates per line card and per address family (40 line
# cards x 10 templates = 400); 1,024 leaves room, and 64 KiB of wire size is some 16,000
# fields. In total: 16,384 templates, 4 MiB of wire size (about 40 MB of Python objects at
# worst, and the persisted file stays under 5 MiB).
DEFAULT_MAX_TEMPLATES_PER_EXPORTER = 1024
DEFAULT_MAX_BYTES_PER_EXPORTER = 256 * 1024
DEFAULT_MAX_TEMPLATES = 16_384
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_AGE = 24 * 3600.0


class TemplateEvent(StrEnum):
    """What one call did; the metrics label of ``flowrelay_template_events_total``."""

    LEARNED = "learned"  # a new (scope, template ID)
    REPLACED = "replaced"  # a redefinition (or the first real template over a restored one)
    REFRESHED = "refreshed"  # sent again unchanged
    RESTORED = "restored"  # loaded from the state file
    EXPIRED = "expired"  # not refreshed for max_age
    REFUSED = "refused"  # not stored: see Refusal
    WITHDRAWAL_IGNORED = "withdrawal_ignored"  # RFC 7011 §8.4, over UDP
    RESTORED_MISMATCH = "restored_mismatch"  # a data set did not fit a restored template


class Refusal(StrEnum):
    """Why a template was refused (the label of the refusals count)."""

    NO_FIELDS = "no_fields"
    EXPORTER_TEMPLATES = "exporter_templates"  # the per-exporter count bound
    EXPORTER_BYTES = "exporter_bytes"  # the per-exporter size bound
    TOTAL_TEMPLATES = "total_templates"
    TOTAL_BYTES = "total_bytes"


@dataclass(frozen=True, slots=True, kw_only=True)
class Known:
    """A template found by lookup(); ``restored`` says its records are to be counted apart."""

    template: Template
    restored: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTemplate:
    """One template as persisted: whose it is, what it is, when it was learned and last sent."""

    scope: TemplateScope
    template: Template
    learned_at: float
    refreshed_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateStatistics:
    templates: int
    bytes: int  # sum of template_size()
    restored: int  # restored templates not yet confirmed or replaced by the exporter
    exporters: int
    events: Mapping[str, int]  # by TemplateEvent value, every kind present
    refused: Mapping[str, int]  # by Refusal value, every kind present
    records_from_restored: int
    per_exporter: Mapping[str, tuple[int, int]]  # exporter -> (templates, bytes)


def template_size(template: Template) -> int:
    """The template's wire size: what the bounds count."""
    header = 6 if template.options else 4
    return header + sum(8 if f.enterprise else 4 for f in template.fields)


def fits(template: Template, set_length: int) -> bool:
    """Whether a data set body of ``set_length`` bytes (after the 4-byte set header) can be
    records of ``template``: at least one record, and for fixed-length records what is left
    over is padding (RFC 3954 §5.3, RFC 7011 §3.3.1: fewer bytes than a record, and at most
    3 since sets are padded to a 4-byte boundary)."""
    record = template.record_length
    if record is None:
        return set_length >= template.minimum_length
    return set_length >= record and set_length % record < min(record, 4)


@dataclass(slots=True)
class _Entry:
    template: Template
    size: int
    learned_at: float
    refreshed_at: float
    restored: bool


_Key = tuple[TemplateScope, int]


class TemplateCache:
    """Templates by (scope, template ID), bounded, expiring; see the module docstring."""

    def __init__(
        self,
        *,
        max_templates_per_exporter: int = DEFAULT_MAX_TEMPLATES_PER_EXPORTER,
        max_bytes_per_exporter: int = DEFAULT_MAX_BYTES_PER_EXPORTER,
        max_templates: int = DEFAULT_MAX_TEMPLATES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        for name, value in (
            ("max_templates_per_exporter", max_templates_per_exporter),
            ("max_bytes_per_exporter", max_bytes_per_exporter),
            ("max_templates", max_templates),
            ("max_bytes", max_bytes),
            ("max_age", max_age),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        self._max_exporter_templates = max_templates_per_exporter
        self._max_exporter_bytes = max_bytes_per_exporter
        self._max_templates = max_templates
        self._max_bytes = max_bytes
        self._max_age = max_age
        # Least recently sent first, so expiry takes from the front.
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._exporters: dict[str, list[int]] = {}  # address -> [templates, bytes]
        self._bytes = 0
        self._restored = 0
        self._events = dict.fromkeys(TemplateEvent, 0)
        self._refused = dict.fromkeys(Refusal, 0)
        self._records_from_restored = 0

    def __len__(self) -> int:
        return len(self._entries)

    def learn(self, scope: TemplateScope, template: Template, now: float) -> TemplateEvent:
        """A template (or options template) the exporter sent: learned, replaced, refreshed,
        or refused by a bound (counted; a refused redefinition also forgets the old one, which
        the exporter has said no longer holds)."""
        key = (scope, template.template_id)
        entry = self._entries.get(key)
        if entry is not None and entry.template == template:
            entry.refreshed_at = now
            if entry.restored:
                entry.restored = False
                self._restored -= 1
            self._entries.move_to_end(key)
            return self._count(TemplateEvent.REFRESHED)
        size = template_size(template)
        old = entry.size if entry is not None else 0
        refusal = self._check(scope.exporter, size - old, new=entry is None)
        if refusal is not None:
            if entry is not None:
                self._remove(key)
            return self._refuse(refusal)
        if entry is not None:
            self._remove(key)
        self._insert(key, _Entry(template, size, now, now, restored=False))
        return self._count(TemplateEvent.LEARNED if entry is None else TemplateEvent.REPLACED)

    def lookup(self, scope: TemplateScope, template_id: int, set_length: int) -> Known | None:
        """The template for a data set of ``set_length`` body bytes, or None (hold the set).

        A restored template that the set does not fit is dropped (counted as
        restored_mismatch): the exporter has changed it since, and its data waits for the new
        one rather than being decoded with the wrong one.
        """
        key = (scope, template_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.restored and not fits(entry.template, set_length):
            self._remove(key)
            self._count(TemplateEvent.RESTORED_MISMATCH)
            return None
        return Known(template=entry.template, restored=entry.restored)

    def count_restored_records(self, records: int) -> None:
        """Records the caller decoded with a restored template (SPEC: counted apart)."""
        self._records_from_restored += records

    def withdraw(self, scope: TemplateScope, template_id: int | None) -> TemplateEvent:
        """A withdrawal over UDP (one template ID, or None for all): ignored and counted."""
        del scope, template_id  # RFC 7011 §8.4: over UDP templates only time out
        return self._count(TemplateEvent.WITHDRAWAL_IGNORED)

    def refuse(self, scope: TemplateScope, template_id: int, reason: Refusal) -> TemplateEvent:
        """A template the decoder would not build (no fields): counted, never stored. An
        entry of that ID is left as it was: the refused record said nothing usable."""
        del scope, template_id
        return self._refuse(reason)

    def tick(self, now: float) -> int:
        """Forget templates not sent for max_age; returns how many."""
        expired = 0
        limit = now - self._max_age
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.refreshed_at > limit:
                break
            self._remove(key)
            expired += 1
        self._events[TemplateEvent.EXPIRED] += expired
        return expired

    def snapshot(self) -> list[StoredTemplate]:
        """Every template, least recently sent first (what the state file keeps)."""
        return [
            StoredTemplate(
                scope=scope,
                template=entry.template,
                learned_at=entry.learned_at,
                refreshed_at=entry.refreshed_at,
            )
            for (scope, _), entry in self._entries.items()
        ]

    def restore(self, stored: Iterable[StoredTemplate], now: float) -> int:
        """Take templates from the state file, marked restored; returns how many were kept.

        Call once, on an empty cache, before any learn(): expiry relies on the entries being
        in the order they were last sent. Stale ones count as expired; those over a bound as
        refused (the most recently sent are admitted first, as live exporters are likelier
        to use them); of a duplicate (scope, ID) the most recently sent is kept.
        """
        if self._entries:
            raise RuntimeError("restore() is for an empty cache, before any template arrives")
        kept = 0
        limit = now - self._max_age
        for item in sorted(stored, key=lambda s: min(s.refreshed_at, now), reverse=True):
            refreshed = min(item.refreshed_at, now)
            if refreshed <= limit:
                self._events[TemplateEvent.EXPIRED] += 1
                continue
            key = (item.scope, item.template.template_id)
            if key in self._entries:
                continue
            size = template_size(item.template)
            refusal = self._check(item.scope.exporter, size, new=True)
            if refusal is not None:
                self._refuse(refusal)
                continue
            learned = min(item.learned_at, refreshed)
            self._insert(key, _Entry(item.template, size, learned, refreshed, restored=True))
            kept += 1
        # Admitted newest first; kept oldest first, the order tick() expects.
        self._entries = OrderedDict(
            sorted(self._entries.items(), key=lambda kv: kv[1].refreshed_at)
        )
        self._events[TemplateEvent.RESTORED] += kept
        return kept

    def statistics(self) -> TemplateStatistics:
        return TemplateStatistics(
            templates=len(self._entries),
            bytes=self._bytes,
            restored=self._restored,
            exporters=len(self._exporters),
            events=MappingProxyType({str(k): v for k, v in self._events.items()}),
            refused=MappingProxyType({str(k): v for k, v in self._refused.items()}),
            records_from_restored=self._records_from_restored,
            per_exporter=MappingProxyType(
                {address: (u[0], u[1]) for address, u in self._exporters.items()}
            ),
        )

    def _check(self, exporter: str, grow: int, *, new: bool) -> Refusal | None:
        usage = self._exporters.get(exporter, (0, 0))
        if new and usage[0] >= self._max_exporter_templates:
            return Refusal.EXPORTER_TEMPLATES
        if usage[1] + grow > self._max_exporter_bytes:
            return Refusal.EXPORTER_BYTES
        if new and len(self._entries) >= self._max_templates:
            return Refusal.TOTAL_TEMPLATES
        if self._bytes + grow > self._max_bytes:
            return Refusal.TOTAL_BYTES
        return None

    def _insert(self, key: _Key, entry: _Entry) -> None:
        self._entries[key] = entry
        usage = self._exporters.setdefault(key[0].exporter, [0, 0])
        usage[0] += 1
        usage[1] += entry.size
        self._bytes += entry.size
        self._restored += entry.restored

    def _remove(self, key: _Key) -> None:
        entry = self._entries.pop(key)
        exporter = key[0].exporter
        usage = self._exporters[exporter]
        usage[0] -= 1
        usage[1] -= entry.size
        if not usage[0]:
            del self._exporters[exporter]  # no entry for an exporter with nothing: bounded
        self._bytes -= entry.size
        self._restored -= entry.restored

    def _count(self, event: TemplateEvent) -> TemplateEvent:
        self._events[event] += 1
        return event

    def _refuse(self, reason: Refusal) -> TemplateEvent:
        self._refused[reason] += 1
        return self._count(TemplateEvent.REFUSED)
