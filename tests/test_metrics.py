"""The relay's metrics through prometheus_client, and the /metrics + /healthz endpoint.

The exposition is checked with the suite's one strict reader (relay.testing.prometheus),
written from the formats' description (HELP/TYPE lines, then ``name{label="value",...}
number``; label values escape backslash, double quote and newline; HELP text escapes
backslash and newline; OpenMetrics ends with ``# EOF``), and the endpoint with real HTTP
requests over loopback. tests/system/test_promtool.py has Prometheus' own checker read a
running relay's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import ConfigError
from relay.metrics import Family, Registry, RelayMetrics, serve_http
from relay.testing.prometheus import parse_families, parse_metrics
from relay.workers import MetricsSum, sum_expositions

# ---- families and their exposition ----------------------------------------------------------


def test_counter_and_gauge_render_with_help_and_type() -> None:
    registry = Registry()
    received = registry.family("demo_packets_total", "counter", "Packets received", labelled=True)
    pending = registry.family("demo_pending", "gauge", "Lines waiting")
    received.inc(3, (("version", "5"),))
    received.inc(1, (("version", "5"),))
    received.inc(2, (("version", "other"),))
    pending.set(7)
    text = registry.render()
    assert text.splitlines()[:2] == [
        "# HELP demo_packets_total Packets received",
        "# TYPE demo_packets_total counter",
    ]
    parsed = parse_families(text)
    assert parsed["demo_packets_total"].kind == "counter"
    assert parsed["demo_packets_total"].samples == {
        (("version", "5"),): 4,
        (("version", "other"),): 2,
    }
    assert parsed["demo_pending"].kind == "gauge"
    assert parsed["demo_pending"].help == "Lines waiting"
    assert parsed["demo_pending"].samples == {(): 7}


@pytest.mark.parametrize("value", [0, 3, 0.25, 2**53, 10**18, 1e-9])
def test_numbers_read_back_exactly(value: float) -> None:
    registry = Registry()
    registry.family("x", "gauge", "h").set(value)
    assert parse_families(registry.render())["x"].samples == {(): value}


def test_family_get_inc_set() -> None:
    fam = Family(name="c_total", kind="counter", help="h")
    assert fam.get() == 0
    fam.inc()
    fam.inc(4)
    assert fam.get() == 5
    fam.set(9, (("a", "b"),))
    assert fam.get((("a", "b"),)) == 9
    assert fam.get((("a", "c"),)) == 0


@pytest.mark.parametrize(
    ("name", "kind"),
    [("lines", "counter"), ("lines_total", "gauge"), ("lines_total", "histogram")],
)
def test_a_family_named_against_its_kind_is_refused(name: str, kind: str) -> None:
    with pytest.raises(ValueError, match=name):
        Family(name=name, kind=kind, help="h")


def test_a_family_registered_twice_is_refused() -> None:
    registry = Registry()
    registry.family("twice_total", "counter", "h")
    with pytest.raises(ValueError, match="twice"):
        registry.family("twice_total", "counter", "h")


def test_several_labels_make_one_series() -> None:
    registry = Registry()
    fam = registry.family("m_total", "counter", "h", labelled=True)
    fam.inc(1, (("reason", "empty"), ("exporter", "10.0.0.1")))
    fam.inc(2, (("reason", "empty"), ("exporter", "10.0.0.2")))
    scrape = parse_metrics(registry.render())
    assert scrape.value("m_total", reason="empty", exporter="10.0.0.1") == 1
    assert scrape.value("m_total", reason="empty", exporter="10.0.0.2") == 2


@given(st.text(st.characters(codec="utf-8"), max_size=30))
def test_any_label_value_reads_back_as_it_was(value: str) -> None:
    # Backslash, double quote and line feed are escaped (a raw line feed would cut the
    # sample line in two and the whole scrape would be rejected).
    registry = Registry()
    registry.family("m_total", "counter", "h", labelled=True).inc(1, (("reason", value),))
    text = registry.render()
    assert parse_families(text)["m_total"].samples == {(("reason", value),): 1}
    om = registry.exposition("application/openmetrics-text")[0].decode()
    assert parse_families(om, openmetrics=True)["m_total"].samples == {(("reason", value),): 1}


def test_help_text_escapes_backslash_and_newline() -> None:
    registry = Registry()
    registry.family("h_total", "counter", "a \\ b\nc")
    text = registry.render()
    assert "# HELP h_total a \\\\ b\\nc\n" in text
    assert parse_families(text)["h_total"].help == "a \\ b\nc"


def test_collectors_run_before_each_render() -> None:
    registry = Registry()
    gauge = registry.family("owned_elsewhere", "gauge", "read at scrape time")
    source = {"value": 1}
    registry.add_collector(lambda: gauge.set(source["value"]))
    assert parse_metrics(registry.render()).value("owned_elsewhere") == 1
    source["value"] = 42
    assert parse_metrics(registry.render()).value("owned_elsewhere") == 42


SPEC_FAMILIES = {
    "flowrelay_packets_received_total": "counter",
    "flowrelay_records_decoded_total": "counter",
    "flowrelay_packets_malformed_total": "counter",
    "flowrelay_packets_denied_total": "counter",
    "flowrelay_flows_lost_total": "counter",
    "flowrelay_udp_kernel_drops_total": "counter",
    "flowrelay_lines_spooled_total": "counter",
    "flowrelay_spool_bytes": "gauge",
    "flowrelay_spool_pending_lines": "gauge",
    "flowrelay_lines_forwarded_total": "counter",
    "flowrelay_forward_reconnects_total": "counter",
    "flowrelay_lines_dropped_total": "counter",
    "flowrelay_endpoint_connected": "gauge",
    # Issue 12: how far behind, and the cap the "spool nearly full" alert divides by.
    "flowrelay_spool_oldest_pending_seconds": "gauge",
    "flowrelay_spool_max_bytes": "gauge",
}

# The names the relay exported before prometheus_client: they are a contract too.
EXPORTED_BEFORE = {
    *SPEC_FAMILIES,
    "flowrelay_packets_warning_total",
    "flowrelay_sequence_streams",
    "flowrelay_sequence_streams_evicted_total",
    "flowrelay_spool_corrupt_frames_total",
    "flowrelay_spool_segments_deleted_on_open_total",
    "flowrelay_lines_resent_total",
}

PROCESS_FAMILIES = {
    "process_resident_memory_bytes": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


def test_relay_metrics_have_the_contract_names_and_types() -> None:
    parsed = parse_families(RelayMetrics().registry.render())
    for name, kind in (SPEC_FAMILIES | PROCESS_FAMILIES).items():
        assert name in parsed, f"{name} missing from /metrics"
        assert parsed[name].kind == kind, name
        assert parsed[name].help, f"{name} has no HELP text"
    assert set(parsed) >= EXPORTED_BEFORE
    for name, fam in parsed.items():
        assert name.startswith(("flowrelay_", "process_")), name
        # Counters end in _total; nothing else does.
        assert (fam.kind == "counter") == name.endswith("_total"), name


def test_process_metrics_describe_this_process() -> None:
    scrape = parse_metrics(RelayMetrics().registry.render())
    assert scrape.value("process_resident_memory_bytes") > 1 << 20
    assert scrape.value("process_open_fds") >= 3
    assert scrape.value("process_cpu_seconds_total") > 0
    assert scrape.value("process_start_time_seconds") > 1e9


def test_openmetrics_has_the_same_series_as_the_text_format() -> None:
    metrics = RelayMetrics()
    metrics.packets_received.inc(3, (("version", "5"),))
    metrics.lines_dropped.set(2, (("reason", "oldest"),))
    body, content_type = metrics.registry.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    om = parse_metrics(body.decode(), openmetrics=True)
    text = parse_metrics(metrics.registry.render())
    assert om.types == text.types
    volatile = {"process_cpu_seconds_total", "process_resident_memory_bytes",
                "process_virtual_memory_bytes", "process_open_fds"}  # fmt: skip
    assert {k: v for k, v in om.samples.items() if k[0] not in volatile} == {
        k: v for k, v in text.samples.items() if k[0] not in volatile
    }


def test_unlabelled_families_show_zero_before_anything_happens() -> None:
    # An operator's first scrape (or alert rule) looks for e.g. flowrelay_packets_denied_total;
    # a family with no sample line reads as "metric absent", not 0 (Prometheus' own client
    # libraries export unlabelled metrics as 0 from the start).
    parsed = parse_families(RelayMetrics().registry.render())
    for name in (
        "flowrelay_records_decoded_total",
        "flowrelay_packets_denied_total",
        "flowrelay_flows_lost_total",
        "flowrelay_lines_spooled_total",
        "flowrelay_spool_oldest_pending_seconds",
    ):
        assert parsed[name].samples == {(): 0}, f"{name} has no sample line"


# ---- the workers supervisor's sum -----------------------------------------------------------


def worker_text(received: int, pending: int, reason: str, oldest: float = 0) -> str:
    metrics = RelayMetrics()
    metrics.packets_received.inc(received, (("version", "5"),))
    metrics.lines_dropped.set(1, (("reason", reason),))
    metrics.spool_pending_lines.set(pending)
    metrics.spool_oldest_pending_seconds.set(oldest)
    return metrics.registry.render()


def summed(texts: list[str]) -> str:
    total = MetricsSum()
    total.update(texts)
    return total.render()


def test_the_supervisor_sums_each_series_over_its_workers() -> None:
    texts = [worker_text(3, 10, "oldest"), worker_text(4, 5, "newest")]
    scrape = parse_metrics(summed(texts))
    assert scrape.value("flowrelay_packets_received_total", version="5") == 7
    assert scrape.value("flowrelay_spool_pending_lines") == 15
    assert scrape.by_label("flowrelay_lines_dropped_total", "reason") == {"oldest": 1, "newest": 1}
    assert scrape.types["flowrelay_packets_received_total"] == "counter"
    assert scrape.helps["flowrelay_spool_pending_lines"] == "Lines in the spool not yet taken"


def test_the_supervisors_oldest_pending_line_is_the_oldest_of_all_workers() -> None:
    texts = [worker_text(1, 1, "a", 30.5), worker_text(1, 1, "a", 400), worker_text(1, 0, "a")]
    scrape = parse_metrics(summed(texts))
    assert scrape.value("flowrelay_spool_oldest_pending_seconds") == 400
    assert scrape.value("flowrelay_spool_pending_lines") == 2


def test_the_supervisor_leaves_out_the_workers_process_metrics_and_a_broken_scrape() -> None:
    texts = [worker_text(3, 10, "oldest"), "garbage {{{\n", ""]
    families = {f.name for f in sum_expositions(texts)}
    assert "flowrelay_packets_received" in families
    assert not any(name.startswith("process_") for name in families)
    assert math.isclose(
        parse_metrics(summed(texts)).value("flowrelay_packets_received_total", version="5"), 3
    )


# ---- the HTTP endpoint ----------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


async def http(port: int, request: bytes, *, timeout: float = 5) -> Response:
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            data = b""
            for _ in range(1000):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version.startswith("HTTP/1.")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return Response(status=int(status), headers=headers, body=body.decode())


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n".encode()


class Health:
    def __init__(self) -> None:
        self.ok = True

    def __call__(self) -> tuple[bool, str]:
        return self.ok, "ok endpoint_connected=1" if self.ok else "stopping"


async def start(nursery: trio.Nursery, registry: Registry, health: Health) -> int:
    port: int = await nursery.start(lambda task_status: serve_http(
        registry, "127.0.0.1", 0, health=health, task_status=task_status
    ))  # fmt: skip
    return port


async def test_get_metrics_serves_the_current_exposition() -> None:
    metrics = RelayMetrics()
    metrics.packets_received.inc(3, (("version", "5"),))
    metrics.packets_malformed.inc(1, (("reason", "short_records"),))
    async with trio.open_nursery() as nursery:
        port = await start(nursery, metrics.registry, Health())
        first = await http(port, get("/metrics"))
        metrics.packets_received.inc(2, (("version", "5"),))
        second = await http(port, get("/metrics?x=1"))  # a query string is ignored
        nursery.cancel_scope.cancel()
    assert first.status == 200
    assert first.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    parsed = parse_families(first.body)
    assert parsed["flowrelay_packets_received_total"].samples[(("version", "5"),)] == 3
    assert parsed["flowrelay_packets_malformed_total"].samples == {
        (("reason", "short_records"),): 1
    }
    assert parse_families(second.body)["flowrelay_packets_received_total"].samples == {
        (("version", "5"),): 5
    }


async def test_an_openmetrics_accept_header_gets_openmetrics() -> None:
    metrics = RelayMetrics()
    metrics.packets_received.inc(3, (("version", "5"),))
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    async with trio.open_nursery() as nursery:
        port = await start(nursery, metrics.registry, Health())
        om = await http(
            port, f"GET /metrics HTTP/1.1\r\nHost: x\r\nACCEPT: {accept}\r\n\r\n".encode()
        )
        text = await http(port, get("/metrics"))
        nursery.cancel_scope.cancel()
    assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    scrape = parse_metrics(om.body, openmetrics=True)
    assert scrape.value("flowrelay_packets_received_total", version="5") == 3
    assert text.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert not text.body.endswith("# EOF\n")


async def test_healthz_is_200_when_healthy_and_503_when_not() -> None:
    health = Health()
    async with trio.open_nursery() as nursery:
        port = await start(nursery, Registry(), health)
        ok = await http(port, get("/healthz"))
        health.ok = False
        bad = await http(port, get("/healthz"))
        nursery.cancel_scope.cancel()
    assert (ok.status, ok.body) == (200, "ok endpoint_connected=1\n")
    assert (bad.status, bad.body) == (503, "stopping\n")


async def test_unknown_path_is_404_and_other_methods_405() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery, Registry(), Health())
        missing = await http(port, get("/"))
        other = await http(port, get("/metricsx"))
        post = await http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        head = await http(port, b"DELETE /healthz HTTP/1.0\r\n\r\n")
        nursery.cancel_scope.cancel()
    assert missing.status == 404
    assert other.status == 404
    assert "/metrics" in missing.body  # says where to look
    assert post.status == 405
    assert head.status == 405


async def test_bare_newline_request_is_answered() -> None:
    # Hand-typed requests (nc, telnet) often end lines with \n only.
    async with trio.open_nursery() as nursery:
        port = await start(nursery, Registry(), Health())
        response = await http(port, b"GET /healthz HTTP/1.0\n\n")
        nursery.cancel_scope.cancel()
    assert response.status == 200


async def test_slow_client_does_not_block_others() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery, RelayMetrics().registry, Health())
        # Several clients that connect and send half a request, then nothing.
        stalled = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
        for s in stalled:
            await s.send_all(b"GET /metr")
        started = trio.current_time()
        for _ in range(3):
            response = await http(port, get("/metrics"), timeout=2)
            assert response.status == 200
        assert trio.current_time() - started < 2
        for s in stalled:
            await s.aclose()
        nursery.cancel_scope.cancel()


async def test_stalled_client_is_disconnected(autojump_clock: trio.testing.MockClock) -> None:
    # Virtual time: the server's per-connection timeout passes without waiting for it.
    async with trio.open_nursery() as nursery:
        port = await start(nursery, Registry(), Health())
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /metrics HTTP/1.1\r\n")
        with trio.fail_after(120):
            assert await stream.receive_some(1024) == b""  # closed by the server
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_oversized_request_is_dropped_without_an_answer() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery, Registry(), Health())
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            data = b""
            try:
                await stream.send_all(b"GET /metrics HTTP/1.1\r\nX-Junk: " + b"a" * 40000)
                for _ in range(100):
                    chunk = await stream.receive_some(1024)
                    if not chunk:
                        break
                    data += chunk
            except trio.BrokenResourceError:
                pass  # the server closed while we were still sending: also fine
            await stream.aclose()
        # And the server still answers the next client.
        assert (await http(port, get("/healthz"))).status == 200
        nursery.cancel_scope.cancel()
    assert b"200 OK" not in data


async def test_port_in_use_is_a_config_error_naming_the_key() -> None:
    holder = trio.socket.socket()
    await holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(ConfigError) as info:
            await serve_http(Registry(), "127.0.0.1", port, health=Health())
    finally:
        holder.close()
    assert info.value.key == "metrics.address"
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "\n" not in str(info.value)
