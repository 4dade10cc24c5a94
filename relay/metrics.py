"""Prometheus text exposition (format 0.0.4) of the relay's counters, and its HTTP endpoint.

Counters the hot path bumps live here as plain dict entries; values other components own
(spool, forwarder, kernel drops) are read from their ``statistics()`` at scrape time through
collector callbacks, so there is one source of truth for each number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from relay.errors import ConfigError

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
# Text format 0.0.4 escapes backslash, double quote (label values only) and line feed.
BACKSLASH, QUOTE, NL = "\\", '"', "\n"
ESCAPED_QUOTE, ESCAPED_NL = '\\"', "\\n"
Sample = tuple[str, Labels, float]


@dataclass(slots=True)
class Family:
    name: str
    kind: str  # "counter" | "gauge"
    help: str
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, amount: float = 1, labels: Labels = ()) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def set(self, value: float, labels: Labels = ()) -> None:
        self.values[labels] = value

    def get(self, labels: Labels = ()) -> float:
        return self.values.get(labels, 0)


class Registry:
    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._collectors: list[Callable[[], None]] = []

    def family(self, name: str, kind: str, help_text: str, *, labelled: bool = False) -> Family:
        fam = Family(name=name, kind=kind, help=help_text)
        if not labelled:
            # Exported as 0 from the start: an absent series reads as "metric missing".
            fam.values[()] = 0
        self._families[name] = fam
        return fam

    def add_collector(self, collect: Callable[[], None]) -> None:
        """``collect`` refreshes families from their owners right before each scrape."""
        self._collectors.append(collect)

    def families(self) -> Iterable[Family]:
        for collect in self._collectors:
            collect()
        return self._families.values()

    def render(self) -> str:
        return render_families(self.families())


def render_families(families: Iterable[Family]) -> str:
    out = []
    for fam in families:
        help_text = fam.help.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {fam.name} {help_text}")
        out.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in sorted(fam.values.items()):
            out.append(f"{fam.name}{_labels(labels)} {_number(value)}")
    return "\n".join(out) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return (
        value.replace(BACKSLASH, BACKSLASH * 2)
        .replace(QUOTE, ESCAPED_QUOTE)
        .replace(NL, ESCAPED_NL)
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class RelayMetrics:
    """The relay's metric families, named as in the product contract."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.packets_received = r.family(
            "flowrelay_packets_received_total",
            "counter",
            "NetFlow datagrams received",
            labelled=True,
        )
        self.records_decoded = r.family(
            "flowrelay_records_decoded_total", "counter", "Flow records decoded"
        )
        self.packets_malformed = r.family(
            "flowrelay_packets_malformed_total",
            "counter",
            "Datagrams dropped as not decodable",
            labelled=True,
        )
        self.packets_warning = r.family(
            "flowrelay_packets_warning_total",
            "counter",
            "Datagrams decoded despite an oddity (count over Cisco's maximum, trailing bytes)",
            labelled=True,
        )
        self.packets_denied = r.family(
            "flowrelay_packets_denied_total", "counter", "Datagrams from outside the allow-list"
        )
        self.flows_lost = r.family(
            "flowrelay_flows_lost_total", "counter", "Flows missing from flow_sequence gaps"
        )
        self.sequence_streams = r.family(
            "flowrelay_sequence_streams",
            "gauge",
            "Exporter streams (exporter, version, engine) whose flow_sequence is tracked",
        )
        self.sequence_streams_evicted = r.family(
            "flowrelay_sequence_streams_evicted_total",
            "counter",
            "Sequence streams forgotten: cap (room for a new one) or idle (silent too long)",
            labelled=True,
        )
        # NetFlow v9 / IPFIX: sets, templates, held data (SPEC "Observability").
        self.sets_dropped = r.family(
            "flowrelay_sets_dropped_total",
            "counter",
            "v9/IPFIX sets dropped, by reason (malformed, no_template at hold expiry, "
            "withdrawal_ignored, refused by a bound)",
            labelled=True,
        )
        self.templates = r.family(
            "flowrelay_templates", "gauge", "v9/IPFIX templates and options templates known"
        )
        self.template_events = r.family(
            "flowrelay_template_events_total",
            "counter",
            "v9/IPFIX template events: learned, replaced, refreshed, restored, expired, refused",
            labelled=True,
        )
        self.templates_refused = r.family(
            "flowrelay_templates_refused_total",
            "counter",
            "v9/IPFIX templates not stored, by reason (no fields, or a bound)",
            labelled=True,
        )
        self.records_restored_template = r.family(
            "flowrelay_records_restored_template_total",
            "counter",
            "Records decoded with a template restored from the state file, not yet re-sent",
        )
        self.held_sets = r.family(
            "flowrelay_held_sets", "gauge", "v9/IPFIX data sets held for their template"
        )
        self.held_bytes = r.family(
            "flowrelay_held_bytes", "gauge", "Bytes of v9/IPFIX data sets held for their template"
        )
        self.options_records = r.family(
            "flowrelay_options_records_total",
            "counter",
            "v9/IPFIX options data records applied (sampling, system init time, interface names)",
        )
        self.udp_kernel_drops = r.family(
            "flowrelay_udp_kernel_drops_total",
            "counter",
            "Datagrams the kernel dropped on the relay's sockets (receive buffer full)",
        )
        self.lines_spooled = r.family(
            "flowrelay_lines_spooled_total", "counter", "Syslog lines written to the spool"
        )
        self.spool_bytes = r.family("flowrelay_spool_bytes", "gauge", "Bytes on disk in the spool")
        self.spool_pending_lines = r.family(
            "flowrelay_spool_pending_lines", "gauge", "Lines in the spool not yet taken"
        )
        self.spool_corrupt_frames = r.family(
            "flowrelay_spool_corrupt_frames_total",
            "counter",
            "Spool frames found torn or corrupt at start and cut off",
        )
        self.spool_segments_deleted_on_open = r.family(
            "flowrelay_spool_segments_deleted_on_open_total",
            "counter",
            "Spool segment files deleted when the spool was opened (each one logged)",
        )
        self.lines_forwarded = r.family(
            "flowrelay_lines_forwarded_total",
            "counter",
            "Lines the platform's TCP acknowledged",
        )
        self.lines_resent = r.family(
            "flowrelay_lines_resent_total",
            "counter",
            "Lines sent again after a broken connection (possible duplicates)",
        )
        self.forward_reconnects = r.family(
            "flowrelay_forward_reconnects_total", "counter", "Connections made after the first"
        )
        self.lines_dropped = r.family(
            "flowrelay_lines_dropped_total", "counter", "Lines dropped, by reason", labelled=True
        )
        self.endpoint_connected = r.family(
            "flowrelay_endpoint_connected", "gauge", "1 while connected to an endpoint"
        )


