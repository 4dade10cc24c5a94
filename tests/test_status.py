"""The /status document (relay.status): what needs attention, the terminal table, the merge
of workers' documents; the exporter series in /metrics; and the two configuration keys.
Pure: fixed times, documents built by hand or from an ExporterTable on a fixed clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.config import load, to_document
from relay.errors import ConfigError
from relay.exporters import ExporterTable
from relay.metrics import Registry, register_exporter_collector
from relay.status import PAGE, DropWindow, Pipeline, document, merge, table
from relay.testing.prometheus import parse_metrics
from relay.workers import MetricsSum

NOW = 1_800_000_000.0
DAY = 86400.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pipeline(**changes: Any) -> Pipeline:
    values: dict[str, Any] = {
        "spool_pending_lines": 10,
        "spool_bytes": 1 << 20,
        "spool_max_bytes": 1 << 30,
        "spool_oldest_pending_seconds": 1.0,
        "endpoint": "logs.example.net:6514",
        "certificate_not_after": NOW + 200 * DAY,
        "kernel_drops": 5,
        "kernel_drops_last_minute": 0,
    }
    return Pipeline(**(values | changes))


def table_of(clock: Clock, *exporters: tuple[str, int | None, int]) -> ExporterTable:
    exporters_table = ExporterTable(wall_clock=clock, silent_after=900)
    for address, domain, records in exporters:
        entry = exporters_table.entry(address, domain)
        entry.datagrams += 1
        entry.records += records
        entry.version_bits |= 1 << (5 if domain is None else 10)
    exporters_table.tick()
    return exporters_table


def doc_of(exporters: ExporterTable, clock: Clock, **changes: Any) -> dict[str, Any]:
    return document(
        exporters.views({"10.0.0.2": 3}), exporters.others, pipeline(**changes), clock()
    )


def test_a_healthy_relay_needs_no_attention() -> None:
    clock = Clock()
    doc = doc_of(table_of(clock, ("10.0.0.1", None, 30)), clock)
    assert doc["attention"] == []
    assert json.loads(json.dumps(doc)) == doc  # what /status serves is this, as JSON


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"endpoint": None}, "no endpoint connected: lines wait in the spool"),
        ({"spool_bytes": int(0.81 * (1 << 30))}, "spool at 81% of its cap (spool.max_size)"),
        ({"spool_oldest_pending_seconds": 301.0}, "oldest undelivered line is 5 min old"),
        ({"certificate_not_after": NOW + 29 * DAY}, "client certificate expires in 29 days"),
        ({"certificate_not_after": NOW - 1}, "client certificate has expired"),
        ({"kernel_drops_last_minute": 7}, "kernel dropped 7 datagrams in the last minute"),
    ],
)
def test_each_thing_that_needs_attention_is_said(changes: dict[str, Any], sentence: str) -> None:
    clock = Clock()
    doc = doc_of(table_of(clock, ("10.0.0.1", None, 30)), clock, **changes)
    (found,) = doc["attention"]
    assert found.startswith(sentence)
    assert f"ATTENTION: {found}" in table(doc)


@pytest.mark.parametrize(
    "changes",
    [
        {"spool_bytes": int(0.8 * (1 << 30))},  # at 80 %, not over
        {"spool_oldest_pending_seconds": 300.0},
        {"certificate_not_after": NOW + 30 * DAY},
        {"certificate_not_after": None},  # no client certificate: nothing expires
        {"spool_max_bytes": 0},
    ],
)
def test_the_thresholds_are_not_crossed_at_the_threshold(changes: dict[str, Any]) -> None:
    clock = Clock()
    assert doc_of(table_of(clock, ("10.0.0.1", None, 30)), clock, **changes)["attention"] == []


def test_a_silent_exporter_is_named_in_the_table_and_the_attention() -> None:
    clock = Clock()
    exporters = table_of(clock, ("10.0.0.1", None, 30), ("10.0.0.2", 7, 12))
    clock.now += 901
    exporters.entry("10.0.0.1").datagrams += 1
    exporters.tick()
    doc = doc_of(exporters, clock)
    assert doc["attention"] == ["exporter 10.0.0.2 (domain 7) is silent: nothing for 15 min"]
    text = table(doc)
    head, first, second = text.splitlines()[:3]
    assert head.split()[:3] == ["EXPORTER", "VERSIONS", "RECORDS/S"]
    assert first.split()[:2] == ["10.0.0.1", "v5"]
    assert second.split() == [
        *("10.0.0.2", "(domain", "7)", "IPFIX", "0.0", "15", "min", "ago", "0.00%", "3", "SILENT")
    ]
    assert "spool        10 lines pending, 1.0 MiB of 1.0 GiB (0%)" in text
    assert "endpoint     logs.example.net:6514" in text
    assert "kernel drops 5 (0 in the last minute)" in text


def test_workers_documents_merge_side_by_side_with_the_other_rows_summed() -> None:
    clock = Clock()
    one = ExporterTable(wall_clock=clock, max_exporters=1)
    two = ExporterTable(wall_clock=clock, max_exporters=1)
    for t, names in ((one, ("10.0.0.1", "10.0.0.3")), (two, ("10.0.0.2", "10.0.0.4"))):
        for name in names:
            entry = t.entry(name)
            entry.datagrams += 2
            entry.records += 10
        t.tick()
    docs = [
        document(one.views(), one.others, pipeline(spool_oldest_pending_seconds=400.0), NOW),
        document(
            two.views(),
            two.others,
            pipeline(endpoint=None, certificate_not_after=NOW + 3 * DAY),
            NOW,
        ),
    ]
    merged = merge(docs, NOW)
    rows = [(e["exporter"], e["datagrams"]) for e in merged["exporters"]]
    assert rows == [("10.0.0.1", 2), ("10.0.0.2", 2), ("other", 4)]
    assert merged["exporters_other"] == 2
    p = merged["pipeline"]
    assert p["spool_pending_lines"] == 20
    assert p["spool_oldest_pending_seconds"] == 400.0
    assert p["certificate_not_after"] == NOW + 3 * DAY
    assert [e["connected"] for e in p["endpoints"]] == [True, False]
    assert merged["attention"] == [
        "no endpoint connected (1 of 2 workers): lines wait in the spool",
        "oldest undelivered line is 6 min old",
        "client certificate expires in 3 days: renew it and reload",
    ]


def test_the_supervisor_serves_the_merge_and_leaves_out_a_worker_cut_off() -> None:
    clock = Clock()
    doc = doc_of(table_of(clock, ("10.0.0.1", None, 30)), clock)
    total = MetricsSum()
    total.update([], [json.dumps(doc), '{"exporters": [', json.dumps(doc)])
    merged = json.loads(total.status_json())
    assert [(e["exporter"], e["records"]) for e in merged["exporters"]] == [("10.0.0.1", 60)]
    assert merged["pipeline"]["spool_pending_lines"] == 20


def test_kernel_drops_count_over_the_last_minute_only() -> None:
    window = DropWindow()
    assert window.observe(0.0, 100) == 0
    assert window.observe(30.0, 130) == 30
    # Since the newest sample at least a minute old: the drops of 0-30 s may be 31 s old.
    assert window.observe(61.0, 130) == 30
    assert window.observe(91.0, 130) == 0  # 30 s is a minute old now: the base is 130
    assert window.observe(100.0, 131) == 1


def test_the_exporter_series_are_labelled_by_exporter_and_domain() -> None:
    clock = Clock()
    exporters = table_of(clock, ("10.0.0.1", None, 30), ("10.0.0.2", 7, 12))
    exporters.entry("10.0.0.1").malformed_datagram("short_header")
    registry = Registry()
    register_exporter_collector(registry, exporters, lambda: {"10.0.0.2": 3})
    scrape = parse_metrics(registry.render())
    assert scrape.value("flowrelay_exporter_records_total", exporter="10.0.0.1") == 30
    assert scrape.value("flowrelay_exporter_records_total", exporter="10.0.0.2", domain="7") == 12
    assert (
        scrape.value(
            "flowrelay_exporter_malformed_total", exporter="10.0.0.1", reason="short_header"
        )
        == 1
    )
    assert scrape.value("flowrelay_exporter_last_seen_timestamp_seconds", exporter="10.0.0.1") == (
        NOW
    )
    assert scrape.value("flowrelay_exporter_silent", exporter="10.0.0.2", domain="7") == 0
    assert scrape.value("flowrelay_exporter_templates", exporter="10.0.0.2") == 3
    assert scrape.value("flowrelay_exporters") == 2
    assert scrape.value("flowrelay_exporters_other") == 0


def test_the_page_is_self_contained() -> None:
    assert 'fetch("/status"' in PAGE
    for external in ("src=", "href=", "@import", "//"):
        assert external not in PAGE.replace("http-equiv", "")


@pytest.mark.parametrize(
    ("document_", "key"),
    [
        ({"metrics": {"max_exporters": 0}}, "metrics.max_exporters"),
        ({"metrics": {"max_exporters": 65537}}, "metrics.max_exporters"),
        ({"metrics": {"max_exporters": "many"}}, "metrics.max_exporters"),
        ({"exporters": {"silent_after": 0}}, "exporters.silent_after"),
        ({"exporters": {"silent_afterr": 5}}, "exporters.silent_afterr"),
    ],
)
def test_a_bad_exporter_key_is_refused_naming_it(document_: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(document_, environ={})


def test_the_exporter_keys_round_trip_through_the_workers_document() -> None:
    config = load({"metrics": {"max_exporters": 9}, "exporters": {"silent_after": 60}}, environ={})
    assert (config.metrics.max_exporters, config.exporters.silent_after) == (9, 60.0)
    assert load(to_document(config), environ={}) == config


def test_an_exporter_heard_by_two_workers_is_one_row_silent_only_if_silent_on_both() -> None:
    clock = Clock()
    early = table_of(clock, ("10.0.0.1", None, 10))  # heard once while the other started
    clock.now += 1000
    early.tick()
    now = table_of(clock, ("10.0.0.1", None, 30))
    docs = [document(t.views(), t.others, pipeline(), clock()) for t in (early, now)]
    assert docs[0]["attention"]  # the early worker alone finds it silent
    merged = merge(docs, clock())
    (row,) = merged["exporters"]
    assert (row["records"], row["silent"], row["last_seen"]) == (40, False, clock())
    assert merged["attention"] == []


def test_the_supervisors_metrics_take_an_exporter_as_silent_only_if_every_worker_does() -> None:
    clock = Clock()
    texts = []
    for silent in (True, False):
        exporters = table_of(clock, ("10.0.0.1", None, 10))
        if silent:
            clock.now += 1000
            exporters.tick()
        registry = Registry()
        register_exporter_collector(registry, exporters, dict)
        texts.append(registry.render())
    total = MetricsSum()
    total.update(texts)
    scrape = parse_metrics(total.render())
    assert scrape.value("flowrelay_exporter_silent", exporter="10.0.0.1") == 0
    assert scrape.value("flowrelay_exporter_last_seen_timestamp_seconds", exporter="10.0.0.1") == (
        clock.now
    )
    assert scrape.value("flowrelay_exporter_records_total", exporter="10.0.0.1") == 20
