"""One datagram in, its syslog lines out, every outcome counted (sans-IO, clock injected).

This is where a datagram's fate is decided once: denied (allow-list), malformed (dropped,
counted by reason, logged rate-limited), or rendered; warnings and sequence gaps are
counted on the way. NetFlow v9 and IPFIX carry sets whose fates differ: past the allow-list
and the message header, :mod:`relay.templated_ingest` decides per set. The receiver owns the
socket and calls :meth:`Ingest.process`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from relay.addresses import exporter_address
from relay.allow import AllowList
from relay.errors import DecodeError
from relay.exporters import Exporter, ExporterTable
from relay.flows import SUPPORTED_VERSIONS
from relay.flows.messages import TEMPLATE_VERSIONS
from relay.flows.template_decoder import TemplateDecoder
from relay.logs import RateLimitedLog, RateLimiter
from relay.metrics import RelayMetrics
from relay.render import Renderer
from relay.sequence import SequenceTracker
from relay.templated_ingest import TemplatedIngest

log = logging.getLogger(__name__)
_VERSION_LABELS = {v: (("version", str(v)),) for v in (*SUPPORTED_VERSIONS, *TEMPLATE_VERSIONS)}
_OTHER_VERSION = (("version", "other"),)
_CACHE_LIMIT = 65536


class _Source:
    """What one socket source resolves to, found with one dict lookup per datagram: its
    exporter address, whether the allow-list takes it (the list does not change while the
    relay runs), and its v1-v7 entry in the exporter table (made on its first such datagram:
    a v9/IPFIX exporter has entries per domain instead)."""

    __slots__ = ("allowed", "entry", "exporter")

    def __init__(self, exporter: str, allowed: bool) -> None:
        self.exporter = exporter
        self.allowed = allowed
        self.entry: Exporter | None = None


class Ingest:
    def __init__(
        self,
        *,
        renderer: Renderer,
        allow: AllowList,
        metrics: RelayMetrics,
        clock: Callable[[], float],
        sequences: SequenceTracker | None = None,
        limiter: RateLimiter | None = None,
        templates: TemplateDecoder | None = None,
        wall_clock: Callable[[], float] = time.time,
        exporters: ExporterTable | None = None,
    ) -> None:
        self._renderer = renderer
        self._allow = allow
        self._metrics = metrics
        self._clock = clock
        # Not ``sequences or ...``: an empty tracker has a length of 0, and is falsy.
        self.sequences = SequenceTracker() if sequences is None else sequences
        self._log_limited = RateLimitedLog(log, clock=clock, limiter=limiter)
        self._sources: dict[str, _Source] = {}
        self.exporters = ExporterTable(wall_clock=wall_clock) if exporters is None else exporters
        self.templated = TemplatedIngest(
            renderer=renderer,
            metrics=metrics,
            sequences=self.sequences,
            decoder=TemplateDecoder() if templates is None else templates,
            log=self._log_limited,
            clock=clock,
            wall_clock=wall_clock,
            exporters=self.exporters,
        )

    def process(self, data: bytes, source: str, port: int = 0) -> list[bytes]:
        """The lines of one datagram from ``source`` (its address as the socket gave it) and
        UDP source ``port`` (which scopes templates only with templates.scope =
        "address-port")."""
        m = self._metrics
        version = (data[0] << 8 | data[1]) if len(data) >= 2 else -1
        m.packets_received.inc(1, _VERSION_LABELS.get(version, _OTHER_VERSION))
        src = self._sources.get(source)
        if src is None:
            src = self._resolve(source)
        exporter = src.exporter
        if not src.allowed:
            m.packets_denied.inc()
            self._log(
                "datagram_denied",
                exporter,
                "datagram dropped: exporter is outside the allow-list (listen.allow / --allow)",
            )
            return []
        if version in TEMPLATE_VERSIONS:
            try:
                return self.templated.process(data, exporter, port)
            except DecodeError as exc:
                # The header is unusable: its domain is read from where it would be.
                bad = self.exporters.entry(exporter, _raw_domain(data, version))
                bad.datagrams += 1
                bad.malformed_datagram(exc.reason)
                self._malformed(exc, exporter)
                return []
        entry = src.entry or self._entry(src)
        entry.datagrams += 1
        try:
            rendered = self._renderer.render_datagram(data, exporter)
        except DecodeError as exc:
            entry.malformed_datagram(exc.reason)
            self._malformed(exc, exporter)
            return []
        entry.version_bits |= 1 << version
        header = rendered.header
        entry.records += len(rendered.lines)
        m.records_decoded.inc(len(rendered.lines))
        for warning in rendered.warnings:
            m.packets_warning.inc(1, (("warning", warning),))
            self._log(
                "datagram_warning",
                exporter,
                f"datagram decoded despite {warning}: count {header.count}, "
                f"{rendered.trailing_bytes} trailing bytes",
                reason=warning,
            )
        if header.has_sequence:
            lost = self.sequences.observe(
                (exporter, *header.sequence_scope),
                header.flow_sequence,
                header.sequence_step,
                self._clock(),
            )
            if lost:
                m.flows_lost.inc(lost)
                entry.flows_lost += lost
        return rendered.lines

    def _resolve(self, source: str) -> _Source:
        if len(self._sources) >= _CACHE_LIMIT:
            self._sources.clear()
        exporter = exporter_address(source)
        src = self._sources[source] = _Source(exporter, self._allow.allows(exporter))
        return src

    def _entry(self, src: _Source) -> Exporter:
        entry = src.entry = self.exporters.entry(src.exporter)
        return entry

    def _malformed(self, exc: DecodeError, exporter: str) -> None:
        self._metrics.packets_malformed.inc(1, (("reason", exc.reason),))
        self._log("datagram_malformed", exporter, f"datagram dropped: {exc}", reason=exc.reason)

    def tick(self) -> None:
        """Periodic: settle sequence gaps that no late datagram filled (each one's loss
        attributed to its exporter), and the exporter table's clock work."""
        lost = 0
        for key, flows in self.sequences.expire_each(self._clock()):
            lost += flows
            address, version, scope, _ = key
            self.exporters.lost(address, scope if version in TEMPLATE_VERSIONS else None, flows)
        if lost:
            self._metrics.flows_lost.inc(lost)
        self.templated.tick()
        self.exporters.tick()

    def flush(self) -> None:
        lost = self.sequences.flush()
        if lost:
            self._metrics.flows_lost.inc(lost)

    def _log(self, event: str, exporter: str, message: str, *, reason: str = "") -> None:
        key = (event, exporter, reason)
        if reason:
            self._log_limited.emit(key, message, event=event, exporter=exporter, reason=reason)
        else:
            self._log_limited.emit(key, message, event=event, exporter=exporter)


def _raw_domain(data: bytes, version: int) -> int | None:
    """The v9 Source ID (bytes 16-19) or IPFIX Observation Domain (12-15) of a message whose
    header did not parse; None when the datagram is too short to hold it."""
    at = 16 if version == 9 else 12
    return int.from_bytes(data[at : at + 4]) if len(data) >= at + 4 else None
