"""A TLS (or plain TCP) syslog receiver: the platform's stand-in for the demo, tests, benchmarks.

:class:`SyslogSink` is a trio service around :class:`relay.framing.FrameDecoder`. Besides
receiving, it can misbehave the way a real platform does, on demand: read slowly
(``read_delay``), reset every connection (``reset_connections``), stop abruptly (cancel
``run``) or gracefully (``stop``), and come back on the same port (a new sink; the listening
socket uses SO_REUSEADDR).

Counting is exact and happens synchronously right after each read returns, so a line that
was read is counted exactly once whatever cancels the sink afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket as stdlib_socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

import trio

from relay.addresses import format_hostport
from relay.framing import FrameDecoder, FrameError

logger = logging.getLogger(__name__)

_HANDSHAKE_TIMEOUT = 10.0
_LISTEN_BACKLOG = 128
# Connections that a handler closes politely get this long for close_notify.
_CLOSE_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkStats:
    """A snapshot of a :class:`SyslogSink`'s counters."""

    lines: int  # messages received, each counted once
    bytes: int  # bytes of those messages, framing excluded
    wire_bytes: int  # plaintext bytes read from connections, framing included
    connections_accepted: int  # TCP connections accepted (before any TLS handshake)
    connections_open: int
    connections_reset: int  # ended by the peer's RST (ECONNRESET): its unread data was lost
    connections_unclean: int  # ended without TLS close_notify or with another transport error
    connections_aborted: int  # aborted by us: reset_connections(), or stop()'s grace ran out
    handshake_failures: int  # TLS handshakes that failed or timed out
    framing_errors: int  # connections closed because their bytes were not RFC 6587 framing
    last_handshake_error: str | None


@dataclass(slots=True, eq=False)  # identity: connections live in a set
class _Connection:
    socket: trio.socket.SocketType
    peer: str
    scope: trio.CancelScope  # cancelled to abort the connection
    read_scope: trio.CancelScope  # cancelled to make the handler half-close (graceful stop)
    aborted: bool = False


