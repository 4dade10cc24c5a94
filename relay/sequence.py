"""Flow loss from ``flow_sequence`` gaps, per exporter and engine (sans-IO, time injected).

The header's flow_sequence is the number of flows the exporter had sent before this
datagram, so the next datagram of the same stream should carry ``sequence + count``. A
larger value is a gap. A gap is not counted at once: UDP reorders, and the late datagram
fills it. Gaps are held for ``hold`` seconds (or until too many are open) and only then
counted as lost. A value far below or far above the expected one is an exporter restart
(or a counter reset), not loss.

The streams are bounded, because a stream's key comes from the datagram: any host on the
LAN can forge UDP sources and engine IDs, and one stream per forged identity kept for ever
grew the relay without limit (issue 10, item 3). At most ``max_streams`` are kept; a new
one beyond that evicts the least recently seen, and :meth:`SequenceTracker.expire` drops
streams silent for ``idle_timeout``. Forgetting a stream settles its gaps by the same rule
as the hold: a gap held for ``hold`` seconds is lost, and is counted; a younger one may
still be filled by a late datagram that can no longer be matched, so it is counted neither
as lost nor as delivered, but as ``flows_unsettled`` (no loss is counted for flows that may
still come; what could not be decided is said, not hidden). A forgotten stream that comes
back starts again from its next datagram, like a new one (or one after a restart of the
relay): loss while it was forgotten is not counted, and if that datagram was a reordered
one, the next in-order datagram can open a gap that is counted, as for any new stream.

A datagram's step can be unknown: an IPFIX sequence counts data records, and a data set held
for its template has no known record count yet. Such a datagram is observed with ``count``
None: the gap before it is accounted as usual, and the next datagram's sequence is taken as
the new expectation when it is ahead (loss across that one step cannot be told from the
unknown count, so none is counted), while a late one still fills open gaps.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

_MOD = 1 << 32
_HALF = 1 << 31

StreamKey = tuple[str, int, int, int]  # exporter, version, engine_type, engine_id

# 16,384 streams: far more exporter engines than a site has, and about 4 MB (a stream costs
# some 210 bytes: 262,144 forged identities grew the unbounded relay by 52-55 MB).
DEFAULT_MAX_STREAMS = 16_384
# Exporters send at least every active timeout (Cisco: 30 min at most, usually 1 min); a
# stream silent for 10 minutes is more likely gone than paused, and costs nothing to relearn.
DEFAULT_IDLE_TIMEOUT = 600.0


@dataclass(slots=True)
class _Stream:
    expected: int
    last_seen: float
    # The last datagram's step was unknown: the next sequence ahead is the new expectation.
    unknown_step: bool = False
    # Open gaps as [start, end) in sequence space (unwrapped offsets from ``expected``'s era
    # are avoided by storing absolute mod-2**32 values and comparing with signed deltas).
    gaps: list[tuple[int, int, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class SequenceStatistics:
    """A snapshot of the tracker's bound: what it holds and what it has forgotten."""

    streams: int  # tracked now (never more than max_streams)
    streams_evicted: int  # forgotten to make room for a new stream (the cap)
    streams_expired: int  # forgotten after idle_timeout without a datagram
    flows_unsettled: int  # in gaps younger than hold when their stream was forgotten


def _delta(a: int, b: int) -> int:
    """a - b in 32-bit sequence space, as a signed number."""
    return ((a - b + _HALF) % _MOD) - _HALF


