"""NetFlow v9 and IPFIX datagrams in, syslog lines out, every set counted (sans-IO).

:class:`relay.ingest.Ingest` decides a datagram's fate; for v9 and IPFIX that fate is decided
per set, which is this module's: the message is cut into sets (relay.flows.messages), the
template decoder applies templates and options and holds data that waits for its template
(relay.flows.template_decoder), and each data set that can be decoded is rendered with the
options that govern it. A set that does not fit is dropped and counted by reason in
``flowrelay_sets_dropped_total`` while the other sets of the same datagram still render.

Two clocks: ``clock`` (monotonic) for sequence tracking, as for every version, and
``wall_clock`` for templates and held sets, whose times are persisted across restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from relay.exporters import Exporter, ExporterTable
from relay.flows import messages
from relay.flows.model import Message, Problem
from relay.flows.options_state import OptionsKey
from relay.flows.template_decoder import Decoded, TemplateDecoder
from relay.logs import RateLimitedLog
from relay.metrics import RelayMetrics
from relay.render import Renderer
from relay.render.template_line import NO_OPTIONS, LineContext
from relay.sequence import SequenceTracker

__all__ = ["TemplatedIngest"]


class TemplatedIngest:
    """The v9/IPFIX half of ingest: owns the template decoder, renders its batches."""

    def __init__(
        self,
        *,
        renderer: Renderer,
        metrics: RelayMetrics,
        sequences: SequenceTracker,
        decoder: TemplateDecoder,
        log: RateLimitedLog,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        exporters: ExporterTable,
    ) -> None:
        self._renderer = renderer
        self._metrics = metrics
        self._sequences = sequences
        self.decoder = decoder
        self._log = log
        self._clock = clock
        self._wall = wall_clock
        self._exporters = exporters

    def process(self, data: bytes, exporter: str, port: int) -> list[bytes]:
        """Raises DecodeError when the message header itself is unusable (the caller counts
        the datagram as malformed); every fault past the header is one set's."""
        message = messages.parse(data)
        header = message.header
        entry = self._exporters.entry(exporter, header.domain)
        entry.datagrams += 1
        entry.version_bits |= 1 << header.version
        decoded = self.decoder.decode(message, exporter, port, self._wall())
        lines: list[bytes] = []
        render = self._renderer.render_template
        problems: list[Problem] = list(decoded.problems)
        context_of = self._context
        for batch in decoded.batches:
            got, tail = render(
                batch.plan,
                batch.data,
                batch.header,
                exporter,
                context_of(batch.options_key),
                part=batch.part,
                offset=batch.offset,
            )
            lines += got
            problems += tail
        if problems:
            self._count_problems(problems, exporter, header.version, entry)
        if message.warnings:
            for warning in message.warnings:
                self._metrics.packets_warning.inc(1, (("warning", warning),))
        self._metrics.records_decoded.inc(len(lines))
        entry.records += len(lines)
        self._sequence(message, decoded, exporter, entry)
        return lines

    def tick(self) -> None:
        """Periodic: forget stale templates and options, drop held sets that waited too long
        (counted by what they waited for)."""
        expired = self.decoder.tick(self._wall())
        for reason, sets in expired.sets.items():
            if sets:
                self._metrics.sets_dropped.inc(sets, (("reason", reason),))
                self._log.emit(
                    ("sets_expired", reason),
                    f"{sets} held data sets dropped: {_WAITED_FOR.get(reason, reason)} "
                    "did not arrive in time (templates.hold_age)",
                    event="sets_expired",
                    reason=reason,
                    sets=sets,
                )

    def _context(self, key: OptionsKey) -> LineContext:
        options = self.decoder.options
        names = options.interface_names(key)
        return LineContext(
            sampling=partial(options.sampling_for, key),
            # NO_OPTIONS' own callable tells the fast path to skip name lookups altogether.
            interface_name=NO_OPTIONS.interface_name if names is None else names.get,
            system_init_ms=options.system_init_ms(key),
        )

    def _count_problems(
        self, problems: list[Problem], exporter: str, version: int, entry: Exporter
    ) -> None:
        inc = self._metrics.sets_dropped.inc
        for problem in problems:
            inc(1, (("reason", problem.reason),))
            entry.malformed_datagram(problem.reason)
            self._log.emit(
                ("set_dropped", exporter, problem.reason),
                f"NetFlow v{version} set dropped: {problem.detail}",
                event="set_dropped",
                exporter=exporter,
                reason=problem.reason,
                part=problem.part,
                offset=problem.offset,
            )

    def _sequence(self, message: Message, decoded: Decoded, exporter: str, entry: Exporter) -> None:
        header = message.header
        key = (exporter, *header.sequence_scope)
        # v9 counts export packets; IPFIX data records, unknown (None) while a set of the
        # message is held for its template (relay.sequence: the next message resyncs).
        step = header.sequence_step if header.version == 9 else decoded.data_records
        lost = self._sequences.observe(key, header.flow_sequence, step, self._clock())
        if lost:
            self._metrics.flows_lost.inc(lost)
            entry.flows_lost += lost


_WAITED_FOR = {
    "no_template": "their template",
    "no_system_init": "the exporter's systemInitTimeMilliseconds",
}
