"""The readable renderer: one value at a time, every string escaped.

This is the oracle the compiled fast path (:mod:`relay.render.compiled`) is held to, for any
bytes, by the tests; it is also the path for what the fast path does not compile (variable-
length elements, when v9/IPFIX bring them). It is written to be obviously right, not fast.

JSON strings are escaped as RFC 8259 §7 requires (``"``, ``\\`` and the control characters
U+0000-U+001F; everything else is written as itself, UTF-8 on the wire); bytes that are not
valid UTF-8 are replaced by U+FFFD. A ``kv`` value is written bare unless it is empty or
holds a space, ``"``, ``=`` or ``\\`` (SPEC "The syslog line"), or a control character (a
newline would end the line), and then in double quotes with ``\\"`` and ``\\\\`` escapes (and
control characters escaped as in JSON), so that every line splits back into the same pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from relay.flows.layout import Kind
from relay.render.keys import LinePlan
from relay.render.options import Body

Value = int | float | str | bytes
_TIME_KINDS = frozenset(
    {Kind.UPTIME_MS, Kind.DATETIME_S, Kind.DATETIME_MS, Kind.DATETIME_US, Kind.DATETIME_NS}
)
# UNIX ms -> "YYYY-MM-DDTHH:MM:SS.mmmZ"
IsoFormat = Callable[[int], str]

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n"}
_JSON_ESCAPES |= {"\r": "\\r", "\t": "\\t"}
_JSON_TABLE = {
    code: _JSON_ESCAPES.get(chr(code), f"\\u{code:04x}")
    for code in (*range(0x20), ord('"'), ord("\\"))
}
_KV_TABLE = {code: text for code, text in _JSON_TABLE.items() if code < 0x20}
_KV_TABLE |= {ord('"'): '\\"', ord("\\"): "\\\\"}
_KV_QUOTE = frozenset(' "=\\') | frozenset(chr(c) for c in range(0x20))
_ZERO: dict[Kind, Value] = {Kind.UNSIGNED: 0, Kind.IPV4: "0.0.0.0", Kind.IPV6: "::"}


def text_of(value: str | bytes) -> str:
    """A string element's text: bytes that are not UTF-8 become U+FFFD."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def json_string(value: str | bytes) -> str:
    return '"' + text_of(value).translate(_JSON_TABLE) + '"'


def kv_string(value: str | bytes) -> str:
    text = text_of(value)
    if text and not _KV_QUOTE.intersection(text):
        return text
    return '"' + text.translate(_KV_TABLE) + '"'


def iso_utc(ms: int) -> str:
    """UNIX milliseconds -> ``2026-11-22T12:34:56.789Z`` (the readable form)."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def value_text(value: Value, kind: Kind, body: Body, iso: IsoFormat = iso_utc) -> str:
    """One value as the body writes it: numbers bare, booleans ``true``/``false``, times
    ISO-8601, everything else as a string (SPEC "The line": values).

    A template value its kind could not hold (a boolean that is neither 1 nor 2, a time past
    year 9999, a NaN) was decoded to hex text, and is written as a string.
    """
    if kind is Kind.UNSIGNED:
        if not isinstance(value, int):
            raise TypeError(f"an unsigned field holds an int, not {value!r}")
        return str(value)
    if kind in _TIME_KINDS and isinstance(value, int):
        # Decoded records hold the absolute time already (UNIX ms).
        value = iso(value)
    elif kind is Kind.UPTIME_MS:
        raise TypeError(f"a time field holds UNIX ms, not {value!r}")
    elif kind is Kind.BOOLEAN and isinstance(value, bool):
        return "true" if value else "false"
    elif kind is Kind.SIGNED and isinstance(value, int):
        return str(value)
    elif kind is Kind.FLOAT and isinstance(value, float):
        return repr(value)
    if isinstance(value, int | float):
        raise TypeError(f"a {kind.value} field holds text, not {value!r}")
    return string_text(value, body)


def string_text(value: str | bytes, body: Body) -> str:
    return json_string(value) if body == "json" else kv_string(value)


def pairs_text(pairs: Sequence[tuple[str, str]], body: Body) -> str:
    """Already written values joined into the body's pairs (no braces)."""
    if body == "json":
        return ",".join(f"{json_string(key)}:{text}" for key, text in pairs)
    return " ".join(f"{key}={text}" for key, text in pairs)


def header_pairs(values: Sequence[tuple[str, int | str]], body: Body) -> list[tuple[str, str]]:
    """The header keys (version, exporter, ...): numbers bare, the exporter a string."""
    return [(key, str(v) if isinstance(v, int) else string_text(v, body)) for key, v in values]


def record_pairs(
    plan: LinePlan, record: Mapping[str, Value], body: Body, iso: IsoFormat = iso_utc
) -> list[tuple[str, str]]:
    """A decoded record's keys in the plan's order, each value written by its kind."""
    out = []
    for slot in plan.slots:
        value = _ZERO[slot.kind] if slot.field is None else record[slot.field.name]
        out.append((slot.key, value_text(value, slot.kind, body, iso)))
    return out


def body_text(
    head: Sequence[tuple[str, str]], record: Sequence[tuple[str, str]], body: Body
) -> str:
    """The whole body: one JSON object, or the kv pairs."""
    text = pairs_text([*head, *record], body)
    return "{" + text + "}" if body == "json" else text
