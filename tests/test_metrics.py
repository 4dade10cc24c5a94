"""Prometheus text exposition (format 0.0.4) and the /metrics + /healthz endpoint.

The exposition is checked with the suite's one strict reader (relay.testing.prometheus),
written from the format's description (HELP/TYPE lines, then ``name{label="value",...}
number``; label values escape backslash, double quote and newline; HELP text escapes
backslash and newline), and the endpoint with real HTTP requests over loopback.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import trio
import trio.testing

from relay.errors import ConfigError
from relay.metrics import Family, Registry, RelayMetrics, render_families, serve_http
from relay.testing.prometheus import parse_families

# ---- rendering ------------------------------------------------------------------------------


def test_counter_and_gauge_render_with_help_and_type() -> None:
    registry = Registry()
    received = registry.family("demo_packets_total", "counter", "Packets received")
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
    assert 'demo_packets_total{version="5"} 4\n' in text
    assert 'demo_packets_total{version="other"} 2\n' in text
    assert "demo_pending 7\n" in text
    parsed = parse_families(text)
    assert parsed["demo_packets_total"].kind == "counter"
    assert parsed["demo_pending"].kind == "gauge"
    assert parsed["demo_pending"].help == "Lines waiting"


def test_numbers_render_as_prometheus_reads_them() -> None:
    fam = Family(name="x", kind="gauge", help="h")
    fam.set(3.0, (("k", "int"),))
    fam.set(0.25, (("k", "fraction"),))
    fam.set(2**53, (("k", "big"),))
    text = render_families([fam])
    assert 'x{k="int"} 3\n' in text
    assert 'x{k="fraction"} 0.25\n' in text
    assert parse_families(text)["x"].samples[(("k", "big"),)] == 2**53


def test_family_get_inc_set() -> None:
    fam = Family(name="c_total", kind="counter", help="h")
    assert fam.get() == 0
    fam.inc()
    fam.inc(4)
    assert fam.get() == 5
    fam.set(9, (("a", "b"),))
    assert fam.get((("a", "b"),)) == 9
    assert fam.get((("a", "c"),)) == 0


def test_several_labels_render_in_the_given_order() -> None:
    fam = Family(name="m_total", kind="counter", help="h")
    fam.inc(1, (("reason", "empty"), ("exporter", "10.0.0.1")))
    text = render_families([fam])
    assert 'm_total{reason="empty",exporter="10.0.0.1"} 1\n' in text


def test_label_values_escape_backslash_and_quote() -> None:
    fam = Family(name="m_total", kind="counter", help="h")
    odd = 'say "hi" \\ bye'
    fam.inc(1, (("reason", odd),))
    text = render_families([fam])
    assert r'm_total{reason="say \"hi\" \\ bye"} 1' in text
    assert parse_families(text)["m_total"].samples == {(("reason", odd),): 1}


def test_label_values_escape_newline() -> None:
    # Format 0.0.4: a line feed in a label value is written as \n; a raw one would cut the
    # sample line in two and the whole scrape would be rejected.
    fam = Family(name="m_total", kind="counter", help="h")
    fam.inc(1, (("reason", "two\nlines"),))
    text = render_families([fam])
    assert 'm_total{reason="two\\nlines"} 1\n' in text
    assert parse_families(text)["m_total"].samples == {(("reason", "two\nlines"),): 1}


def test_help_text_escapes_backslash_and_newline() -> None:
    fam = Family(name="h_total", kind="counter", help="a \\ b\nc")
    fam.inc()
    text = render_families([fam])
    assert "# HELP h_total a \\\\ b\\nc\n" in text
    assert parse_families(text)["h_total"].help == "a \\ b\nc"


def test_collectors_run_before_each_render() -> None:
    registry = Registry()
    gauge = registry.family("owned_elsewhere", "gauge", "read at scrape time")
    source = {"value": 1}
    registry.add_collector(lambda: gauge.set(source["value"]))
    assert "owned_elsewhere 1\n" in registry.render()
    source["value"] = 42
    assert "owned_elsewhere 42\n" in registry.render()


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
}


def test_relay_metrics_have_the_contract_names_and_types() -> None:
    parsed = parse_families(RelayMetrics().registry.render())
    for name, kind in SPEC_FAMILIES.items():
        assert name in parsed, f"{name} missing from /metrics"
        assert parsed[name].kind == kind, name
        assert parsed[name].help, f"{name} has no HELP text"
    for name, fam in parsed.items():
        assert name.startswith("flowrelay_"), name
        # Counters end in _total; nothing else does.
        assert (fam.kind == "counter") == name.endswith("_total"), name


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
    ):
        assert parsed[name].samples == {(): 0}, f"{name} has no sample line"


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
    assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
    parsed = parse_families(first.body)
    assert parsed["flowrelay_packets_received_total"].samples[(("version", "5"),)] == 3
    assert parsed["flowrelay_packets_malformed_total"].samples == {
        (("reason", "short_records"),): 1
    }
    assert parse_families(second.body)["flowrelay_packets_received_total"].samples == {
        (("version", "5"),): 5
    }


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
