"""``/status``: the relay at a glance, as JSON, as a page, and as ``relay status``'s table.

One document, built by :func:`document` from the exporter table and a :class:`Pipeline`
snapshot, serves all three: the relay answers ``GET /status`` with it, ``GET /`` with
:data:`PAGE` (self-contained: its script fetches /status every few seconds and fills the
table in place), and ``relay status`` prints :func:`table` and exits non-zero when
:func:`attention` finds anything. The worker supervisor serves :func:`merge` of its workers'
documents. Everything here is pure (times are arguments), so that the decision of what needs
attention is made in one place, the same for the page, the command and a merged supervisor.
"""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.request
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from relay.exporters import OTHER, ExporterView, describe

# What needs attention (the same thresholds as deploy/alerts.yml, but the certificate's:
# the alert is critical at 14 days, the status says so from 30, as `relay certs check`).
SPOOL_FULL_RATIO: Final = 0.8
OLDEST_PENDING_MAX: Final = 300.0
CERTIFICATE_DAYS: Final = 30
DROPS_WINDOW: Final = 60.0

Document = dict[str, Any]


class StatusUnavailable(Exception):
    """``relay status`` cannot read the relay's /status (not running, not there, garbled)."""


def fetch_status(host: str, port: int, *, timeout: float = 5.0) -> Document:
    """GET /status of the relay whose metrics listen on ``host``:``port`` (a wildcard
    address is asked on loopback)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with_brackets = f"[{host}]" if _is_v6(host) else host
    url = f"http://{with_brackets}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            doc = json.loads(reply.read())
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise StatusUnavailable(
            f"cannot read /status from {shown} ({reason}): is the relay running, and is "
            "this its metrics.address (--metrics / -c)?"
        ) from None
    except ValueError as exc:
        raise StatusUnavailable(f"{shown}/status did not answer JSON: {exc}") from None
    if not isinstance(doc, dict) or "attention" not in doc:
        raise StatusUnavailable(f"{shown}/status is not a flowrelay status document")
    return doc


def _is_v6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipeline:
    """The data path behind the exporters, at one moment."""

    spool_pending_lines: int
    spool_bytes: int
    spool_max_bytes: int
    spool_oldest_pending_seconds: float
    endpoint: str | None  # connected to, or None
    certificate_not_after: float | None  # UNIX time; None without a client certificate
    kernel_drops: int
    kernel_drops_last_minute: int


class DropWindow:
    """Kernel drops over the last minute, from the running total sampled every tick: since
    the newest sample at least a minute old (so a drop is reported for a minute at least, and
    for a minute and a tick at most)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, now: float, total: int) -> int:
        """Record ``total`` at ``now``; the drops since the oldest sample of the window."""
        samples = self._samples
        samples.append((now, total))
        while len(samples) > 1 and now - samples[1][0] >= DROPS_WINDOW:
            samples.popleft()
        return total - samples[0][1]


def document(
    views: Sequence[ExporterView], others: int, pipeline: Pipeline, now: float
) -> Document:
    exporters = [_exporter(v) for v in views]
    doc: Document = {
        "time": now,
        "exporters": exporters,
        "exporters_other": others,
        "pipeline": {
            **{k: v for k, v in asdict(pipeline).items() if k != "endpoint"},
            "endpoints": [
                {"endpoint": pipeline.endpoint, "connected": pipeline.endpoint is not None}
            ],
        },
    }
    doc["attention"] = attention(doc)
    return doc


def _exporter(v: ExporterView) -> dict[str, Any]:
    return {
        "exporter": v.exporter,
        "domain": v.domain,
        "versions": list(v.versions),
        "datagrams": v.datagrams,
        "records": v.records,
        "malformed": v.malformed,
        "flows_lost": v.flows_lost,
        "loss_ratio": v.loss_ratio,
        "first_seen": v.first_seen,
        "last_seen": v.last_seen,
        "records_per_second": v.records_per_second,
        "templates": v.templates,
        "silent": v.silent,
    }


