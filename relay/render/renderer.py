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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay.flows import LAYOUTS, split
from relay.flows.layout import Layout
from relay.flows.legacy import time_bases
from relay.flows.model import Packet, PacketHeader, Problem
from relay.flows.options_state import Sampling
from relay.flows.records import RecordPlan, decode_records
from relay.render import generic
from relay.render.compiled import MILLIS, CompiledLines, compile_lines
from relay.render.compiled_template import (
    PAST,
    SHORT,
    CompiledTemplate,
    compile_template,
    template_compilable,
)
from relay.render.keys import HEADER_KEYS, LinePlan, plan
from relay.render.options import Body, RenderOptions
from relay.render.template_line import (
    NO_OPTIONS,
    LineContext,
    TemplateLine,
    record_problem,
    template_body,
    template_line,
)

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
        "_last_compiled",
        "_last_plan",
        "_options",
        "_plans",
        "_stamp_cache",
        "_template_lines",
        "_templates",
    )

    def __init__(self, options: RenderOptions | None = None) -> None:
        self._options = options or RenderOptions()
        self._header_template = header_template(self._options.body)
        self._compiled: dict[str, CompiledLines] = {}
        self._plans: dict[str, LinePlan] = {}
        self._iso_cache: dict[int, str] = {}
        self._stamp_cache: dict[int, str] = {}
        self._templates: dict[TemplateKey, CompiledTemplate | None] = {}
        self._template_lines: dict[TemplateKey, TemplateLine] = {}
        self._last_plan: RecordPlan | None = None
        self._last_compiled: CompiledTemplate | None = None
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

    def render_template(
        self,
        plan: RecordPlan,
        data: bytes,
        header: PacketHeader,
        exporter: str,
        context: LineContext,
        *,
        part: int = 0,
        offset: int = 0,
    ) -> tuple[list[bytes], tuple[Problem, ...]]:
        """The lines of one v9/IPFIX data set (framing excluded), and the problem of its tail
        (short_record / varlen_past_set) if any: the fast path when the template compiles,
        the readable one otherwise; both give the same bytes."""
        compiled = self.compiled_template(plan)
        if compiled is None:
            return self.render_template_readable(
                plan, data, header, exporter, context, part=part, offset=offset
            )
        export_ms = header.export_time_ms
        k_time, k_up = time_bases(header.sys_uptime, export_ms)
        if len(self._iso_cache) >= _CACHE_LIMIT:
            self._iso_cache.clear()
        nin, nout = _name_tables(compiled.line, context, self._options.body)
        lines, status, at = compiled.build(
            data,
            self._template_prefix(header, exporter),
            export_ms,
            self.iso(export_ms),
            k_time,
            k_up,
            context.system_init_ms,
            str(header.domain),
            _sampling_table(compiled.line, context),
            nin,
            nout,
            self._iso_cache,
            self._iso_second,
        )
        if status == PAST:
            problem = record_problem(plan, "varlen_past_set", 0, part, offset + at)
        elif status == SHORT or (at < len(data) and any(data[at:])):
            problem = record_problem(plan, "short_record", len(data) - at, part, offset + at)
        else:
            return lines, ()
        return lines, (problem,)

    def render_template_readable(
        self,
        plan: RecordPlan,
        data: bytes,
        header: PacketHeader,
        exporter: str,
        context: LineContext = NO_OPTIONS,
        *,
        part: int = 0,
        offset: int = 0,
    ) -> tuple[list[bytes], tuple[Problem, ...]]:
        """``render_template`` value by value: the oracle of the fast path."""
        records, problems = decode_records(plan, data, part=part, offset=offset)
        key = _template_key(plan)
        line = self._template_lines.get(key)
        if line is None:
            if len(self._template_lines) >= _COMPILED_LIMIT:
                self._template_lines.clear()
            line = self._template_lines[key] = template_line(plan)
        syslog = self._syslog_header(header.export_time_ms, exporter)
        body = self._options.body
        lines = [
            (
                syslog
                + template_body(
                    line, r, header=header, exporter=exporter, body=body, context=context
                )
            ).encode()
            for r in records
        ]
        return lines, problems

    def compiled_template(self, plan: RecordPlan) -> CompiledTemplate | None:
        """The fast path of a template in this renderer's body style (None: not compilable),
        cached by what decides the code: version and fields."""
        if plan is self._last_plan:
            return self._last_compiled
        key = _template_key(plan)
        if key in self._templates:
            found = self._templates[key]
        else:
            if len(self._templates) >= _COMPILED_LIMIT:
                self._templates.clear()
            found = None
            if template_compilable(plan):
                found = compile_template(plan, self._options.body)
            self._templates[key] = found
        # A set of the same template as the last one (the common case) skips the lookup,
        # whose key hashes every field.
        self._last_plan, self._last_compiled = plan, found
        return found

    def _template_prefix(self, h: PacketHeader, exporter: str) -> str:
        """Syslog header and the three header keys of a v9/IPFIX line (the other 22 common
        keys can come from the records)."""
        name = generic.string_text(exporter, self._options.body)
        if self._options.body == "json":
            opening = (
                f'{{"version":{h.version},"exporter":{name},"flow_sequence":{h.flow_sequence},'
            )
        else:
            opening = f"version={h.version} exporter={name} flow_sequence={h.flow_sequence} "
        return self._syslog_header(h.export_time_ms, exporter) + opening

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


