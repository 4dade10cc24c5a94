"""UDP listeners: read datagrams as fast as the kernel hands them over, never wait on the
network, and hand rendered lines to the spool writer through a bounded channel."""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import trio

from relay.addresses import HostPort
from relay.errors import ConfigError
from relay.steering import steer

log = logging.getLogger(__name__)

# Datagrams handled per wake-up before yielding to the other tasks (forwarder, metrics).
BURST = 256
# Seconds a receiver waits after a quiet socket turns readable: at most this much latency,
# for a pipeline pass per burst instead of per datagram at moderate rates.
GATHER = 0.002
MAX_DATAGRAM = 65535


def open_udp_socket(
    address: HostPort, *, receive_buffer: int, reuse_port: bool, steer_workers: int = 0
) -> socket.socket:
    """A bound, non-blocking UDP socket; ConfigError with the fix when it cannot be had.
    ``steer_workers`` > 1 (with ``reuse_port``) sends each exporter address to one of that
    many sockets of the port's reuseport group (relay.steering); 0 or 1 leaves the kernel's
    4-tuple hash."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # [::] and 0.0.0.0 on the same port are two sockets, one per family.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux doubles it
        extra: dict[str, object] = {
            "address": str(address),
            "requested": receive_buffer,
            "granted": granted,
        }
        if granted < receive_buffer:
            log.warning(
                "the kernel granted a smaller UDP receive buffer than configured; bursts may "
                "be dropped",
                extra={
                    **extra,
                    "event": "receive_buffer_capped",
                    "fix": f"sysctl -w net.core.rmem_max={receive_buffer} "
                    "(see deploy/99-flowrelay.conf)",
                },
            )
        else:
            log.info("UDP receive buffer set", extra={**extra, "event": "receive_buffer"})
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"listen address {address} is already in use: stop the other program on that "
                "port or change listen.addresses / --listen",
                key="listen.addresses",
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"listen address {address}: permission denied (ports below 1024 need "
                "privileges; use 12999)",
                key="listen.addresses",
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise ConfigError(
                f"listen address {address} does not exist on this machine: fix "
                "listen.addresses / --listen",
                key="listen.addresses",
            ) from None
        raise ConfigError(
            f"listen address {address}: {exc.strerror}", key="listen.addresses"
        ) from None
    if reuse_port and steer_workers > 1:
        steer(sock, steer_workers)  # after bind: the group exists, and this attach is its own
    sock.setblocking(False)
    return sock


class UdpReceiver:
    def __init__(
        self,
        sock: socket.socket,
        *,
        process: Callable[[bytes, str, int], list[bytes]],
        send: trio.MemorySendChannel[list[bytes]],
    ) -> None:
        self._sock = sock
        self._process = process
        self._send = send
        self.address = sock.getsockname()
        self._inode = os.fstat(sock.fileno()).st_ino

    async def run(self, stop: trio.Event) -> None:
        """Receive until ``stop`` is set, then take what the kernel already holds, close the
        channel (the spool writer finishes when every receiver has), and return."""
        async with self._send:
            while not stop.is_set():
                lines, read = self._drain(BURST)
                if read:
                    # A checkpoint either way: the other tasks run between bursts. A send is
                    # never cancelled, so a batch that was read is always handed over.
                    if lines:
                        await self._send.send(lines)
                    else:  # nothing but denied or malformed datagrams
                        await trio.lowlevel.checkpoint()
                    continue
                # Only an empty socket costs a wait (and its cancel scope); wake at least
                # every 250 ms to notice ``stop``.
                with trio.move_on_after(0.25):
                    await trio.lowlevel.wait_readable(self._sock)
                # Then let a moment's datagrams gather in the kernel's buffer: one pass of
                # the pipeline (render, spool write, TLS write) per burst rather than per
                # datagram, which at moderate rates cost more than the records themselves.
                await trio.sleep(GATHER)
            # Whatever the kernel accepted before we stopped is "received": spool it.
            while True:
                lines, read = self._drain(BURST)
                if not read:
                    break
                if lines:
                    await self._send.send(lines)
        self._sock.close()

    def _drain(self, limit: int) -> tuple[list[bytes], int]:
        """Up to ``limit`` datagrams from the socket: their lines, and how many were read."""
        lines: list[bytes] = []
        recv, process = self._sock.recvfrom, self._process
        read = 0
        for _ in range(limit):
            try:
                data, addr = recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP errors surfacing on UDP; never fatal
                log.warning(
                    "UDP receive error", extra={"event": "udp_receive_error", "error": str(exc)}
                )
                break
            read += 1
            lines += process(data, addr[0], addr[1])
        return lines, read

    def kernel_drops(self) -> int:
        return kernel_drops(self._inode)


def kernel_drops(inode: int, proc: Path = Path("/proc/net")) -> int:
    """The kernel's drop counter of the UDP socket with this inode (/proc/net/udp{,6})."""
    wanted = str(inode)
    for name in ("udp", "udp6"):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 13 and fields[9] == wanted:
                return int(fields[-1])
    return 0
