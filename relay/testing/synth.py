"""A synthetic NetFlow exporter: builds v1/v5/v6/v7 datagrams with plausible flows
(``relay send-test``, ``relay demo`` and the benchmarks). Pure: the caller passes the clock
and the random generator; packing follows each version's declared layout."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field

from relay.flows import LAYOUTS
from relay.flows.legacy import HEADER_16, HEADER_24

_PROTOCOLS = (6, 6, 6, 17, 17, 1)
_SERVICES = (443, 80, 53, 22, 123, 993, 3389, 8080)


@dataclass(slots=True)
class SyntheticExporter:
    """Keeps per-version flow sequences so the relay sees an unbroken stream."""

    rng: random.Random
    boot_time: float
    engine_id: int = 1
    _sequence: dict[int, int] = field(default_factory=dict)

    def datagram(self, version: int, count: int, now: float) -> bytes:
        layout = LAYOUTS[version]
        uptime = int((now - self.boot_time) * 1000) & 0xFFFFFFFF
        secs, frac = divmod(now, 1)
        nsecs = int(frac * 1e9)
        sequence = self._sequence.get(version, 0)
        self._sequence[version] = (sequence + count) & 0xFFFFFFFF
        if layout.header is HEADER_16:
            header = HEADER_16.pack(version, count, uptime, int(secs), nsecs)
        else:
            engine = (0, self.engine_id, 0) if layout.has_engine else (0, 0, 0)
            header = HEADER_24.pack(version, count, uptime, int(secs), nsecs, sequence, *engine)
        records = b"".join(
            layout.record.pack(*self._values(layout.wire_fields, uptime)) for _ in range(count)
        )
        return header + records

    def _values(self, names: tuple[str, ...], uptime: int) -> list[int | bytes]:
        rng = self.rng
        protocol = rng.choice(_PROTOCOLS)
        last = max(0, uptime - rng.randrange(0, 5000))
        packets = rng.randrange(1, 2000)
        values: dict[str, int | bytes] = {
            "src_addr": socket.inet_aton(
                f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            ),
            "dst_addr": socket.inet_aton(f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}"),
            "next_hop": socket.inet_aton("10.0.0.1"),
            "input_if": rng.randrange(1, 48),
            "output_if": rng.randrange(1, 48),
            "packets": packets,
            "bytes": packets * rng.randrange(40, 1500),
            "first": max(0, last - rng.randrange(0, 60000)),
            "last": last,
            "src_port": rng.randrange(1024, 65536) if protocol != 1 else 0,
            "dst_port": rng.choice(_SERVICES) if protocol != 1 else 2048,
            "tcp_flags": rng.choice((0x02, 0x12, 0x18, 0x19, 0x1B)) if protocol == 6 else 0,
            "protocol": protocol,
            "tos": rng.choice((0, 0, 0x10, 0xB8)),
            "src_as": rng.choice((0, 64512, 65001)),
            "dst_as": rng.choice((0, 15169, 13335)),
            "src_mask": rng.choice((8, 16, 24)),
            "dst_mask": rng.choice((16, 24, 32)),
            "in_encaps": rng.randrange(0, 20),
            "out_encaps": rng.randrange(0, 20),
            "peer_next_hop": socket.inet_aton("10.255.0.1"),
            "flags1": rng.randrange(0, 4),
            "flags2": rng.randrange(0, 4),
            "router_sc": socket.inet_aton("10.0.0.254"),
        }
        return [values[n] for n in names]


__all__ = ["SyntheticExporter"]
