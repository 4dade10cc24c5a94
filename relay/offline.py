"""``relay decode``: what the relay would send for captured or saved datagrams.

Every datagram goes through the daemon's own :class:`relay.ingest.Ingest`, so offline
decoding is the same path as ``relay run``, templates included: a v9/IPFIX template learned
from an earlier packet of a capture (or an earlier file of the command line) decodes the data
of later ones, options govern the records after them, and data that comes before its
template is held and released when it arrives. The clock is the capture's (each packet's
timestamp; never going back), so holding and expiry behave as they would have live; raw
files have no time and all share one instant.

What the daemon would log about a datagram (dropped, a set dropped, a warning) is written on
stderr with the file and packet it came from: the ingest's log records are caught, not rate
limited. Held sets that never find their template are named at the end, as expired.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from relay.allow import AllowList
from relay.flows.holding import DEFAULT_HOLD_AGE
from relay.ingest import Ingest
from relay.logs import RateLimiter
from relay.metrics import RelayMetrics
from relay.pcap import CaptureError, UdpDatagram, Unreadable, is_capture, read_capture
from relay.render import Renderer

_INGEST_LOGGER = "relay.ingest"
_EVERYONE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
# The daemon ticks its ingest (sequence gaps, template and held-set expiry) about once a
# second; offline does so by the capture's clock.
_TICK = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeSummary:
    datagrams: int
    records: int
    invalid: int  # datagrams the relay would have dropped whole
    unreadable_files: int
    sets_dropped: int = 0  # v9/IPFIX sets dropped (malformed, refused, expired while held)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Item:
    where: str  # "FILE" or "FILE: packet N"
    source: str
    port: int
    time: float | None  # capture timestamp; None for a raw file
    payload: bytes | None
    problem: str | None = None  # why a captured packet cannot be decoded


@dataclass(slots=True)
class _Held:
    """A datagram with data sets still held for their template."""

    where: str
    source: str
    sets: int


class _Caught(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _catch(name: str) -> Iterator[_Caught]:
    """The logger's records, caught instead of going wherever logging was configured."""
    logger = logging.getLogger(name)
    handler = _Caught()
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate, level = saved
        logger.setLevel(level)


class _Offline:
    """One ``relay decode`` run: the daemon's ingest, the capture's clock, and which
    datagrams still have sets held (oldest first: held sets expire in arrival order)."""

    def __init__(self, renderer: Renderer, caught: _Caught, err: TextIO) -> None:
        self.now = 0.0
        self._ticked = 0.0
        self._caught = caught
        self._err = err
        self._metrics = RelayMetrics()
        self.ingest = Ingest(
            renderer=renderer,
            allow=AllowList(_EVERYONE),
            metrics=self._metrics,
            clock=self._clock,
            wall_clock=self._clock,
            # interval 0: every line is let through (the key's and the event's limits).
            limiter=RateLimiter(interval=0.0, burst=1 << 62),
        )
        self._held: deque[_Held] = deque()
        self.invalid = self.sets_dropped = 0

    def _clock(self) -> float:
        return self.now

    def process(self, item: _Item, payload: bytes) -> list[bytes]:
        if item.time is not None and item.time > self.now:
            self.now = item.time  # a capture's clock never goes back
        if self.now - self._ticked >= _TICK:
            self._ticked = self.now
            self._tick()
        decoder = self.ingest.templated.decoder
        before = decoder.statistics()
        warnings = dict(self._metrics.packets_warning.values)
        lines = self.ingest.process(payload, item.source, item.port)
        after = decoder.statistics()
        logged = self._report(item)
        # A warning counted but not logged (the v9/IPFIX path only counts them) is named too.
        for labels, count in self._metrics.packets_warning.values.items():
            reason = dict(labels).get("warning", "")
            if count > warnings.get(labels, 0) and reason not in logged:
                detail = (
                    f": {trailing} bytes after the message"
                    if (trailing := _trailing(payload)) and reason == "trailing_bytes"
                    else ""
                )
                self._err.write(f"{item.where}: from {item.source}: warning {reason}{detail}\n")
        released = after.sets_released - before.sets_released
        held = after.sets_held - before.sets_held
        # Which held sets a template released is the decoder's business; here the oldest
        # are taken first, which is exact whenever sets wait for templates in arrival order.
        while released and self._held:
            oldest = self._held[0]
            taken = min(released, oldest.sets)
            oldest.sets -= taken
            released -= taken
            if not oldest.sets:
                self._held.popleft()
        if held:
            self._held.append(_Held(where=item.where, source=item.source, sets=held))
        return lines

    def finish(self) -> None:
        """Everything still held has waited for good: expire it, as the daemon would."""
        self.now += DEFAULT_HOLD_AGE + _TICK
        self._tick()
        self.ingest.flush()

    def _tick(self) -> None:
        self.ingest.tick()
        expired: dict[str, int] = {}
        for record in self._drain():
            if getattr(record, "event", "") == "sets_expired":
                reason = str(getattr(record, "reason", "expired"))
                expired[reason] = expired.get(reason, 0) + int(getattr(record, "sets", 0))
        total = sum(expired.values())
        self.sets_dropped += total
        reasons = ", ".join(sorted(expired))
        while total and self._held:
            oldest = self._held[0]
            sets = min(total, oldest.sets)
            oldest.sets -= sets
            total -= sets
            if not oldest.sets:
                self._held.popleft()
            self._err.write(
                f"{oldest.where}: from {oldest.source}: {sets} held data "
                f"set{'s' if sets > 1 else ''} never released: expired ({reasons})\n"
            )

    def _report(self, item: _Item) -> set[str]:
        """Writes what the ingest logged about the datagram; returns the warnings."""
        warned = set()
        for record in self._drain():
            event = str(getattr(record, "event", ""))
            reason = str(getattr(record, "reason", ""))
            message = record.getMessage()
            if event == "datagram_malformed":
                self.invalid += 1
                detail = message.removeprefix("datagram dropped: ")
                text = f"invalid ({reason}): {detail}"
            elif event == "set_dropped":
                self.sets_dropped += 1
                text = (
                    f"set {getattr(record, 'part', '?')} dropped ({reason}): "
                    + (message.split(": ", 1)[-1])
                )
            elif event == "datagram_warning":
                warned.add(reason)
                text = f"warning {reason}: {message}"
            else:
                text = message
            self._err.write(f"{item.where}: from {item.source}: {text}\n")
        return warned

    def _drain(self) -> list[logging.LogRecord]:
        records = self._caught.records[:]
        self._caught.records.clear()
        return records


