"""One datagram in, its syslog lines out, every outcome counted (sans-IO, clock injected).

This is where a datagram's fate is decided once: denied (allow-list), malformed (dropped,
counted by reason, logged rate-limited), or rendered; warnings and sequence gaps are
counted on the way. The receiver owns the socket and calls :meth:`Ingest.process`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from relay.addresses import exporter_address
from relay.allow import AllowList
from relay.errors import DecodeError
from relay.flows import SUPPORTED_VERSIONS
from relay.logs import RateLimitedLog, RateLimiter
from relay.metrics import RelayMetrics
from relay.render import Renderer
from relay.sequence import SequenceTracker

log = logging.getLogger(__name__)
_VERSION_LABELS = {v: (("version", str(v)),) for v in SUPPORTED_VERSIONS}
_OTHER_VERSION = (("version", "other"),)
_CACHE_LIMIT = 65536


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
    ) -> None:
        self._renderer = renderer
        self._allow = allow
        self._metrics = metrics
        self._clock = clock
        self.sequences = sequences or SequenceTracker()
        self._log_limited = RateLimitedLog(log, clock=clock, limiter=limiter)
        self._exporters: dict[str, str] = {}

    def process(self, data: bytes, source: str) -> list[bytes]:
        m = self._metrics
        version = (data[0] << 8 | data[1]) if len(data) >= 2 else -1
        m.packets_received.inc(1, _VERSION_LABELS.get(version, _OTHER_VERSION))
        exporter = self._exporters.get(source)
        if exporter is None:
            if len(self._exporters) >= _CACHE_LIMIT:
                self._exporters.clear()
            exporter = self._exporters[source] = exporter_address(source)
        if not self._allow.allows(exporter):
            m.packets_denied.inc()
            self._log(
                "datagram_denied",
                exporter,
                "datagram dropped: exporter is outside the allow-list (listen.allow / --allow)",
            )
            return []
        try:
            rendered = self._renderer.render_datagram(data, exporter)
        except DecodeError as exc:
            m.packets_malformed.inc(1, (("reason", exc.reason),))
            self._log("datagram_malformed", exporter, f"datagram dropped: {exc}", reason=exc.reason)
            return []
        header = rendered.header
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
        return rendered.lines

    def tick(self) -> None:
        """Periodic: settle sequence gaps that no late datagram filled."""
        lost = self.sequences.expire(self._clock())
        if lost:
            self._metrics.flows_lost.inc(lost)

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
