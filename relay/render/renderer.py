"""Flow records -> syslog lines (sans-IO); the wire framing is :mod:`relay.framing`.

One line per flow: ``<PRI>Mmm dd HH:MM:SS HOST TAG: BODY`` (Devo/Logtrust style, RFC 3164
shape) or ``<PRI>1 ISO-TIMESTAMP HOST TAG - - - BODY`` (RFC 5424). HOST is the exporter's
address, the timestamp is the datagram's export time in UTC, so a line says when the
exporter reported the flow, whatever delay the relay or the platform adds.

Everything a datagram's records share (the syslog header and the seven header keys of the
body) is formatted once per datagram, as the line's prefix; per record only the compiled
function of the batch's layout runs (:mod:`relay.render.compiled`), found by the layout's
fingerprint. ``render`` is the readable path (:mod:`relay.render.generic`) the tests hold
the compiled one to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from relay.flows import LAYOUTS, split
from relay.flows.layout import Layout
from relay.flows.legacy import time_bases
from relay.flows.model import Packet, PacketHeader, Problem
from relay.render import generic
from relay.render.compiled import MILLIS, CompiledLines, compile_lines
from relay.render.keys import HEADER_KEYS, LinePlan, plan
from relay.render.options import Body, RenderOptions

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CACHE_LIMIT = 4096
# Layouts are few today (four versions) and bounded per exporter with templates; this only
# keeps a flood of distinct templates from growing the cache without end.
_COMPILED_LIMIT = 1024


def header_template(body: Body) -> str:
    """%-template of the body's opening and its header keys (the exporter is the one string;
    it is an address, which needs no escaping)."""
    slots = [(key, '"%s"' if key == "exporter" else "%d") for key in HEADER_KEYS]
    if body == "json":
        return "{" + ",".join(f'"{key}":{slot}' for key, slot in slots) + ","
    return " ".join(f"{key}=%s" for key, _ in slots) + " "


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """What the hot path needs of one datagram: its header, its lines, what was tolerated,
    and the parts that could not be decoded (never any for v1/v5/v6/v7)."""

    header: PacketHeader
    lines: list[bytes]
    warnings: tuple[str, ...]
    trailing_bytes: int
    problems: tuple[Problem, ...] = ()


class Renderer:
    """Renders datagrams and packets. Holds only bounded caches: formatted timestamps, and
    the compiled function and key plan of each layout seen, by fingerprint."""

    __slots__ = (
        "_compiled",
        "_header_template",
        "_iso_cache",
        "_options",
        "_plans",
        "_stamp_cache",
    )

    def __init__(self, options: RenderOptions | None = None) -> None:
        self._options = options or RenderOptions()
        self._header_template = header_template(self._options.body)
        self._compiled: dict[str, CompiledLines] = {}
        self._plans: dict[str, LinePlan] = {}
        self._iso_cache: dict[int, str] = {}
        self._stamp_cache: dict[int, str] = {}
        # Compiled now, not on a version's first datagram: the hot path never waits on exec.
        for fmt in LAYOUTS.values():
            self.compiled(fmt.layout)

    def render_datagram(self, data: bytes, exporter: str) -> Rendered:
        """Validate and render one UDP payload in a single pass (the receiver's hot path).

        Raises DecodeError exactly where ``relay.flows.decode`` would.
        """
        parts = split(data)
        header = parts.header
        k_time, k_up = time_bases(header.sys_uptime, header.export_time_ms)
        if len(self._iso_cache) >= _CACHE_LIMIT:
            self._iso_cache.clear()
        prefix = self._prefix(header, exporter)
        lines: list[bytes] = []
        for batch in parts.batches:
            layout = batch.layout
            compiled = self._compiled.get(layout.fingerprint) or self.compiled(layout)
            lines += compiled.build(
                batch.data, k_time, k_up, prefix, self._iso_cache, self._iso_second
            )
        return Rendered(
            header=header,
            lines=lines,
            warnings=parts.warnings,
            trailing_bytes=parts.trailing_bytes,
            problems=parts.problems,
        )

    def compiled(self, layout: Layout) -> CompiledLines:
        """The fast path of ``layout`` in this renderer's body style (``.source()`` shows it)."""
        found = self._compiled.get(layout.fingerprint)
        if found is None:
            if len(self._compiled) >= _COMPILED_LIMIT:
                self._compiled.clear()
            found = self._compiled[layout.fingerprint] = compile_lines(layout, self._options.body)
        return found

    @property
    def options(self) -> RenderOptions:
        return self._options

    def render(self, packet: Packet, exporter: str) -> list[bytes]:
        """One line per record, without framing, UTF-8: the readable path, value by value."""
        body = self._options.body
        h = packet.header
        values = [(key, exporter if key == "exporter" else getattr(h, key)) for key in HEADER_KEYS]
        head = generic.header_pairs(values, body)
        syslog = self._syslog_header(h.export_time_ms, exporter)
        lines = []
        for batch, records in zip(packet.batches, packet.batch_records, strict=True):
            line_plan = self._plan(batch.layout)
            for record in records:
                pairs = generic.record_pairs(line_plan, record._asdict(), body, generic.iso_utc)
                lines.append((syslog + generic.body_text(head, pairs, body)).encode())
        return lines

    def _plan(self, layout: Layout) -> LinePlan:
        found = self._plans.get(layout.fingerprint)
        if found is None:
            if len(self._plans) >= _COMPILED_LIMIT:
                self._plans.clear()
            found = self._plans[layout.fingerprint] = plan(layout)
        return found

    def iso(self, ms: int) -> str:
        """UNIX milliseconds → ``2026-11-22T12:34:56.789Z``."""
        seconds, millis = divmod(ms, 1000)
        if len(self._iso_cache) >= _CACHE_LIMIT:
            self._iso_cache.clear()
        return (self._iso_cache.get(seconds) or self._iso_second(seconds)) + MILLIS[millis]

    def _iso_second(self, seconds: int) -> str:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        self._iso_cache[seconds] = text
        return text

    def _prefix(self, h: PacketHeader, exporter: str) -> str:
        """Syslog header and the body keys every record of a datagram shares (the values in
        HEADER_KEYS order; ``render`` takes them by name, and the tests hold the two equal)."""
        return self._syslog_header(h.export_time_ms, exporter) + self._header_template % (
            h.version,
            exporter,
            h.flow_sequence,
            h.engine_type,
            h.engine_id,
            h.sampling_interval,
            h.sampling_mode,
        )

    def _syslog_header(self, export_ms: int, exporter: str) -> str:
        # Both headers show the same instant: export time from unix_secs and unix_nsecs (a
        # broken exporter's nsecs beyond 1e9 carries into the seconds, as in the records).
        opts = self._options
        if opts.header == "rfc5424":
            return f"<{opts.pri}>1 {self.iso(export_ms)} {exporter} {opts.tag} - - - "
        secs = export_ms // 1000
        legacy = self._stamp_cache.get(secs)
        if legacy is None:
            if len(self._stamp_cache) >= _CACHE_LIMIT:
                self._stamp_cache.clear()
            legacy = self._stamp_cache[secs] = rfc3164_timestamp(secs)
        return f"<{opts.pri}>{legacy} {exporter} {opts.tag}: "


def rfc3164_timestamp(secs: int) -> str:
    """``Mmm dd HH:MM:SS`` in UTC; the day of month is space-padded (``Nov  3``)."""
    t = time.gmtime(secs)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {time.strftime('%H:%M:%S', t)}"