class SequenceTracker:
    """Per-stream gap accounting, bounded in streams; ``now`` must not go backwards."""

    def __init__(
        self,
        *,
        hold: float = 2.0,
        max_gaps: int = 64,
        reset_window: int = 1 << 20,
        max_streams: int = DEFAULT_MAX_STREAMS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, not {max_streams}")
        self._hold = hold
        self._max_gaps = max_gaps
        self._reset_window = reset_window
        self._max_streams = max_streams
        self._idle_timeout = idle_timeout
        # Least recently seen first: eviction and idle expiry both take from the front.
        self._streams: OrderedDict[StreamKey, _Stream] = OrderedDict()
        self._evicted = 0
        self._expired = 0
        self._unsettled = 0

    def observe(self, key: StreamKey, sequence: int, count: int | None, now: float) -> int:
        """Account one datagram (``count`` None: its step is unknown, see the module
        docstring); returns the flows newly counted as lost."""
        stream = self._streams.get(key)
        unknown = count is None
        end = (sequence + (count or 0)) % _MOD
        if stream is None:
            lost = 0
            if len(self._streams) >= self._max_streams:
                _, oldest = self._streams.popitem(last=False)
                self._evicted += 1
                lost = self._forget(oldest, now)
            self._streams[key] = _Stream(expected=end, last_seen=now, unknown_step=unknown)
            return lost
        stream.last_seen = now
        self._streams.move_to_end(key)
        ahead = _delta(sequence, stream.expected)
        if stream.unknown_step and 0 <= ahead < self._reset_window:
            ahead = 0  # the previous step was unknown: this is where it ended
        if ahead >= 0 or abs(ahead) >= self._reset_window:
            stream.unknown_step = unknown  # only a datagram that moves the expectation
        if ahead == 0:
            stream.expected = end
            return self._expire(stream, now)
        if abs(ahead) >= self._reset_window:
            # Restart or reset: whatever was still open is lost, the new stream starts here.
            lost = sum(_delta(e, s) for s, e, _ in stream.gaps)
            stream.gaps.clear()
            stream.expected = end
            return lost
        if ahead > 0:
            stream.gaps.append((stream.expected, sequence, now))
            stream.expected = end
            lost = 0
            while len(stream.gaps) > self._max_gaps:
                s, e, _ = stream.gaps.pop(0)
                lost += _delta(e, s)
            return lost + self._expire(stream, now)
        # Late (reordered) or duplicate: fill what it covers of the open gaps.
        self._fill(stream, sequence, end)
        return self._expire(stream, now)

    def expire(self, now: float) -> int:
        """Count gaps older than ``hold`` and forget streams idle for ``idle_timeout``; call
        periodically so quiet streams settle."""
        return sum(lost for _, lost in self.expire_each(now))

    def expire_each(self, now: float) -> list[tuple[StreamKey, int]]:
        """:meth:`expire`, with the flows lost by stream (only streams that lost any): the
        exporter table attributes them."""
        found = []
        while self._streams:
            key, oldest = next(iter(self._streams.items()))
            if now - oldest.last_seen < self._idle_timeout:
                break
            del self._streams[key]
            self._expired += 1
            if lost := self._forget(oldest, now):
                found.append((key, lost))
        for key, stream in self._streams.items():
            if lost := self._expire(stream, now):
                found.append((key, lost))
        return found

    def flush(self) -> int:
        """Count every open gap (shutdown)."""
        lost = 0
        for stream in self._streams.values():
            lost += sum(_delta(e, s) for s, e, _ in stream.gaps)
            stream.gaps.clear()
        return lost

    def open_gaps(self) -> int:
        return sum(len(s.gaps) for s in self._streams.values())

    def pending(self, key: StreamKey) -> int:
        """Flows in this stream's open gaps, not yet counted either way (0 if untracked)."""
        stream = self._streams.get(key)
        return 0 if stream is None else sum(_delta(e, s) for s, e, _ in stream.gaps)

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, key: object) -> bool:
        return key in self._streams

    def statistics(self) -> SequenceStatistics:
        return SequenceStatistics(
            streams=len(self._streams),
            streams_evicted=self._evicted,
            streams_expired=self._expired,
            flows_unsettled=self._unsettled,
        )

    def _forget(self, stream: _Stream, now: float) -> int:
        """Settle a stream being dropped: its gaps past the hold are lost, the rest unsettled."""
        if not stream.gaps:
            return 0
        lost = self._expire(stream, now)
        self._unsettled += sum(_delta(e, s) for s, e, _ in stream.gaps)
        return lost

    def _expire(self, stream: _Stream, now: float) -> int:
        if not stream.gaps or now - stream.gaps[0][2] < self._hold:
            return 0
        lost = 0
        kept = []
        for s, e, t in stream.gaps:
            if now - t >= self._hold:
                lost += _delta(e, s)
            else:
                kept.append((s, e, t))
        stream.gaps[:] = kept
        return lost

    @staticmethod
    def _fill(stream: _Stream, start: int, end: int) -> None:
        remaining = []
        for s, e, t in stream.gaps:
            # Parts of [s, e) not covered by [start, end).
            if _delta(end, s) <= 0 or _delta(e, start) <= 0:
                remaining.append((s, e, t))
                continue
            if _delta(start, s) > 0:
                remaining.append((s, start, t))
            if _delta(e, end) > 0:
                remaining.append((end, e, t))
        stream.gaps[:] = remaining