TemplateKey = tuple[int, tuple[object, ...], int]


def _template_key(plan: RecordPlan) -> TemplateKey:
    """What decides a template's code: two exporters with the same fields share it."""
    return (plan.version, plan.template.fields, plan.template.scope_fields)


class _Memo(dict[object, object]):
    """A table filled on first use, for one set: options lookups once per distinct key."""

    __slots__ = ("_fill",)

    def __init__(self, fill: Callable[[Any], object]) -> None:
        super().__init__()
        self._fill = fill

    def __missing__(self, key: object) -> object:
        value = self[key] = self._fill(key)
        return value


def _sampling_texts(sampling: Sampling | None) -> tuple[str, str]:
    return ("0", "0") if sampling is None else (str(sampling.interval), str(sampling.mode))


def _sampling_table(line: TemplateLine, context: LineContext) -> object:
    """The domain's sampling texts, or (a record naming its sampler) a table of them."""
    if line.sampler is None:
        return _sampling_texts(context.sampling(None))
    return _Memo(lambda sampler: _sampling_texts(context.sampling(sampler)))


_NAME_PIECES: dict[tuple[str, str, str], str] = {}
_NAME_PIECES_LIMIT = 8192


def _name_tables(line: TemplateLine, context: LineContext, body: Body) -> tuple[object, object]:
    """ifIndex -> the pair of its name (with its separator, empty when unnamed), or None
    when the context names no interfaces."""
    if context.interface_name is NO_OPTIONS.interface_name:
        return None, None
    tables: list[object] = []
    for key in ("input_if_name", "output_if_name"):

        def piece(index: object, key: str = key) -> str:
            name = context.interface_name(index) if isinstance(index, int) else None
            if name is None:
                return ""
            # Escaped once per distinct name, not once per set: names repeat in every set.
            found = _NAME_PIECES.get((key, name, body))
            if found is None:
                if len(_NAME_PIECES) >= _NAME_PIECES_LIMIT:
                    _NAME_PIECES.clear()
                pair = generic.pairs_text([(key, generic.string_text(name, body))], body)
                found = _NAME_PIECES[(key, name, body)] = ("," if body == "json" else " ") + pair
            return found

        tables.append(_Memo(piece))
    return tables[0], tables[1]


def rfc3164_timestamp(secs: int) -> str:
    """``Mmm dd HH:MM:SS`` in UTC; the day of month is space-padded (``Nov  3``)."""
    t = time.gmtime(secs)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {time.strftime('%H:%M:%S', t)}"
