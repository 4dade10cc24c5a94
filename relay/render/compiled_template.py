"""The fast path of v9/IPFIX: one generated set -> lines function per (template, body style).

As for the legacy layouts (:mod:`relay.render.compiled`), the record decoder and the
renderer are one loop, written once per template, with no dispatch per field: each value
goes from ``struct`` into one f-string per line. A fixed-length template unpacks the whole
set with ``iter_unpack``; a template with variable-length fields walks the set with a
generated offset walk (``unpack_from`` for each run of fixed fields, the 1- or 3-byte length
of each variable one), bounded by the set's length. What a line takes from the exporter's
options comes in as arguments, resolved once per set: the domain's sampling, and memo
tables (filled on first use) for a record's sampler ID and interface names.

Strings, floats and IPv6 addresses take a helper call each (escaping, NaN, RFC 5952);
everything else is table lookups and integer arithmetic in the generated code. The readable
renderer (:mod:`relay.render.template_line`) is the oracle: the tests hold the two to the same
bytes for any template and any set. ``compile_template(...).source()`` shows the code, and
tests/render/golden/ keeps it for two real templates.
"""

from __future__ import annotations

import math
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.flows.elements import MAX_TIME_MS, NTP_UNIX_OFFSET
from relay.flows.layout import Kind
from relay.flows.records import RecordPlan
from relay.render import generic
from relay.render.compiled import DECIMAL, MILLIS
from relay.render.options import Body
from relay.render.template_line import TemplateLine, TemplateSlot, TimeSource, template_line

_INDENT = "    "
_KEY_RE = re.compile(r"[a-z][a-z0-9_]*")
_UNSIGNED = {1: "B", 2: "H", 4: "I", 8: "Q"}
_SIGNED = {1: "b", 2: "h", 4: "i", 8: "q"}
_NTP_MASK = {Kind.DATETIME_US: 0xFFFFF800, Kind.DATETIME_NS: 0xFFFFFFFF}

# (set body, prefix, export_ms, export ISO text, k_time, k_up, system init ms or None,
#  domain text, sampling (texts, or sampler ID -> texts), input/output if -> name piece or
#  None, second -> "YYYY-MM-DDTHH:MM:SS", its slow path) -> (lines, status, offset)
TemplateBuilder = Callable[..., tuple[list[bytes], int, int]]
# Status of a set's tail: whole, a short record (``short_record``), a field past the end.
WHOLE, SHORT, PAST = 0, 1, 2


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledTemplate:
    line: TemplateLine
    body: Body
    text: str
    build: TemplateBuilder = field(repr=False, compare=False)

    def source(self) -> str:
        return self.text


def template_compilable(plan: RecordPlan) -> bool:
    """Every template is, unless a key could not go into source text as it is, or a record
    has no bytes at all (what the decoder does with that is its own)."""
    if plan.layout is not None and plan.layout.size == 0:
        return False
    return all(_KEY_RE.fullmatch(key) for key in plan.keys)


def compile_template(plan: RecordPlan, body: Body, name: str | None = None) -> CompiledTemplate:
    if not template_compilable(plan):
        raise ValueError(f"template {plan.template.template_id}: not compilable")
    line = template_line(plan)
    gen = _Generator(line, body)
    text = gen.source(name or f"v{plan.version} template {plan.template.template_id}")
    namespace: dict[str, object] = {
        "D": DECIMAL,
        "MILLIS": MILLIS,
        "BOOL": _BOOL_JSON if body == "json" else _BOOL_KV,
        "STR": _string_json if body == "json" else _string_kv,
        "FLT": _float_json if body == "json" else _float_kv,
        "FB": int.from_bytes,
        "ntop": socket.inet_ntop,
        "AF6": socket.AF_INET6,
        "EMPTY": '""',
        **{f"U{i}": s for i, s in enumerate(gen.structs)},
    }
    code = compile(text, f"<render template {body}>", "exec")
    exec(code, namespace)  # noqa: S102
    build: TemplateBuilder = namespace["build_lines"]  # type: ignore[assignment]
    return CompiledTemplate(line=line, body=body, text=text, build=build)


# --- helpers the generated code calls --------------------------------------------------

_BOOL_JSON = tuple({1: "true", 2: "false"}.get(b, f'"{b:02x}"') for b in range(256))
_BOOL_KV = tuple({1: "true", 2: "false"}.get(b, f"{b:02x}") for b in range(256))