class SyslogSink:
    """A syslog-over-TLS (RFC 5425) or plain TCP receiver on one address.

    ``ssl_context=None`` means plain TCP. ``lines`` keeps the first ``keep_lines`` messages
    (all of them when None); the counters in :meth:`statistics` are always exact. ``on_line``
    is called synchronously with each message. ``read_delay`` (seconds between reads) and
    ``read_size`` (bytes per read) may be changed while it runs, to make a slow endpoint.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_lines: int | None = None,
        on_line: Callable[[bytes], None] | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._host = host
        self._port = port
        self._keep_lines = keep_lines
        self._on_line = on_line
        self.lines: list[bytes] = []
        self.read_delay: float = 0.0
        self.read_size: int = 65536
        self.port: int | None = None  # the bound port, once run() has started
        self._connections: set[_Connection] = set()
        self._progress = trio.lowlevel.ParkingLot()
        self._accept_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._running = False
        self._grace = 0.0
        self._grace_started = False
        self._lines = 0
        self._bytes = 0
        self._wire_bytes = 0
        self._accepted = 0
        self._reset = 0
        self._unclean = 0
        self._aborted = 0
        self._handshake_failures = 0
        self._framing_errors = 0
        self._last_handshake_error: str | None = None

    def statistics(self) -> SinkStats:
        return SinkStats(
            lines=self._lines,
            bytes=self._bytes,
            wire_bytes=self._wire_bytes,
            connections_accepted=self._accepted,
            connections_open=len(self._connections),
            connections_reset=self._reset,
            connections_unclean=self._unclean,
            connections_aborted=self._aborted,
            handshake_failures=self._handshake_failures,
            framing_errors=self._framing_errors,
            last_handshake_error=self._last_handshake_error,
        )

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the bound port through ``task_status``, serve until cancelled or stopped.

        Cancelling is an abrupt stop, like a crashed platform: connections are closed at once,
        and what sits unread in the kernel's buffers is lost (the kernel answers it with RST).
        """
        if self._running or self._stopped.is_set():
            raise RuntimeError("a SyslogSink runs once; make a new one to restart")
        self._running = True
        sock = await self._bind()
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as connections:
                self.port = sock.getsockname()[1]
                logger.debug(
                    "syslog sink listening on %s port %d (%s)",
                    self._host,
                    self.port,
                    "TLS" if self._ssl_context else "plain TCP",
                    extra={"event": "sink_listening"},
                )
                task_status.started(self.port)
                with trio.CancelScope() as self._accept_scope:
                    while True:
                        try:
                            stream = await listener.accept()
                        except OSError as exc:
                            # Out of file descriptors and the like: the listener is fine, wait.
                            logger.warning("syslog sink cannot accept: %s", exc)
                            await trio.sleep(0.1)
                            continue
                        connections.start_soon(self._serve, stream)
                # Only stop() gets here: no more connections; the open ones finish their reads.
                await listener.aclose()
                connections.cancel_scope.deadline = trio.current_time() + self._grace
                self._grace_started = True
                for connection in list(self._connections):
                    connection.read_scope.cancel()
        finally:
            sock.close()
            self._running = False
            self._stopped.set()

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop gracefully and return once :meth:`run` has returned.

        Stops accepting, half-closes every connection (TCP FIN, so the peer sees the end of
        the stream) and keeps reading each one until the peer closes it, at most ``grace``
        seconds; connections still open then are aborted. A peer that closes when it sees the
        end of the stream loses nothing, not even what was in flight.
        """
        if not self._running or self._accept_scope is None:
            return
        self._grace = grace
        self._accept_scope.cancel()
        await self._stopped.wait()

    def reset_connections(self) -> None:
        """Abort every open connection with a TCP RST now, like a broken platform."""
        for connection in list(self._connections):
            self._abort(connection)

    # A timeout argument (ASYNC109) keeps the many test call sites to one readable line.
    async def wait_lines(self, n: int, *, timeout: float) -> None:
        """Wait until at least ``n`` lines have arrived; TimeoutError says how many did."""
        with trio.move_on_after(timeout):
            while self._lines < n:
                await self._progress.park()
            return
        raise TimeoutError(f"only {self._lines} of {n} lines arrived within {timeout} s")

    async def wait_until(
        self,
        predicate: Callable[[SinkStats], bool],
        *,
        timeout: float,
        what: str = "condition",
    ) -> SinkStats:
        """Wait until ``predicate(statistics())`` holds (checked after every change)."""
        with trio.move_on_after(timeout):
            while True:
                stats = self.statistics()
                if predicate(stats):
                    return stats
                await self._progress.park()
        raise TimeoutError(f"{what} not reached within {timeout} s: {self.statistics()}")

    # ----------------------------------------------------------------------------------------

    async def _bind(self) -> trio.socket.SocketType:
        try:
            family = (
                stdlib_socket.AF_INET6
                if ipaddress.ip_address(self._host).version == 6
                else stdlib_socket.AF_INET
            )
            address: tuple[object, ...] = (self._host, self._port)
        except ValueError:
            infos = await trio.socket.getaddrinfo(
                self._host, self._port, type=stdlib_socket.SOCK_STREAM
            )
            family, *_, address = infos[0]
        sock = trio.socket.socket(family, stdlib_socket.SOCK_STREAM)
        try:
            # A restarted sink must get its port back while old connections sit in TIME_WAIT.
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
            if family == stdlib_socket.AF_INET6:
                sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen(_LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _serve(self, stream: trio.SocketStream) -> None:
        self._accepted += 1
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = format_hostport(host, port)
        except OSError:
            peer = "?"
        connection = _Connection(
            socket=stream.socket, peer=peer, scope=trio.CancelScope(), read_scope=trio.CancelScope()
        )
        self._connections.add(connection)
        self._changed()
        reader: trio.abc.Stream = stream
        # "clean", "broken", or None while reading (stays None if cancelled).
        outcome: str | None = None
        try:
            with connection.scope:
                if self._ssl_context is not None:
                    tls = trio.SSLStream(stream, self._ssl_context, server_side=True)
                    reader = tls
                    if not await self._handshake(tls, peer):
                        outcome = "broken"
                        return
                outcome = await self._receive(reader, stream, connection)
        finally:
            self._connections.discard(connection)
            if outcome is None and self._grace_started and not connection.aborted:
                # stop()'s grace ran out with the peer still sending.
                self._abort(connection)
            if connection.aborted:
                connection.socket.close()
            elif outcome == "clean":
                with trio.move_on_after(_CLOSE_TIMEOUT) as cleanup:
                    cleanup.shield = True
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await reader.aclose()
                stream.socket.close()
            else:
                await trio.aclose_forcefully(reader)
            self._changed()

    async def _handshake(self, tls: trio.SSLStream[trio.SocketStream], peer: str) -> bool:
        reason: str | None = None
        with trio.move_on_after(_HANDSHAKE_TIMEOUT):
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                cause = exc.__cause__
                reason = getattr(cause, "reason", None) or str(cause or exc) or "connection closed"
            except trio.ClosedResourceError:
                return False  # reset_connections() closed the socket under us
            else:
                return True
        if reason is None:
            reason = f"no handshake within {_HANDSHAKE_TIMEOUT:g} s"
        self._handshake_failures += 1
        self._last_handshake_error = reason
        logger.info(
            "syslog sink: TLS handshake with %s failed: %s",
            peer,
            reason,
            extra={"event": "sink_handshake_failed"},
        )
        return False

    async def _receive(
        self, reader: trio.abc.Stream, transport: trio.SocketStream, connection: _Connection
    ) -> str:
        """Read until the peer closes: "clean" if it closed properly, else "broken"."""
        decoder = FrameDecoder()
        try:
            with connection.read_scope:
                if await self._pump(reader, decoder):
                    return "clean"
            # stop(): half-close so the peer sees the end of the stream, then read the rest.
            # The FIN goes under TLS, without close_notify: trio's SSLStream cannot half-close.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await transport.send_eof()
            await self._pump(reader, decoder)
        except trio.BrokenResourceError as exc:
            if isinstance(exc.__cause__, ConnectionResetError):
                self._reset += 1
            else:
                self._unclean += 1
            return "broken"
        except trio.ClosedResourceError:
            return "broken"  # reset_connections() closed the socket under us
        except FrameError as exc:
            self._framing_errors += 1
            logger.info(
                "syslog sink: closing connection from %s: %s",
                connection.peer,
                exc,
                extra={"event": "sink_framing_error"},
            )
            return "broken"
        return "clean"

    async def _pump(self, reader: trio.abc.ReceiveStream, decoder: FrameDecoder) -> bool:
        while True:
            data = await reader.receive_some(self.read_size)
            if not data:
                return True
            self._wire_bytes += len(data)
            try:
                lines = decoder.feed(data)
            except FrameError as exc:
                self._take(exc.lines)
                raise
            if lines:
                self._take(lines)
            if self.read_delay > 0:
                await trio.sleep(self.read_delay)

    def _take(self, lines: list[bytes]) -> None:
        self._lines += len(lines)
        self._bytes += sum(map(len, lines))
        if self._keep_lines is None:
            self.lines.extend(lines)
        else:
            room = self._keep_lines - len(self.lines)
            if room > 0:
                self.lines.extend(lines[:room])
        if self._on_line is not None:
            for line in lines:
                self._on_line(line)
        self._changed()

    def _changed(self) -> None:
        if self._progress:
            self._progress.unpark_all()

    def _abort(self, connection: _Connection) -> None:
        connection.aborted = True
        self._aborted += 1
        sock = connection.socket
        if sock.fileno() != -1:
            try:
                # Linger 0: close() sends RST instead of FIN and drops anything unsent or unread.
                sock.setsockopt(
                    stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            except OSError as exc:
                if exc.errno not in (errno.EBADF, errno.ENOTCONN):
                    raise
            sock.close()
        connection.scope.cancel()