def decode_files(
    paths: Iterable[Path],
    *,
    renderer: Renderer,
    exporter: str,
    port: int | None,
    out: BinaryIO,
    err: TextIO,
) -> DecodeSummary:
    """Print one line per record of every file, in the order given; name each invalid
    datagram or set on ``err``.

    A capture (pcap/pcapng) gives each datagram's exporter itself; any other file is one raw
    UDP payload from ``exporter``. ``port`` keeps only captured packets to that UDP port.
    """
    datagrams = records = unreadable = 0
    invalid = 0
    with _catch(_INGEST_LOGGER) as caught:
        run = _Offline(renderer, caught, err)
        for path in paths:
            try:
                items, broken = _items(path, exporter, port)
            except OSError as exc:
                err.write(f"{path}: cannot read: {exc.strerror or exc}\n")
                unreadable += 1
                continue
            for item in items:
                datagrams += 1
                if item.payload is None:
                    invalid += 1
                    err.write(f"{item.where}: from {item.source}: {item.problem}\n")
                    continue
                lines = run.process(item, item.payload)
                records += len(lines)
                out.write(b"".join(line + b"\n" for line in lines))
            if broken is not None:
                err.write(f"{path}: {broken}\n")
                unreadable += 1
        run.finish()
    return DecodeSummary(
        datagrams=datagrams,
        records=records,
        invalid=invalid + run.invalid,
        unreadable_files=unreadable,
        sets_dropped=run.sets_dropped,
    )


def _trailing(payload: bytes) -> int:
    """Bytes after an IPFIX message's own length (0 for anything else)."""
    if len(payload) >= 4 and payload[:2] == b"\x00\x0a":
        return max(0, len(payload) - int.from_bytes(payload[2:4], "big"))
    return 0


def _items(path: Path, exporter: str, port: int | None) -> tuple[list[_Item], str | None]:
    """The datagrams of one file, and why a capture stopped early (None if it did not)."""
    data = path.read_bytes()
    if not is_capture(data):
        return [_Item(where=str(path), source=exporter, port=0, time=None, payload=data)], None
    items: list[_Item] = []
    try:
        for got in read_capture(data):
            if port is not None and isinstance(got, UdpDatagram) and got.dst_port != port:
                continue
            where = f"{path}: packet {got.number}"
            if isinstance(got, Unreadable):
                items.append(_Item(where=where, source=got.src, port=0, time=None,
                                   payload=None, problem=got.reason))  # fmt: skip
            else:
                items.append(_Item(where=where, source=got.src, port=got.src_port,
                                   time=got.time, payload=got.payload))  # fmt: skip
    except CaptureError as exc:
        return items, str(exc)
    return items, None
