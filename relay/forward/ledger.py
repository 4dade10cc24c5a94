"""The delivery ledger of one connection: what was sent, what the peer's TCP acknowledged,
whether the link has stalled, and what must be sent again. Sans-IO: the caller feeds it the
bytes it wrote, the kernel's count of acknowledged bytes and the time.

Syslog over TLS has no application acknowledgement, so the only proof of delivery is the
peer's TCP acknowledgement of a batch's last byte. A *flight* is one batch written to the
connection: its end offset in the connection's raw byte stream (ciphertext with TLS), the
spool position after its last line, and its line count. Flights are committed in order,
and only whole: the spool cursor then never points inside a batch. When the connection
ends, every flight still in the air (and a batch whose write was interrupted) is counted as
resent: the next connection starts again from the spool cursor. This is the ledger of
Vector's disk buffer, kept apart from the reader, the writer and the I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")


@dataclass(frozen=True, slots=True, kw_only=True)
class Flight(Generic[P]):
    """A batch written to the connection and not yet acknowledged."""

    raw_end: int  # raw bytes written on the connection once the batch was handed over
    end: P  # spool position after the batch's last line
    lines: int
    wire_bytes: int  # framed bytes of the batch (before TLS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit(Generic[P]):
    """Flights the peer acknowledged: move the spool cursor to ``end``."""

    end: P
    lines: int
    wire_bytes: int


class Ledger(Generic[P]):
    """Flights of one connection, in the order they were written.

    ``written`` is what the connection had written before the first batch (the TLS
    handshake): acknowledgements up to there prove nothing about data.
    """

    __slots__ = ("_acked", "_flights", "_progress_at", "_sending")

    def __init__(self, *, written: int, now: float) -> None:
        self._flights: deque[Flight[P]] = deque()
        self._acked = written
        self._progress_at = now
        self._sending = 0

    @property
    def outstanding(self) -> bool:
        """Whether any batch is written and not acknowledged."""
        return bool(self._flights)

    @property
    def outstanding_lines(self) -> int:
        return sum(flight.lines for flight in self._flights)

    def sending(self, lines: int) -> None:
        """A write of ``lines`` lines has begun; if it never returns, they count as resent."""
        self._sending = lines

    def sent(self, *, raw_end: int, end: P, lines: int, wire_bytes: int, now: float) -> None:
        """The write returned: the batch is in the air up to ``raw_end``."""
        if self._flights and raw_end < self._flights[-1].raw_end:
            raise ValueError(f"raw_end {raw_end} goes backwards")
        if not self._flights:
            self._progress_at = now  # the stall clock starts with the first byte in the air
        self._flights.append(Flight(raw_end=raw_end, end=end, lines=lines, wire_bytes=wire_bytes))
        self._sending = 0

    def acknowledged(self, acked: int, *, now: float, committable: bool = True) -> Commit[P] | None:
        """The peer's TCP has acknowledged ``acked`` raw bytes: the flights that are wholly
        acknowledged, merged into one commit, or None.

        ``committable`` is False while a TLS 1.3 server may still reject our certificate:
        progress is noted (the link is alive) but nothing is committed yet.
        """
        flights = self._flights
        if not flights:
            return None
        if acked > self._acked:
            self._acked = acked
            self._progress_at = now
        if flights[0].raw_end > acked or not committable:
            return None
        lines = wire = 0
        end = flights[0].end
        while flights and flights[0].raw_end <= acked:
            flight = flights.popleft()
            lines += flight.lines
            wire += flight.wire_bytes
            end = flight.end
        return Commit(end=end, lines=lines, wire_bytes=wire)

    def stalled(self, *, now: float, timeout: float) -> bool:
        """Data is outstanding and not one more byte was acknowledged for ``timeout``."""
        return bool(self._flights) and now - self._progress_at > timeout

    def abandon(self) -> int:
        """The connection ended: the lines sent and not acknowledged (they go again on the
        next connection, and may arrive twice). The ledger is empty afterwards."""
        lines = self.outstanding_lines + self._sending
        self._flights.clear()
        self._sending = 0
        return lines
