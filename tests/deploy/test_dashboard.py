"""deploy/grafana-dashboard.json: a Grafana dashboard that parses, has the schema's fields,
and queries only series the relay exports or deploy/alerts.yml names; promtool parses every
query (as a recording rule, with Grafana's variables filled in)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .promql import DEPLOY, exported_names, metric_names, promtool

DASHBOARD = DEPLOY / "grafana-dashboard.json"


def dashboard() -> dict[str, Any]:
    value = json.loads(DASHBOARD.read_text())
    assert isinstance(value, dict)
    return value


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def alert_names() -> set[str]:
    document = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return {
        name
        for group in document["groups"]
        for rule in group["rules"]
        for name in metric_names(rule["expr"])
    }


def test_the_dashboard_has_grafanas_top_level_fields() -> None:
    d = dashboard()
    assert isinstance(d["schemaVersion"], int)
    assert d["schemaVersion"] >= 36
    assert d["title"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", d["uid"])
    assert {"from", "to"} <= d["time"].keys()
    assert isinstance(d["templating"]["list"], list)
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]


def test_panels_have_unique_ids_a_place_on_the_grid_and_queries() -> None:
    everything = dashboard()["panels"]
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    for p in everything:
        grid = p["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys(), p["title"]
        assert 0 <= grid["x"] <= grid["x"] + grid["w"] <= 24, p["title"]
    for p in panels():
        assert p["title"], p
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_no_two_panels_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_query_names_only_series_the_relay_exports_or_the_alerts_name() -> None:
    known = exported_names() | alert_names()
    used: set[str] = set()
    for expr in queries():
        names = metric_names(expr)
        assert names, expr
        assert names <= known, f"{expr}: unknown {names - known}"
        used |= names
    # And the dashboard shows what the alerts watch.
    assert alert_names() <= used


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    grafana = {"$__rate_interval": "5m", "$instance": ".*"}
    rules = []
    for i, expr in enumerate(queries()):
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
