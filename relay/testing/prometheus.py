"""A reader of the Prometheus text exposition format 0.0.4 (and OpenMetrics 1.0), for tests
and benchmarks.

Written from the format description rather than with the relay's own code, so that it
checks the relay's output instead of agreeing with it. It is strict: anything a Prometheus
server would reject (a sample outside its TYPE family, a malformed label set or escape, an
unescaped backslash in HELP, a family or series twice, no final newline) is a ValueError.
:func:`parse_families` gives the families as written; :func:`parse_metrics` the samples by
name and labels, which is what most tests ask about.

With ``openmetrics=True`` the text is read as OpenMetrics 1.0 instead: it must end with
``# EOF``, ``# UNIT`` lines are allowed, a counter's TYPE names the family without its
``_total`` and its samples are ``NAME_total`` (or ``NAME_created``). So that a test reads both
formats alike, a counter family is keyed by its sample name, ``NAME_total``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_KINDS = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
_OM_KINDS = frozenset(
    {"counter", "gauge", "histogram", "gaugehistogram", "summary", "unknown", "info", "stateset"}
)

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Scrape:
    """One ``/metrics`` response: samples by (name, labels), and each family's TYPE."""

    samples: Mapping[tuple[str, Labels], float]
    types: Mapping[str, str]
    helps: Mapping[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; KeyError names what is there instead."""
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            there = sorted(str(dict(k[1])) for k in self.samples if k[0] == name)
            raise KeyError(f"no sample {name}{labels or ''}; series present: {there}")
        return self.samples[key]

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), default)

    def total(self, name: str) -> float:
        """The sum over every label set of ``name``."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        return {
            dict(labels)[label]: v
            for (n, labels), v in self.samples.items()
            if n == name and label in dict(labels)
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricFamily:
    """One family: its HELP text (unescaped), its TYPE, and its samples by label tuple in
    the order written."""

    help: str
    kind: str
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


def _unescape(text: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group()], text)


def _labels(text: str, number: int) -> tuple[tuple[str, str], ...]:
    out = []
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None:
            raise ValueError(f"line {number}: bad label set at {text[pos:]!r}")
        out.append((m.group(1), _unescape(m.group(2))))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError(f"line {number}: labels not comma-separated: {text!r}")
            pos += 1
    return tuple(out)


def parse_families(text: str, *, openmetrics: bool = False) -> dict[str, MetricFamily]:
    """Families by name, in the order written."""
    if not text.endswith("\n"):
        raise ValueError("the exposition does not end with a newline")
    lines = text[:-1].split("\n")
    if openmetrics:
        if lines[-1] != "# EOF":
            raise ValueError("an OpenMetrics exposition ends with '# EOF'")
        lines.pop()
    kinds = _OM_KINDS if openmetrics else _KINDS
    families: dict[str, MetricFamily] = {}
    current: str | None = None
    created: str | None = None  # OpenMetrics: the counter's NAME_created, also in its family
    pending_help: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if openmetrics and (line == "# EOF" or not line):
            raise ValueError(f"line {number}: {line!r} before the end")
        if openmetrics and line.startswith("# UNIT "):
            continue
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            # OpenMetrics also escapes a double quote in HELP; 0.0.4 does not.
            escapes = r'\\[\\n"]' if openmetrics else r"\\[\\n]"
            if not re.fullmatch(_NAME, name) or "\\" in re.sub(escapes, "", doc):
                raise ValueError(f"line {number}: bad HELP line {line!r}")
            pending_help[name] = _unescape(doc)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if kind not in kinds or not re.fullmatch(_NAME, name):
                raise ValueError(f"line {number}: bad TYPE line {line!r}")
            doc = pending_help.pop(name, "")
            created = None
            if openmetrics and kind == "counter":
                if name.endswith("_total"):
                    raise ValueError(f"line {number}: OpenMetrics counter {name} ends in _total")
                name, created = f"{name}_total", f"{name}_created"
            if name in families:
                raise ValueError(f"line {number}: family {name} appears twice")
            families[name] = MetricFamily(help=doc, kind=kind)
            current = name
        elif line.startswith("#") or not line:
            continue
        else:
            m = _SAMPLE.fullmatch(line)
            if m is None:
                raise ValueError(f"line {number} is not a sample: {line!r}")
            name, label_text, value = m.group(1), m.group(2) or "", m.group(3)
            if name == created:
                continue
            if name != current or current is None:
                raise ValueError(f"line {number}: sample {name} outside its family ({current})")
            key = _labels(label_text, number)
            if key in families[name].samples:
                raise ValueError(f"line {number}: series {name}{{{label_text}}} repeated")
            families[name].samples[key] = float(value)
    return families


def parse_metrics(text: str, *, openmetrics: bool = False) -> Scrape:
    families = parse_families(text, openmetrics=openmetrics)
    return Scrape(
        samples={
            (name, frozenset(labels)): value
            for name, family in families.items()
            for labels, value in family.samples.items()
        },
        types={name: family.kind for name, family in families.items()},
        helps={name: family.help for name, family in families.items()},
    )
