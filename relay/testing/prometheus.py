"""A reader of the Prometheus text exposition format 0.0.4, for tests and benchmarks.

Written from the format description rather than with the relay's own code, so that it
checks the relay's output instead of agreeing with it: a sample line that is not in the
format, a label set that does not read back the same, or a series repeated is a ValueError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_SAMPLE_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

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
            there = sorted(dict(k[1]) for k in self.samples if k[0] == name)  # type: ignore[type-var]
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


def parse_metrics(text: str) -> Scrape:
    samples: dict[tuple[str, Labels], float] = {}
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            _, _, name, *rest = line.split(" ", 3)
            helps[name] = rest[0] if rest else ""
            continue
        if line.startswith("#"):
            continue
        match = _SAMPLE_RE.fullmatch(line)
        if match is None:
            raise ValueError(f"line {number} of /metrics is not a sample: {line!r}")
        name, label_text, value = match.groups()
        labels: Labels = frozenset()
        if label_text:
            pairs = _LABEL_RE.findall(label_text)
            rebuilt = ",".join(f'{k}="{v}"' for k, v in pairs)
            if rebuilt != label_text.rstrip(","):
                raise ValueError(f"line {number}: labels not in the text format: {line!r}")
            labels = frozenset(pairs)
        if (name, labels) in samples:
            raise ValueError(f"line {number}: series {name}{label_text or ''} repeated")
        samples[(name, labels)] = float(value)
    return Scrape(samples=samples, types=types, helps=helps)
