"""Flow records → syslog lines (sans-IO); the wire framing is :mod:`relay.framing`.

One line per flow: ``<PRI>Mmm dd HH:MM:SS HOST TAG: BODY`` (Devo/Logtrust style, RFC 3164
shape) or ``<PRI>1 ISO-TIMESTAMP HOST TAG - - - BODY`` (RFC 5424). HOST is the exporter's
address, the timestamp is the datagram's export time in UTC, so a line says when the
exporter reported the flow, whatever delay the relay or the platform adds.

Everything a datagram's records share (header, and the first seven body keys) is formatted
once per datagram; per record only a %-template runs. ``json.dumps`` per record is four
times slower and every value here is a number, an address or a timestamp, none of which
needs escaping.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from relay.flows import LAYOUTS, split
from relay.flows.layout import Kind, Layout
from relay.flows.legacy import ExportFormat, time_bases
from relay.flows.model import Packet, PacketHeader
from relay.render.options import Body, RenderOptions

# Keys every rendered line carries, in the order of the product contract (SPEC "The syslog
# line"). The first seven come from the datagram header, the rest from the record.
HEADER_KEYS = (
    "version",
    "exporter",
    "flow_sequence",
    "engine_type",
    "engine_id",
    "sampling_interval",
    "sampling_mode",
)
RECORD_KEYS = (
    "first",
    "last",
    "src_addr",
    "dst_addr",
    "next_hop",
    "input_if",
    "output_if",
    "packets",
    "bytes",
    "src_port",
    "dst_port",
    "protocol",
    "tcp_flags",
    "tos",
    "src_as",
    "dst_as",
    "src_mask",
    "dst_mask",
)
EXTRA_KEYS: dict[int, tuple[str, ...]] = {
    1: (),
    5: (),
    6: ("in_encaps", "out_encaps", "peer_next_hop"),
    7: ("flags1", "flags2", "router_sc"),
}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
_CACHE_LIMIT = 4096


def _templates(body: Body) -> dict[int, tuple[str, str]]:
    """Per version: (template of the header keys, template of the record keys)."""
    out = {}
    for version, extras in EXTRA_KEYS.items():
        record_keys = ("first", "last", *RECORD_KEYS[2:], *extras)
        if body == "json":
            head = "{" + ",".join(f'"{k}":{_json_slot(k)}' for k in HEADER_KEYS) + ","
            rec = ",".join(f'"{k}":{_json_slot(k)}' for k in record_keys) + "}"
        else:
            head = " ".join(f"{k}=%s" for k in HEADER_KEYS) + " "
            rec = " ".join(f"{k}=%s" for k in record_keys)
        out[version] = (head, rec)
    return out


def _json_slot(key: str) -> str:
    quoted = {"exporter", "first", "last", "src_addr", "dst_addr", "next_hop"}
    quoted |= {"peer_next_hop", "router_sc"}
    return '"%s"' if key in quoted else "%d"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """What the hot path needs of one datagram: its header, its lines, what was tolerated."""

    header: PacketHeader
    lines: list[bytes]
    warnings: tuple[str, ...]
    trailing_bytes: int


# Decimal text of every 8- and 16-bit value: tuple lookups instead of int -> str conversions
# for the eleven small fields of a record (ports, interfaces, AS numbers, flags, masks) and
# the twelve octets of its addresses. About 4 MB, once per process. (A table of dotted octet
# pairs took fewer instructions but more time: its 8 MB miss the CPU caches.)
_DECIMAL = tuple(str(n) for n in range(1 << 16))
_STRUCT_TOKEN = re.compile(r"(\d*)([xBHIs])")

# (body, k_time, k_up, prefix, second -> "YYYY-MM-DDTHH:MM:SS", slow path for a new second)
LineBuilder = Callable[
    [memoryview, int, int, str, dict[int, str], Callable[[int], str]], list[bytes]
]


def _render_struct(layout: Layout) -> tuple[struct.Struct, tuple[str, ...], dict[str, str]]:
    """The record format the renderer unpacks, the names of its values, and per field the
    f-string text that formats it.

    The same bytes as ``layout.struct``, except that an address is unpacked as four octets:
    four lookups in a table the CPU keeps cached are cheaper than ``inet_ntoa`` and the str
    it allocates.
    """
    fmt: list[str] = []
    names: list[str] = []
    text: dict[str, str] = {}
    at = 0
    for f in layout.fields:
        if f.offset > at:
            fmt.append(f"{f.offset - at}x")
        at = f.offset + f.size
        if f.kind is Kind.IPV4:
            octets = [f"{f.name}_{i}" for i in range(4)]
            fmt.append("BBBB")
            names.extend(octets)
            text[f.name] = ".".join(f"{{D[{octet}]}}" for octet in octets)
        else:
            code = f.struct_code
            fmt.append(code)
            names.append(f.name)
            text[f.name] = f"{{D[{f.name}]}}" if code in "BH" else f"{{{f.name}}}"
    if layout.size > at:
        fmt.append(f"{layout.size - at}x")
    return struct.Struct("!" + "".join(fmt)), tuple(names), text


def _compile_lines(export: ExportFormat, body_style: Body) -> LineBuilder:
    """Generate the fused bytes -> lines function of one version and body style.

    The record decoder and the renderer are one loop here: no record object is built, each
    value goes straight from ``struct`` into an f-string. This is what the receiver runs;
    ``Renderer.render`` stays the readable reference, and the tests hold the two to the same
    output for any input.
    """
    layout = export.layout
    extras = EXTRA_KEYS[export.version]
    keys = ("first", "last", *RECORD_KEYS[2:], *extras)
    record, names, text = _render_struct(layout)
    quote = '"' if body_style == "json" else ""
    parts = []
    for key in keys:
        kind = f.kind if (f := layout.field(key)) else None
        if kind is None:
            value = "0"
        elif kind is Kind.UPTIME_MS:
            value = f"{quote}{{iso.get({key}_s) or slow({key}_s)}}{{MILLIS[{key}_t % 1000]}}{quote}"
        elif kind is Kind.IPV4:
            value = f"{quote}{text[key]}{quote}"
        else:
            value = text[key]
        parts.append(f'"{key}":{value}' if body_style == "json" else f"{key}={value}")
    line = ",".join(parts) + "}}" if body_style == "json" else " ".join(parts)
    times = "".join(
        f"        {k}_t = k_time - ((k_up - {k}) & 0xFFFFFFFF)\n        {k}_s = {k}_t // 1000\n"
        for k in ("first", "last")
    )
    source = (
        "def build_lines(body, k_time, k_up, prefix, iso, slow):\n"
        "    out = []\n"
        "    append = out.append\n"
        f"    for ({', '.join(names)},) in unpack(body):\n"
        f"{times}"
        f"        append(f'{{prefix}}{line}'.encode())\n"
        "    return out\n"
    )
    namespace = {
        "unpack": record.iter_unpack,
        "D": _DECIMAL,
        "MILLIS": _MILLIS,
    }
    exec(compile(source, f"<render v{export.version} {body_style}>", "exec"), namespace)  # noqa: S102
    builder: LineBuilder = namespace["build_lines"]  # type: ignore[assignment]
    return builder


class Renderer:
    """Renders datagrams and packets. Holds only bounded caches of formatted timestamps."""

    __slots__ = ("_builders", "_iso_cache", "_options", "_stamp_cache", "_templates")

    def __init__(self, options: RenderOptions | None = None) -> None:
        self._options = options or RenderOptions()
        self._templates = _templates(self._options.body)
        self._builders = {v: _compile_lines(lay, self._options.body) for v, lay in LAYOUTS.items()}
        self._iso_cache: dict[int, str] = {}
        self._stamp_cache: dict[int, str] = {}

    def render_datagram(self, data: bytes, exporter: str) -> Rendered:
        """Validate and render one UDP payload in a single pass (the receiver's hot path).

        Raises DecodeError exactly where ``relay.flows.decode`` would.
        """
        parts = split(data)
        header = parts.header
        k_time, k_up = time_bases(header.sys_uptime, header.export_time_ms)
        if len(self._iso_cache) >= _CACHE_LIMIT:
            self._iso_cache.clear()
        lines = self._builders[header.version](
            parts.batches[0].data,
            k_time,
            k_up,
            self._prefix(header, exporter),
            self._iso_cache,
            self._iso_second,
        )
        return Rendered(
            header=header,
            lines=lines,
            warnings=parts.warnings,
            trailing_bytes=parts.trailing_bytes,
        )

    @property
    def options(self) -> RenderOptions:
        return self._options

    def render(self, packet: Packet, exporter: str) -> list[bytes]:
        """One line per record, without framing, ASCII-encoded."""
        rec_tmpl = self._templates[packet.version][1]
        prefix = self._prefix(packet.header, exporter)
        iso = self.iso
        return [
            (prefix + rec_tmpl % (iso(r[0]), iso(r[1]), *r[2:])).encode("ascii")
            for r in packet.records
        ]

    def iso(self, ms: int) -> str:
        """UNIX milliseconds → ``2026-11-22T12:34:56.789Z``."""
        seconds, millis = divmod(ms, 1000)
        if len(self._iso_cache) >= _CACHE_LIMIT:
            self._iso_cache.clear()
        return (self._iso_cache.get(seconds) or self._iso_second(seconds)) + _MILLIS[millis]

    def _iso_second(self, seconds: int) -> str:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        self._iso_cache[seconds] = text
        return text

    def _prefix(self, h: PacketHeader, exporter: str) -> str:
        """Syslog header and the body keys every record of a datagram shares."""
        return self._syslog_header(h.export_time_ms, exporter) + self._templates[h.version][0] % (
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
