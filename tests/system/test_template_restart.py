"""Templates survive a restart of a real ``relay run``: data that arrives after the restart,
before the exporter sends its templates again, decodes at once (SPEC "Templates").

Cisco IOS and the ASA re-send templates every 30 minutes by default; a collector that
forgets them on restart drops that long of data (elastic/beats#17615). Both a clean stop
(SIGTERM: saved while draining) and kill -9 (saved within seconds of learning) are covered.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import time
from pathlib import Path

import pytest
import trio
from support import ipfix_builder as b
from support.relayproc import RelayProcess, tls_args
from support.syslog import parse_line

from relay.certs import TlsFiles, server_context
from relay.flows.template import FieldSpec, Template
from relay.flows.template_store import FILE_NAME, load_templates
from relay.testing.sink import SyslogSink

LOOPBACK = "127.0.0.1"
FLOW = Template(
    template_id=260,
    fields=(
        FieldSpec(element=8, length=4),
        FieldSpec(element=12, length=4),
        FieldSpec(element=2, length=4),
        FieldSpec(element=1, length=4),
        FieldSpec(element=152, length=8),
        FieldSpec(element=153, length=8),
    ),
)


def records(n: int, start_ms: int) -> bytes:
    out = []
    for i in range(n):
        values = [bytes([10, 0, 0, 1 + i % 200]), bytes([192, 0, 2, 9]), struct.pack("!I", i + 1),
                  struct.pack("!I", 100 * (i + 1)), struct.pack("!Q", start_ms),
                  struct.pack("!Q", start_ms + 500)]  # fmt: skip
        out.append(b.record(FLOW, values))
    return b.data_set(FLOW.template_id, out)


def send(port: int, datagram: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram, (LOOPBACK, port))


async def wait_for(condition: object, what: str, timeout: float) -> None:
    deadline = trio.current_time() + timeout
    while not condition():  # type: ignore[operator]
        if trio.current_time() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        await trio.sleep(0.05)


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
async def test_data_after_a_restart_decodes_with_the_templates_learned_before_it(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles, stop: str
) -> None:
    sink = SyslogSink(
        ssl_context=server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    )
    spool = tmp_path / "spool"
    now_ms = int(time.time()) * 1000
    async with trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.run)
        args = [
            "--listen", f"{LOOPBACK}:0", "--endpoint", f"{LOOPBACK}:{sink_port}",
            "--spool", str(spool), "--metrics", f"{LOOPBACK}:0", "--allow", f"{LOOPBACK}/32",
            *tls_args(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key),
        ]  # fmt: skip
        with RelayProcess(args, tmp_path / "first.log") as relay:
            await relay.start_async()
            template = b.template_set([FLOW], ipfix=True)
            send(
                relay.udp_port,
                b.ipfix_message([template, records(3, now_ms)], sequence=0, domain=7),
            )
            await sink.wait_lines(3, timeout=20)
            if stop == "kill":
                # Saved within seconds of being learned, so a crash keeps it too.
                path = spool / FILE_NAME
                await wait_for(lambda: load_templates(path).templates, "templates file", 15)
                relay.signal(signal.SIGKILL)
                await relay.wait_async(timeout=10)
            else:
                relay.signal(signal.SIGTERM)
                assert await relay.wait_async(timeout=30) == 0, relay.log_tail()
        with RelayProcess(args, tmp_path / "second.log") as relay:
            await relay.start_async()
            # Data only: the exporter has not re-sent its template since the restart.
            send(relay.udp_port, b.ipfix_message([records(5, now_ms)], sequence=3, domain=7))
            await sink.wait_lines(8, timeout=20)
            scraped = await relay.scrape_async()
            relay.signal(signal.SIGTERM)
            assert await relay.wait_async(timeout=30) == 0, relay.log_tail()
        nursery.cancel_scope.cancel()

    bodies = [json.loads(parse_line(line.decode()).body) for line in sink.lines]
    after = [body for body in bodies if body["flow_sequence"] == 3]
    assert [body["packets"] for body in after] == [1, 2, 3, 4, 5]
    assert all(body["observation_domain_id"] == 7 for body in after)
    assert scraped.total("flowrelay_records_restored_template_total") == 5
    assert scraped.value("flowrelay_template_events_total", event="restored") == 1
    assert scraped.total("flowrelay_held_sets") == 0
