"""``relay send-test``: a synthetic exporter to check that a site's path to the relay is open."""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass

from relay.errors import UsageError
from relay.flows import LAYOUTS
from relay.testing.synth import MAX_RECORDS, MTU_RECORDS, TEMPLATE_VERSIONS, SyntheticExporter

VERSIONS = (*LAYOUTS, *TEMPLATE_VERSIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    datagrams: int  # data datagrams (``count``)
    records: int  # flow records in them
    seconds: float
    template_datagrams: int = 0  # v9/IPFIX: sent before the data, and every 20 after


def send_test(
    host: str,
    port: int,
    *,
    version: int = 5,
    count: int = 10,
    records: int | None = None,
    rate: float = 100.0,
    seed: int | None = None,
) -> SendResult:
    """Send ``count`` datagrams of ``records`` flows each at ``rate`` datagrams/s (0 = as
    fast as possible), keeping the flow sequence unbroken. v9 and IPFIX send a datagram of
    templates and options first (and again every 20 data datagrams, as exporters do); it
    goes straight before the data datagram it serves, outside the pacing."""
    if version not in VERSIONS:
        choices = ", ".join(map(str, VERSIONS))
        raise UsageError(f"relay send-test: --version must be one of {choices} (got {version})")
    if version in TEMPLATE_VERSIONS:
        default, most = MTU_RECORDS, MAX_RECORDS
    else:
        # Past the maximum is allowed: a way to see the relay's over_max_count warning.
        default, most = LAYOUTS[version].max_count, 65535
    per = records if records is not None else default
    if not 1 <= per <= most:
        raise UsageError(
            f"relay send-test: --records must be between 1 and {most} for v{version} (got {per})"
        )
    if count < 0 or rate < 0:
        raise UsageError("relay send-test: --count and --rate must not be negative")
    exporter = SyntheticExporter(rng=random.Random(seed), boot_time=time.time() - 3600)
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror as exc:
        raise UsageError(f"relay send-test: cannot resolve {host}: {exc.strerror}") from None
    start = time.monotonic()
    templates = 0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for i in range(count):
            if rate:
                # Pace against the start time, so the average rate holds however long a
                # send or a sleep takes.
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            export = exporter.export(version, per, time.time())
            templates += export.template_datagrams
            for datagram in export.datagrams:
                sock.sendto(datagram, address)
    return SendResult(
        datagrams=count,
        records=count * per,
        seconds=time.monotonic() - start,
        template_datagrams=templates,
    )
