"""Flow loss from ``flow_sequence`` gaps, per exporter and engine (sans-IO, time injected).

The header's flow_sequence is the number of flows the exporter had sent before this
datagram, so the next datagram of the same stream should carry ``sequence + count``. A
larger value is a gap. A gap is not counted at once: UDP reorders, and the late datagram
fills it. Gaps are held for ``hold`` seconds (or until too many are open) and only then
counted as lost. A value far below or far above the expected one is an exporter restart
(or a counter reset), not loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_MOD = 1 << 32
_HALF = 1 << 31

StreamKey = tuple[str, int, int, int]  # exporter, version, engine_type, engine_id


@dataclass(slots=True)
class _Stream:
    expected: int
    # Open gaps as [start, end) in sequence space (unwrapped offsets from ``expected``'s era
    # are avoided by storing absolute mod-2**32 values and comparing with signed deltas).
    gaps: list[tuple[int, int, float]] = field(default_factory=list)


def _delta(a: int, b: int) -> int:
    """a - b in 32-bit sequence space, as a signed number."""
    return ((a - b + _HALF) % _MOD) - _HALF


class SequenceTracker:
    def __init__(
        self, *, hold: float = 2.0, max_gaps: int = 64, reset_window: int = 1 << 20
    ) -> None:
        self._hold = hold
        self._max_gaps = max_gaps
        self._reset_window = reset_window
        self._streams: dict[StreamKey, _Stream] = {}

    def observe(self, key: StreamKey, sequence: int, count: int, now: float) -> int:
        """Account one datagram; returns the flows newly counted as lost."""
        stream = self._streams.get(key)
        end = (sequence + count) % _MOD
        if stream is None:
            self._streams[key] = _Stream(expected=end)
            return 0
        ahead = _delta(sequence, stream.expected)
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
        """Count gaps older than ``hold``; call periodically so quiet streams settle."""
        return sum(self._expire(s, now) for s in self._streams.values())

    def flush(self) -> int:
        """Count every open gap (shutdown)."""
        lost = 0
        for stream in self._streams.values():
            lost += sum(_delta(e, s) for s, e, _ in stream.gaps)
            stream.gaps.clear()
        return lost

    def open_gaps(self) -> int:
        return sum(len(s.gaps) for s in self._streams.values())

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
