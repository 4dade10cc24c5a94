"""The suite's reader of the Prometheus text format refuses what a Prometheus server would."""

from __future__ import annotations

import pytest

from relay.testing.prometheus import parse_families, parse_metrics

GOOD = (
    "# HELP a_total Things, with a \\\\ backslash\n"
    "# TYPE a_total counter\n"
    'a_total{reason="x",kind="say \\"hi\\""} 3\n'
    "a_total 1\n"
    "# TYPE b gauge\n"
    "b 2.5\n"
)


def test_a_well_formed_exposition_reads_back_with_labels_unescaped() -> None:
    families = parse_families(GOOD)
    assert families["a_total"].help == "Things, with a \\ backslash"
    assert families["a_total"].samples == {(("reason", "x"), ("kind", 'say "hi"')): 3, (): 1}
    scraped = parse_metrics(GOOD)
    assert scraped.value("a_total", reason="x", kind='say "hi"') == 3
    assert scraped.total("a_total") == 4
    assert scraped.types == {"a_total": "counter", "b": "gauge"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("# TYPE a counter\na 1", "newline"),
        ("a 1\n", "outside its family"),
        ("# TYPE a counter\nb 1\n", "outside its family"),
        ("# TYPE a counter\n# TYPE a counter\n", "twice"),
        ("# TYPE a counter\na 1\na 2\n", "repeated"),
        ('# TYPE a counter\na{x="1" y="2"} 1\n', "comma"),
        ('# TYPE a counter\na{x="\\q"} 1\n', "label"),
        ("# TYPE a widget\n", "TYPE"),
        ("# HELP a one \\ two\n", "HELP"),
        ("# TYPE a counter\na one two\n", "not a sample"),
    ],
)
def test_what_prometheus_would_reject_is_an_error(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_families(text)


GOOD_OPENMETRICS = (
    '# HELP a Things, \\"quoted\\"\n'
    "# TYPE a counter\n"
    "# UNIT a bytes\n"
    'a_total{reason="x"} 3.0\n'
    "a_created 1.7e9\n"
    "# TYPE b gauge\n"
    "b 2.5\n"
    "# EOF\n"
)


def test_openmetrics_reads_back_with_counters_under_their_sample_name() -> None:
    scraped = parse_metrics(GOOD_OPENMETRICS, openmetrics=True)
    assert scraped.types == {"a_total": "counter", "b": "gauge"}
    assert scraped.helps["a_total"] == 'Things, "quoted"'
    assert dict(scraped.samples) == {
        ("a_total", frozenset({("reason", "x")})): 3,
        ("b", frozenset()): 2.5,
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD_OPENMETRICS.removesuffix("# EOF\n"), "EOF"),
        ("# TYPE a counter\na 1\n# EOF\n", "outside its family"),
        ("# TYPE a_total counter\na_total 1\n# EOF\n", "ends in _total"),
        ("# TYPE b gauge\n\nb 1\n# EOF\n", "before the end"),
        ("# TYPE b widget\n# EOF\n", "TYPE"),
    ],
)
def test_what_an_openmetrics_reader_would_reject_is_an_error(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_families(text, openmetrics=True)
