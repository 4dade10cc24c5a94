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
    ) -> None:
        self._renderer = renderer
        self._allow = allow
        self._metrics = metrics
        self._clock = clock
        # Not ``sequences or ...``: an empty tracker has a length of 0, and is falsy.
        self.sequences = SequenceTracker() if sequences is None else sequences
        self._log_limited = RateLimitedLog(log, clock=clock, limiter=limiter)
        self._exporters: dict[str, str] = {}
        self.templated = TemplatedIngest(
            renderer=renderer,
            metrics=metrics,
            sequences=self.sequences,
            decoder=TemplateDecoder() if templates is None else templates,
            log=self._log_limited,
            clock=clock,
            wall_clock=wall_clock,
        )

    def process(self, data: bytes, source: str, port: int = 0) -> list[bytes]:
        """The lines of one datagram from ``source`` (its address as the socket gave it) and
        UDP source ``port`` (which scopes templates only with templates.scope =
        "address-port")."""
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
            if version in TEMPLATE_VERSIONS:
                return self.templated.process(data, exporter, port)
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
        self.templated.tick()

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
