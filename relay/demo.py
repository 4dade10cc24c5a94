"""``relay demo``: the whole product on loopback, self-contained, in under a minute.

Throwaway certificates, a local mutual-TLS syslog receiver standing in for the platform, the
relay itself (the same ``run_relay`` as ``relay run``), and a synthetic exporter sending
NetFlow v1, v5, v6, v7, v9 and IPFIX (templates and options first, then data) plus one
malformed datagram. Shows lines as they arrive and the
counters at the end; exits 0 by itself, and cleanly on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import tempfile
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import TextIO

import trio

from relay.certs import issue_certificate, make_test_ca, server_context
from relay.config import Overrides, load
from relay.service import RelayHandle, run_relay
from relay.testing.sink import SyslogSink
from relay.testing.synth import SyntheticExporter

VERSIONS = (1, 5, 6, 7, 9, 10)
DATAGRAMS_PER_VERSION = 6
RECORDS_PER_DATAGRAM = 10
SHOW_PER_VERSION = 2


class _Display:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown: Counter[str] = Counter()
        self.received: Counter[str] = Counter()

    def on_line(self, line: bytes) -> None:
        text = line.decode("ascii", "replace")
        version = text.split('"version":', 1)[1].split(",", 1)[0] if '"version":' in text else "?"
        self.received[version] += 1
        # v9 and IPFIX carry IPv4 and IPv6 flows: show one of each.
        address = text.split('"src_addr":"', 1)[-1].split('"', 1)[0]
        key = f"{version}/{':' in address}" if version in ("9", "10") else version
        limit = 1 if version in ("9", "10") else SHOW_PER_VERSION
        if self.shown[key] < limit:
            self.shown[key] += 1
            label = "IPFIX" if version == "10" else f"v{version}"
            self.out.write(f"  {label:>5} | {text}\n")
            self.out.flush()


async def run_demo(out: TextIO, *, patience: float = 45.0) -> bool:
    """Returns True when every record sent arrived at the receiver."""
    with tempfile.TemporaryDirectory(prefix="flowrelay-demo-") as tmp:
        base = Path(tmp)
        ca = make_test_ca(base / "ca", name="flowrelay demo CA")
        server = issue_certificate(ca, base / "server", "server", client=False)
        client = issue_certificate(ca, base / "client", "client", server=False)
        display = _Display(out)
        sink = SyslogSink(
            ssl_context=server_context(cert=server.cert, key=server.key, client_ca=ca.cert),
            keep_lines=0,
            on_line=display.on_line,
        )
        expected = len(VERSIONS) * DATAGRAMS_PER_VERSION * RECORDS_PER_DATAGRAM
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_sigint, nursery.cancel_scope, out)
            sink_port = await nursery.start(sink.run)
            config = load(
                {"listen": {"receive_buffer": "1MiB"}, "log": {"level": "warning"}},
                Overrides(
                    listen=["127.0.0.1:0"],
                    endpoints=[f"127.0.0.1:{sink_port}"],
                    ca=str(ca.cert),
                    cert=str(client.cert),
                    key=str(client.key),
                    server_name="localhost",
                    spool=str(base / "spool"),
                    metrics="127.0.0.1:0",
                ),
            )
            out.write(
                f"flowrelay demo: receiver (mutual TLS) on 127.0.0.1:{sink_port}, "
                f"spool in {base / 'spool'}\n"
            )
            async with trio.open_nursery() as relay_nursery:
                handle: RelayHandle = await relay_nursery.start(
                    partial(run_relay, config, handle_signals=False)
                )
                port = handle.listen[0][1]
                out.write(
                    f"relay listening on 127.0.0.1:{port}, metrics on "
                    f"http://127.0.0.1:{handle.metrics_port}/metrics\n"
                    f"exporter: sending {DATAGRAMS_PER_VERSION} datagrams x "
                    f"{RECORDS_PER_DATAGRAM} flows of NetFlow v1, v5, v6, v7, v9 and IPFIX "
                    "(v9 and IPFIX: templates, options and data) and 1 malformed datagram\n\n"
                    "lines arriving at the receiver (first of each version):\n"
                )
                out.flush()
                await _export(port)
                with contextlib.suppress(TimeoutError):
                    await sink.wait_until(lambda st: st.lines >= expected, timeout=patience)
                handle.stop.set()  # drain: the relay returns once its spool is delivered
            _summary(out, handle, display, expected)
            nursery.cancel_scope.cancel()
        return sum(display.received.values()) >= expected


async def _export(port: int) -> None:
    exporter = SyntheticExporter(rng=random.Random(2026), boot_time=time.time() - 86400)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(DATAGRAMS_PER_VERSION):
            for version in VERSIONS:
                # v9 and IPFIX: the first export also carries the templates and options.
                export = exporter.export(version, RECORDS_PER_DATAGRAM, time.time())
                for datagram in export.datagrams:
                    sock.sendto(datagram, ("127.0.0.1", port))
            await trio.sleep(0.05)
        sock.sendto(b"\x00\x0bno such NetFlow version", ("127.0.0.1", port))


def _summary(out: TextIO, handle: RelayHandle, display: _Display, expected: int) -> None:
    m = handle.metrics
    m.registry.families()  # refresh the collected values
    received = sum(display.received.values())
    per_version = ", ".join(f"{_name(v)}: {display.received[str(v)]}" for v in VERSIONS)
    malformed = int(sum(m.packets_malformed.values.values()))
    out.write(
        f"\nsummary: {received} of {expected} flow records arrived over TLS ({per_version})\n"
        f"  datagrams received {int(sum(m.packets_received.values.values()))}, "
        f"malformed {malformed}, denied {int(m.packets_denied.get())}\n"
        f"  records decoded {int(m.records_decoded.get())}, "
        f"lines spooled {int(m.lines_spooled.get())}, "
        f"lines forwarded (acknowledged) {int(m.lines_forwarded.get())}\n"
        f"  v9/IPFIX: templates known {int(m.templates.get())}, options records applied "
        f"{int(m.options_records.get())}, sets dropped {int(sum(m.sets_dropped.values.values()))}\n"
    )
    out.flush()


def _name(version: int) -> str:
    return "IPFIX" if version == 10 else f"v{version}"


async def _cancel_on_sigint(scope: trio.CancelScope, out: TextIO) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            out.write("\ninterrupted: stopping the demo\n")
            scope.cancel()
            return