def attention(doc: Document) -> list[str]:
    """Each thing in ``doc`` that needs someone, as a sentence; empty when all is well."""
    now = float(doc["time"])
    found = [
        f"exporter {describe(e['exporter'], e['domain'])} is silent: nothing for "
        f"{_duration(now - e['last_seen'])}"
        for e in doc["exporters"]
        if e["silent"]
    ]
    p = doc["pipeline"]
    down = [e for e in p["endpoints"] if not e["connected"]]
    if down:
        of = f" ({len(down)} of {len(p['endpoints'])} workers)" if len(p["endpoints"]) > 1 else ""
        found.append(f"no endpoint connected{of}: lines wait in the spool")
    cap = p["spool_max_bytes"]
    if cap and p["spool_bytes"] > SPOOL_FULL_RATIO * cap:
        found.append(
            f"spool at {p['spool_bytes'] / cap:.0%} of its cap (spool.max_size): at the cap "
            "it drops lines"
        )
    if p["spool_oldest_pending_seconds"] > OLDEST_PENDING_MAX:
        found.append(
            f"oldest undelivered line is {_duration(p['spool_oldest_pending_seconds'])} old"
        )
    not_after = p["certificate_not_after"]
    if not_after is not None and not_after - now < CERTIFICATE_DAYS * 86400:
        left = not_after - now
        found.append(
            "client certificate has expired"
            if left <= 0
            else f"client certificate expires in {_duration(left)}: renew it and reload"
        )
    if p["kernel_drops_last_minute"] > 0:
        found.append(
            f"kernel dropped {p['kernel_drops_last_minute']} datagrams in the last minute "
            "(receive buffer full: listen.receive_buffer, workers)"
        )
    return found


def merge(docs: Sequence[Document], now: float) -> Document:
    """The supervisor's document: its workers' exporters side by side, their pipelines summed
    (the oldest line is the oldest of all; the certificate, the first to expire).

    Each exporter is steered to one worker, but not always the same one: datagrams that
    arrived while a worker was starting or restarting went to another. Rows of the same
    exporter are summed into one, which is silent only if every worker finds it silent (the
    one that heard it once, long ago, does not make it silent while another hears it now);
    the "other" rows are summed likewise."""
    rows: dict[tuple[str, int | None], dict[str, Any]] = {}
    for doc in docs:
        for e in doc["exporters"]:
            key = (e["exporter"], e["domain"])
            rows[key] = _sum_rows(rows[key], e) if key in rows else dict(e)
    exporters = sorted(
        rows.values(),
        key=lambda e: (
            e["exporter"] == OTHER,
            e["exporter"],
            e["domain"] is not None,
            e["domain"] or 0,
        ),
    )
    pipes = [d["pipeline"] for d in docs]
    expiries = [p["certificate_not_after"] for p in pipes if p["certificate_not_after"]]
    merged: Document = {
        "time": now,
        "exporters": exporters,
        "exporters_other": sum(d["exporters_other"] for d in docs),
        "pipeline": {
            **{
                key: sum(p[key] for p in pipes)
                for key in (
                    "spool_pending_lines",
                    "spool_bytes",
                    "spool_max_bytes",
                    "kernel_drops",
                    "kernel_drops_last_minute",
                )
            },
            "spool_oldest_pending_seconds": max(
                (p["spool_oldest_pending_seconds"] for p in pipes), default=0.0
            ),
            "certificate_not_after": min(expiries, default=None),
            "endpoints": [e for p in pipes for e in p["endpoints"]],
        },
    }
    merged["attention"] = attention(merged)
    return merged


