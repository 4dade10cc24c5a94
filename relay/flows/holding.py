"""Data held until what it needs arrives (sans-IO, time injected).

RFC 3954 §9 asks collectors to keep data records that arrive before their template; almost
none do, and users lose the first minutes after every restart of exporter or collector
(elastic/beats#17615, logstash-codec-netflow#88). SPEC "Data before its template": a data
set whose template is unknown is held per (scope, template ID), bounded in bytes per
exporter and in age, and decoded in arrival order, with its own datagram's header, when the
template arrives; at expiry it is dropped and counted, never lost silently.

The same holding serves IPFIX records whose times are relative to a
systemInitTimeMilliseconds not yet received: the caller keys them by what they wait for (an
:class:`relay.flows.options_state.OptionsKey`, say) in a Holding of their own. So a Holding
is generic in its key and in the header it keeps: both are opaque values of the caller's.

Bounds (issue 10, item 3: every per-exporter map is bounded): bytes per exporter address,
bytes and sets in total (the set count bounds the bookkeeping, some 300 bytes a set,
of many tiny sets: 65,536 sets cost about 20 MB besides their data). A set
that does not fit is refused and counted: refusing the newcomer keeps the oldest, whose
template is likeliest to come first. Expiry takes sets in arrival order, which is also their
age order, from one ordered map: holding, releasing and expiring a set are O(1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from itertools import count
from typing import Generic, TypeVar

__all__ = [
    "DEFAULT_HOLD_AGE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_BYTES_PER_EXPORTER",
    "DEFAULT_MAX_SETS",
    "HeldSet",
    "Holding",
    "HoldingStatistics",
]

K = TypeVar("K", bound=Hashable)
H = TypeVar("H")

DEFAULT_HOLD_AGE = 60.0
# An exporter sends a few hundred KB a second at most at the rates one relay takes; 60 s of
# that for one exporter is far more than the minute or two it takes a template to come.
# 1 MiB per exporter holds some 700 full-size data sets; 16 MiB and 65,536 sets in total.
DEFAULT_MAX_BYTES_PER_EXPORTER = 1024 * 1024
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_SETS = 65_536


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldSet(Generic[K, H]):
    """One data set as it arrived: its key, its datagram's header, its bytes."""

    key: K
    exporter: str
    header: H
    data: bytes
    arrived: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldingStatistics:
    sets: int  # held now (gauge)
    bytes: int  # held now (gauge)
    keys: int  # distinct keys waiting
    exporters: int
    held: int  # sets ever held
    released: int  # sets handed back because what they waited for arrived
    expired: int  # sets dropped at max_age (reason no_template / no_system_init)
    expired_bytes: int
    refused: int  # sets not held: a bound was reached
    refused_bytes: int


class _Waiting:
    """A key's sets (their arrival numbers), oldest first from ``head``: a list and an offset
    cost a sixth of a deque, and most keys wait with one or two sets."""

    __slots__ = ("head", "seqs")

    def __init__(self, seqs: list[int]) -> None:
        self.seqs = seqs
        self.head = 0


class Holding(Generic[K, H]):
    """Sets waiting per key, in arrival order, bounded and aged; ``now`` must not go
    backwards."""

    def __init__(
        self,
        *,
        max_age: float = DEFAULT_HOLD_AGE,
        max_bytes_per_exporter: int = DEFAULT_MAX_BYTES_PER_EXPORTER,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_sets: int = DEFAULT_MAX_SETS,
    ) -> None:
        for name, value in (
            ("max_age", max_age),
            ("max_bytes_per_exporter", max_bytes_per_exporter),
            ("max_bytes", max_bytes),
            ("max_sets", max_sets),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        self._max_age = max_age
        self._max_exporter_bytes = max_bytes_per_exporter
        self._max_bytes = max_bytes
        self._max_sets = max_sets
        self._order: OrderedDict[int, HeldSet[K, H]] = OrderedDict()  # arrival order
        self._by_key: dict[K, _Waiting] = {}
        self._exporters: dict[str, list[int]] = {}  # address -> [sets, bytes]
        self._seq = count()
        self._bytes = 0
        self._held = 0
        self._released = 0
        self._expired = 0
        self._expired_bytes = 0
        self._refused = 0
        self._refused_bytes = 0

    def hold(self, key: K, exporter: str, header: H, data: bytes, now: float) -> bool:
        """Keep ``data`` until release(key); False (counted) if a bound refuses it."""
        size = len(data)
        usage = self._exporters.get(exporter)
        if (
            (usage[1] if usage else 0) + size > self._max_exporter_bytes
            or self._bytes + size > self._max_bytes
            or len(self._order) >= self._max_sets
        ):
            self._refused += 1
            self._refused_bytes += size
            return False
        seq = next(self._seq)
        self._order[seq] = HeldSet(
            key=key, exporter=exporter, header=header, data=data, arrived=now
        )
        waiting = self._by_key.get(key)
        if waiting is None:
            self._by_key[key] = _Waiting([seq])
        else:
            waiting.seqs.append(seq)
        if usage is None:
            usage = self._exporters[exporter] = [0, 0]
        usage[0] += 1
        usage[1] += size
        self._bytes += size
        self._held += 1
        return True

    def waiting(self, key: K) -> int:
        """How many sets wait for ``key``."""
        waiting = self._by_key.get(key)
        return 0 if waiting is None else len(waiting.seqs) - waiting.head

    def release(self, key: K) -> list[HeldSet[K, H]]:
        """Every set held for ``key``, in arrival order, no longer held."""
        waiting = self._by_key.pop(key, None)
        if waiting is None:
            return []
        seqs = waiting.seqs
        released = [self._take(self._order.pop(seqs[i])) for i in range(waiting.head, len(seqs))]
        self._released += len(released)
        return released

    def tick(self, now: float) -> list[HeldSet[K, H]]:
        """Drop the sets held for max_age, oldest first, and return them (counted as expired:
        the caller logs and labels them by what they waited for)."""
        expired: list[HeldSet[K, H]] = []
        limit = now - self._max_age
        while self._order:
            seq, held = next(iter(self._order.items()))
            if held.arrived > limit:
                break
            del self._order[seq]
            # A key's sets are in arrival order too: this one is its oldest.
            waiting = self._by_key[held.key]
            waiting.head += 1
            if waiting.head == len(waiting.seqs):
                del self._by_key[held.key]
            elif waiting.head * 2 > len(waiting.seqs):  # amortised O(1), and no dead prefix
                del waiting.seqs[: waiting.head]
                waiting.head = 0
            expired.append(self._take(held))
            self._expired_bytes += len(held.data)
        self._expired += len(expired)
        return expired

    def statistics(self) -> HoldingStatistics:
        return HoldingStatistics(
            sets=len(self._order),
            bytes=self._bytes,
            keys=len(self._by_key),
            exporters=len(self._exporters),
            held=self._held,
            released=self._released,
            expired=self._expired,
            expired_bytes=self._expired_bytes,
            refused=self._refused,
            refused_bytes=self._refused_bytes,
        )

    def __len__(self) -> int:
        return len(self._order)

    def _take(self, held: HeldSet[K, H]) -> HeldSet[K, H]:
        size = len(held.data)
        usage = self._exporters[held.exporter]
        usage[0] -= 1
        usage[1] -= size
        if not usage[0]:  # an entry only while the exporter holds sets: bounded
            del self._exporters[held.exporter]
        self._bytes -= size
        return held
