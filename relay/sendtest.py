"""``relay send-test``: a synthetic exporter to check that a site's path to the relay is open."""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass

from relay.errors import UsageError
from relay.flows import LAYOUTS
from relay.testing.synth import SyntheticExporter


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    datagrams: int
    records: int
    seconds: float


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
    fast as possible), keeping each datagram's flow_sequence consecutive."""
    if version not in LAYOUTS:
        raise UsageError(f"relay send-test: --version must be one of 1, 5, 6, 7 (got {version})")
    per = records if records is not None else LAYOUTS[version].max_count
    if not 1 <= per <= 65535 or count < 0 or rate < 0:
        raise UsageError("relay send-test: --count, --records and --rate must be positive")
    exporter = SyntheticExporter(rng=random.Random(seed), boot_time=time.time() - 3600)
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror as exc:
        raise UsageError(f"relay send-test: cannot resolve {host}: {exc.strerror}") from None
    start = time.monotonic()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for i in range(count):
            if rate:
                # Pace against the start time, so the average rate holds however long a
                # send or a sleep takes.
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sock.sendto(exporter.datagram(version, per, time.time()), address)
    return SendResult(datagrams=count, records=count * per, seconds=time.monotonic() - start)