def _sum_rows(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key in ("datagrams", "records", "flows_lost", "records_per_second"):
        out[key] = a[key] + b[key]
    out["versions"] = sorted(set(a["versions"]) | set(b["versions"]))
    out["malformed"] = {
        r: a["malformed"].get(r, 0) + b["malformed"].get(r, 0)
        for r in {*a["malformed"], *b["malformed"]}
    }
    total = out["records"] + out["flows_lost"]
    out["loss_ratio"] = out["flows_lost"] / total if total else 0.0
    out["first_seen"] = min(a["first_seen"], b["first_seen"])
    out["last_seen"] = max(a["last_seen"], b["last_seen"])
    out["templates"] = max(a["templates"], b["templates"])
    out["silent"] = a["silent"] and b["silent"]
    return out


def table(doc: Document) -> str:
    """``relay status``'s terminal table: the exporters, the pipeline, what needs attention."""
    now = float(doc["time"])
    head = ("EXPORTER", "VERSIONS", "RECORDS/S", "LAST SEEN", "LOSS", "TEMPLATES", "")
    rows: list[tuple[str, ...]] = [head]
    rows += [
        (
            describe(e["exporter"], e["domain"]),
            ",".join(_version(v) for v in e["versions"]) or "-",
            f"{e['records_per_second']:.1f}",
            f"{_duration(now - e['last_seen'])} ago",
            f"{e['loss_ratio']:.2%}",
            str(e["templates"]),
            "SILENT" if e["silent"] else "",
        )
        for e in doc["exporters"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append("(no exporter has sent anything yet)")
    if doc["exporters_other"]:
        lines.append(f"{doc['exporters_other']} more exporters summed under 'other'")
    p = doc["pipeline"]
    endpoints = ", ".join(e["endpoint"] or "not connected" for e in p["endpoints"])
    cap = p["spool_max_bytes"]
    not_after = p["certificate_not_after"]
    lines += [
        "",
        f"spool        {p['spool_pending_lines']} lines pending, {_bytes(p['spool_bytes'])}"
        + (f" of {_bytes(cap)} ({p['spool_bytes'] / cap:.0%})" if cap else ""),
        f"oldest line  {_duration(p['spool_oldest_pending_seconds'])}",
        f"endpoint     {endpoints}",
        "certificate  "
        + (
            "none (no client certificate)"
            if not_after is None
            else f"expires {time.strftime('%Y-%m-%d', time.gmtime(not_after))}"
            f" (in {_duration(not_after - now)})"
        ),
        f"kernel drops {p['kernel_drops']} ({p['kernel_drops_last_minute']} in the last minute)",
        "",
    ]
    found = doc["attention"]
    lines += [f"ATTENTION: {a}" for a in found] if found else ["all well"]
    return "\n".join(lines) + "\n"


def _version(v: int) -> str:
    return "IPFIX" if v == 10 else f"v{v}"


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 3 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


def _bytes(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def sorted_views(views: Iterable[ExporterView]) -> list[ExporterView]:
    """By address then domain, OTHER last (the table's own order is first seen)."""
    return sorted(
        views,
        key=lambda v: (v.exporter == OTHER, v.exporter, v.domain is not None, v.domain or 0),
    )


PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flowrelay status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .5em}h2{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:40em}
th,td{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.silent td{background:#fde8e8}#attention li{color:#a00}#ok{color:#080}
#updated{color:#777;font-size:.9em}
</style></head><body>
<h1>flowrelay status</h1>
<div id="updated">loading /status&hellip;</div>
<ul id="attention"></ul><div id="ok"></div>
<h2>Exporters</h2>
<table><thead><tr><th>Exporter</th><th>Versions</th><th>Records/s (1 min)</th>
<th>Last seen</th><th>Loss</th><th>Templates</th><th>State</th></tr></thead>
<tbody id="exporters"></tbody></table>
<h2>Pipeline</h2>
<table><tbody id="pipeline"></tbody></table>
<script>
"use strict";
function ago(s){s=Math.max(0,Math.floor(s));if(s<120)return s+" s";if(s<7200)
return Math.floor(s/60)+" min";if(s<259200)return Math.floor(s/3600)+" h";
return Math.floor(s/86400)+" days";}
function cell(row,text,num){const td=row.insertCell();td.textContent=text;
if(num)td.className="n";}
function name(e){return e.domain===null?e.exporter:e.exporter+" (domain "+e.domain+")";}
function ver(v){return v===10?"IPFIX":"v"+v;}
function size(n){for(const [u,b] of [["GiB",2**30],["MiB",2**20],["KiB",1024]])
if(n>=b)return (n/b).toFixed(1)+" "+u;return n+" B";}
function render(d){
 const body=document.getElementById("exporters");body.replaceChildren();
 for(const e of d.exporters){const r=body.insertRow();if(e.silent)r.className="silent";
  cell(r,name(e));cell(r,e.versions.map(ver).join(",")||"-");
  cell(r,e.records_per_second.toFixed(1),true);cell(r,ago(d.time-e.last_seen)+" ago",true);
  cell(r,(100*e.loss_ratio).toFixed(2)+" %",true);cell(r,String(e.templates),true);
  cell(r,e.silent?"SILENT":"ok");}
 if(!d.exporters.length){const r=body.insertRow();cell(r,"no exporter has sent anything yet");}
 const p=d.pipeline,pipe=document.getElementById("pipeline");pipe.replaceChildren();
 const rows=[["Spool pending lines",String(p.spool_pending_lines)],
  ["Spool bytes",size(p.spool_bytes)+(p.spool_max_bytes?" of "+size(p.spool_max_bytes):"")],
  ["Oldest pending line",ago(p.spool_oldest_pending_seconds)],
  ["Endpoint",p.endpoints.map(e=>e.endpoint||"not connected").join(", ")],
  ["Client certificate",p.certificate_not_after===null?"none":
   new Date(p.certificate_not_after*1000).toISOString().slice(0,10)+" (in "+
   ago(p.certificate_not_after-d.time)+")"],
  ["Kernel drops",p.kernel_drops+" ("+p.kernel_drops_last_minute+" in the last minute)"]];
 for(const [k,v] of rows){const r=pipe.insertRow();cell(r,k);cell(r,v);}
 const att=document.getElementById("attention");att.replaceChildren();
 for(const a of d.attention){const li=document.createElement("li");li.textContent=a;
  att.appendChild(li);}
 document.getElementById("ok").textContent=d.attention.length?"":"All well.";
 document.getElementById("updated").textContent="updated "+
  new Date(d.time*1000).toISOString().replace("T"," ").slice(0,19)+" UTC";}
async function refresh(){try{const r=await fetch("/status",{cache:"no-store"});
 render(await r.json());}catch(err){document.getElementById("updated").textContent=
 "cannot read /status: "+err;}}
refresh();setInterval(refresh,3000);
</script></body></html>
"""
