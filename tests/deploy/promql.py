"""What the deploy/ files ask of Prometheus: the metric names in a PromQL expression, the
relay's own names, and promtool."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from relay.metrics import RelayMetrics
from relay.testing.prometheus import parse_families

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "by", "without", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not a function, keyword,
    label (in a matcher or a grouping) or duration."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", _RANGE.sub(" ", _GROUPING.sub(" ", text)))
    names = set()
    for m in _IDENT.finditer(text):
        rest = text[m.end() :].lstrip()
        before = text[: m.start()]
        if rest.startswith("(") or m.group().lower() in _KEYWORDS:
            continue
        if before and (before[-1].isdigit() or before[-1] == "$"):
            continue  # 5m, 1e3, a Grafana $variable
        names.add(m.group())
    return names


def exported_names() -> set[str]:
    """Every sample name a relay's /metrics has (with a labelled family's series present)."""
    return set(parse_families(RelayMetrics().registry.render()))


def promtool() -> str:
    """promtool's path; a failure, not a skip, without it: the check would silently go."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: tests/setup.sh installs Debian's prometheus package")
    return path
