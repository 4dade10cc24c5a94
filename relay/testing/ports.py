"""A free port on loopback, for tests and benchmarks that must name one in advance.

Prefer binding port 0 and asking what was bound; this is for programs (rsyslog, openssl
s_server) that only take a port number. The port is free when probed; the caller binds it
soon after.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A TCP (or, with ``kind=SOCK_DGRAM``, UDP) port nothing is bound to right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