class Exposition(Protocol):
    def render(self) -> str: ...


async def serve_http(
    registry: Exposition,
    host: str,
    port: int,
    *,
    health: Callable[[], tuple[bool, str]],
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``GET /metrics`` and ``GET /healthz`` over plain HTTP/1.0; started() with the port."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(5):
                request = b""
                while b"\r\n\r\n" not in request and b"\n\n" not in request:
                    chunk = await stream.receive_some(4096)
                    if not chunk or len(request) > 16384:
                        return
                    request += chunk
                parts = request.split(b" ", 2)
                path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
                if parts[0] != b"GET":
                    await _respond(stream, 405, "text/plain", "method not allowed\n")
                elif path == b"/metrics":
                    body = registry.render()
                    await _respond(stream, 200, "text/plain; version=0.0.4; charset=utf-8", body)
                elif path == b"/healthz":
                    ok, text = health()
                    await _respond(stream, 200 if ok else 503, "text/plain", text + "\n")
                else:
                    await _respond(stream, 404, "text/plain", "not found: try /metrics\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()

    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ConfigError(
            f"metrics address {host}:{port} cannot be used ({exc.strerror}): change "
            'metrics.address / --metrics, or set it to "off"',
            key="metrics.address",
        ) from None
    bound = listeners[0].socket.getsockname()[1]
    log.info(
        "metrics and health endpoint listening",
        extra={"event": "metrics_listening", "address": f"{host}:{bound}"},
    )
    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def _respond(stream: trio.SocketStream, status: int, ctype: str, body: str) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}[status]
    data = body.encode()
    head = (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    await stream.send_all(head.encode() + data)