def _string_json(raw: bytes) -> str:
    return generic.json_string(raw.rstrip(b"\x00").decode("utf-8", "replace"))


def _string_kv(raw: bytes) -> str:
    return generic.kv_string(raw.rstrip(b"\x00").decode("utf-8", "replace"))


def _float(raw: bytes) -> float:
    number: float = struct.unpack("!f" if len(raw) == 4 else "!d", raw)[0]
    return number


def _float_json(raw: bytes) -> str:
    number = _float(raw)
    return repr(number) if math.isfinite(number) else f'"{raw.hex()}"'


def _float_kv(raw: bytes) -> str:
    number = _float(raw)
    return repr(number) if math.isfinite(number) else raw.hex()


# --- the source -------------------------------------------------------------------------


@dataclass(slots=True)
class _Field:
    codes: str  # struct codes ("" for a variable-length field)
    names: list[str]  # what it unpacks to
    stmts: list[str]  # per record, before the line
    text: str  # f-string text of its value
    ms: str | None = None  # the expression of its time in UNIX ms, for a time kind


class _Generator:
    def __init__(self, line: TemplateLine, body: Body) -> None:
        self.line = line
        self.body = body
        self.json = body == "json"
        plan = line.plan
        specs = plan.template.fields
        self.fields = [
            self._field(i, kind, None if spec.variable else spec.length)
            for i, (spec, kind) in enumerate(zip(specs, plan.kinds, strict=True))
        ]
        self.structs: list[struct.Struct] = []

    def q(self, text: str) -> str:
        """A value that is a JSON string and needs no escaping (kv: never quoted)."""
        return f'"{text}"' if self.json else text

    def iso(self, t: str, s: str) -> str:
        return self.q(f"{{iso.get({s}) or slow({s})}}{{MILLIS[{t} % 1000]}}")

    def _field(self, i: int, kind: Kind, size: int | None) -> _Field:
        v = f"v{i}"
        if size is None:  # variable length: bytes, a string or octets
            text = f"{{STR({v})}}" if kind is Kind.STRING else self._octets(v, 0)
            return _Field("", [v], [], text)
        if kind is Kind.UNSIGNED or kind is Kind.SIGNED:
            codes = (_UNSIGNED if kind is Kind.UNSIGNED else _SIGNED).get(size)
            if codes is None:
                signed = ", signed=True" if kind is Kind.SIGNED else ""
                return _Field(f"{size}s", [v], [f"{v} = FB({v}, 'big'{signed})"], f"{{{v}}}")
            small = kind is Kind.UNSIGNED and size <= 2
            return _Field(codes, [v], [], f"{{D[{v}]}}" if small else f"{{{v}}}")
        if kind is Kind.IPV4:
            names = [f"{v}_{k}" for k in range(4)]
            return _Field("BBBB", names, [], self.q(".".join(f"{{D[{n}]}}" for n in names)))
        if kind is Kind.UPTIME_MS:
            stmts = [f"t{i} = k_time - ((k_up - {v}) & 0xFFFFFFFF)", f"s{i} = t{i} // 1000"]
            return _Field("I", [v], stmts, self.iso(f"t{i}", f"s{i}"), ms=f"t{i}")
        if kind is Kind.DATETIME_S:
            text = self.q(f"{{iso.get({v}) or slow({v})}}.000Z")
            return _Field("I", [v], [f"t{i} = {v} * 1000"], text, ms=f"t{i}")
        if kind in (Kind.DATETIME_MS, Kind.DATETIME_US, Kind.DATETIME_NS):
            t = v if kind is Kind.DATETIME_MS else f"t{i}"
            stmts = []
            if kind is not Kind.DATETIME_MS:
                mask = _NTP_MASK[kind]
                stmts.append(
                    f"{t} = (({v} >> 32) - {NTP_UNIX_OFFSET}) * 1000"
                    f" + ((({v} & {mask:#x}) * 1000) >> 32)"
                )
            stmts.append(
                f"x{i} = (iso.get({t} // 1000) or slow({t} // 1000)) + MILLIS[{t} % 1000]"
                f" if 0 <= {t} <= {MAX_TIME_MS} else format({v}, '016x')"
            )
            return _Field("Q", [v], stmts, self.q(f"{{x{i}}}"), ms=t)
        if kind is Kind.BOOLEAN:
            return _Field("B", [v], [], f"{{BOOL[{v}]}}")
        if kind is Kind.IPV6:
            return _Field("16s", [v], [], self.q(f"{{ntop(AF6, {v})}}"))
        if kind is Kind.MAC:
            return _Field("6s", [v], [], self.q(f'{{{v}.hex(":")}}'))
        if kind is Kind.FLOAT:
            return _Field(f"{size}s", [v], [], f"{{FLT({v})}}")
        if kind is Kind.STRING:
            return _Field(f"{size}s", [v], [], f"{{STR({v})}}")
        return _Field(f"{size}s", [v], [], self._octets(v, size))

    def _octets(self, v: str, size: int) -> str:
        if self.json:
            return f'"{{{v}.hex()}}"'
        return f"{{{v}.hex()}}" if size else f"{{{v}.hex() or EMPTY}}"

    # The per-record statements of first/last and the options.

    def time_stmts(self) -> list[str]:
        line = self.line
        out: list[str] = []
        ends = sorted(
            (("first", line.first), ("last", line.last)), key=lambda e: e[1].rule == "duration"
        )
        for end, source in ends:
            out += self._time(end, source)
        return out

    def _time(self, end: str, source: TimeSource) -> list[str]:
        if source.rule in ("export", "absolute", "uptime"):
            return []
        t = f"{end}_t"
        v = f"v{source.index}"
        if source.rule == "delta":
            stmts = [f"{t} = (export_ms * 1000 - {v}) // 1000"]
        elif source.rule == "sysuptime":
            init = self.line.system_init
            base = (
                "init_ms" if init is None else f"v{init} if v{init} <= {MAX_TIME_MS} else init_ms"
            )
            stmts = [f"base = {base}", f"{t} = export_ms if base is None else base + {v}"]
        else:
            other_end = "last" if end == "first" else "first"
            other = self._ms(other_end)
            sign = "+" if end == "last" else "-"
            value = (
                f"({other} * 1000 {sign} {v}) // 1000" if source.micro else f"{other} {sign} {v}"
            )
            stmts = [f"{t} = {value} if 0 <= {other} <= {MAX_TIME_MS} else export_ms"]
        return [*stmts, f"if not 0 <= {t} <= {MAX_TIME_MS}:", f"{_INDENT}{t} = export_ms"]

    def _ms(self, end: str) -> str:
        source = self.line.first if end == "first" else self.line.last
        if source.rule in ("absolute", "uptime"):
            ms = self.fields[source.index or 0].ms
            assert ms is not None
            return ms
        return f"{end}_t"

    def time_text(self, slot: TemplateSlot) -> str:
        source = slot.time
        assert source is not None
        if source.rule == "export":
            return self.q("{export_x}")
        if source.rule in ("absolute", "uptime"):
            return self.fields[source.index or 0].text
        t = f"{slot.key}_t"
        return self.q(f"{{iso.get({t} // 1000) or slow({t} // 1000)}}{{MILLIS[{t} % 1000]}}")

    def value_text(self, slot: TemplateSlot) -> str:
        if slot.header == "domain":
            return "{domain}"
        if slot.time is not None:
            return self.time_text(slot)
        if slot.option in ("sampling_interval", "sampling_mode"):
            return "{si}" if slot.option == "sampling_interval" else "{sm}"
        if slot.index is None:
            zero = {Kind.IPV4: "0.0.0.0", Kind.IPV6: "::"}.get(slot.kind)
            return "0" if zero is None else self.q(zero)
        return self.fields[slot.index].text

    def line_pieces(self) -> list[str]:
        """The f-string text of the line after the prefix, one piece per source line."""
        pieces: list[str] = []
        separator = "," if self.json else " "
        for slot in self.line.slots[3:]:  # version, exporter, flow_sequence: the prefix
            if slot.option in ("input_if_name", "output_if_name"):
                # The name piece carries its own separator: it is empty without a name.
                pieces.append("{pin}" if slot.option == "input_if_name" else "{pout}")
                continue
            key = f'"{slot.key}":' if self.json else f"{slot.key}="
            lead = separator if pieces else ""
            pieces.append(lead + key + self.value_text(slot))
        if self.json:
            pieces[-1] += "}}"
        return pieces

    def option_stmts(self) -> tuple[list[str], list[str]]:
        """Statements once per set, and per record, for the options the line uses."""
        once: list[str] = []
        per_record: list[str] = []
        options = {slot.option for slot in self.line.slots}
        if options & {"sampling_interval", "sampling_mode"}:
            if self.line.sampler is None:
                once.append("si, sm = samp")
            else:
                per_record.append(f"si, sm = samp[v{self.line.sampler}]")
        for slot in self.line.slots:
            if slot.option in ("input_if_name", "output_if_name"):
                name, table = ("pin", "nin") if slot.option == "input_if_name" else ("pout", "nout")
                per_record.append(f"{name} = '' if {table} is None else {table}[v{slot.index}]")
        return once, per_record

    def record_stmts(self) -> list[str]:
        _, per_record = self.option_stmts()
        stmts = [s for f in self.fields for s in f.stmts]
        return [*stmts, *self.time_stmts(), *per_record]

    def append_lines(self, pad: str) -> list[str]:
        parts = [f"{pad}{_INDENT}f'{{prefix}}'"]
        parts += [f"{pad}{_INDENT}f'{piece}'" for piece in self.line_pieces()]
        return [f"{pad}append((", *parts, f"{pad}).encode())"]

    def source(self, name: str) -> str:
        plan = self.line.plan
        fields = ", ".join(
            f"{s.element}{'/' + str(s.enterprise) if s.enterprise else ''}:"
            f"{'var' if s.variable else s.length}"
            for s in plan.template.fields
        )
        once, _ = self.option_stmts()
        head = [
            f"# {name}, {self.body} body: fields {fields}.",
            "# Generated by relay.render.compiled_template; golden copies in tests/render/golden/.",
            "def build_lines(data, prefix, export_ms, export_x, k_time, k_up, init_ms, domain,",
            "                samp, nin, nout, iso, slow):",
            f"{_INDENT}out = []",
            f"{_INDENT}append = out.append",
            *(f"{_INDENT}{s}" for s in once),
        ]
        body = self._fixed() if plan.layout is not None else self._walk()
        return "\n".join([*head, *body]) + "\n"

    def _fixed(self) -> list[str]:
        layout = self.line.plan.layout
        assert layout is not None
        codes = "".join(f.codes for f in self.fields)
        self.structs.append(struct.Struct("!" + codes))
        pad = _INDENT * 2
        return [
            f"{_INDENT}end = len(data) - len(data) % {layout.size}",
            f"{_INDENT}for (",
            *(f"{pad}{', '.join(f.names)}," for f in self.fields),
            f"{_INDENT}) in U0.iter_unpack(memoryview(data)[:end]):",
            *(f"{pad}{s}" for s in self.record_stmts()),
            *self.append_lines(pad),
            f"{_INDENT}return out, {WHOLE}, end",
        ]

    def _walk(self) -> list[str]:
        specs = self.line.plan.template.fields
        minimum = self.line.plan.template.minimum_length
        pad = _INDENT * 2
        out = [
            f"{_INDENT}at = 0",
            f"{_INDENT}end = len(data)",
            f"{_INDENT}while at < end:",
            f"{pad}if end - at < {minimum}:",
            f"{pad}{_INDENT}return out, {SHORT} if any(data[at:]) else {WHOLE}, at",
            f"{pad}start = at",
        ]
        past = f"return out, {PAST}, start"
        run: list[_Field] = []

        def flush() -> None:
            if not run:
                return
            s = struct.Struct("!" + "".join(f.codes for f in run))
            names = ", ".join(n for f in run for n in f.names)
            out.extend([
                f"{pad}if end - at < {s.size}:",
                f"{pad}{_INDENT}{past}",
                f"{pad}({names},) = U{len(self.structs)}.unpack_from(data, at)",
                f"{pad}at += {s.size}",
            ])  # fmt: skip
            self.structs.append(s)
            run.clear()

        for spec, f in zip(specs, self.fields, strict=True):
            if not spec.variable:
                run.append(f)
                continue
            flush()
            v = f.names[0]
            out.extend([
                f"{pad}if at >= end:",
                f"{pad}{_INDENT}{past}",
                f"{pad}n = data[at]",
                f"{pad}at += 1",
                f"{pad}if n == 255:",
                f"{pad}{_INDENT}if end - at < 2:",
                f"{pad}{_INDENT * 2}{past}",
                f"{pad}{_INDENT}n = (data[at] << 8) | data[at + 1]",
                f"{pad}{_INDENT}at += 2",
                f"{pad}if end - at < n:",
                f"{pad}{_INDENT}{past}",
                f"{pad}{v} = data[at : at + n]",
                f"{pad}at += n",
            ])  # fmt: skip
        flush()
        out += [f"{pad}{s}" for s in self.record_stmts()]
        out += self.append_lines(pad)
        out.append(f"{_INDENT}return out, {WHOLE}, at")
        return out
