"""One connection to an endpoint: TCP, TLS over memory BIOs, the acknowledgement count and a
clean close, behind the small :class:`Link` interface the forwarder loop uses (a test can
put a fake link in its place).

Connections close without a TCP reset: stop writing, wait for the outstanding bytes to be
acknowledged, send TLS close_notify, shut down our sending side, read whatever the peer still
sends (TLS 1.3 session tickets, its own close_notify) until it closes, then close. Closing a
socket with unread received data makes the kernel send RST, and a peer that receives RST
discards what it had not read yet.

TLS runs through :class:`ssl.SSLObject` over memory BIOs rather than a stream wrapper, so that
the forwarder (a) knows exactly how many ciphertext bytes it wrote, (b) cuts TLS records at
line boundaries (a connection cut mid-stream then never delivers half a line, because a TLS
receiver only accepts complete records), (c) hands the kernel one large buffer per batch, and
(d) decides itself how to close.

Linux only: the acknowledgement count needs the ``SIOCOUTQ`` ioctl.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import ssl
import sys
import termios
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

import trio

from relay.errors import EndpointError
from relay.forward.config import Endpoint, ForwarderConfig
from relay.forward.diagnosis import describe_tls_failure, os_cause, timed_out

_RECEIVE_BYTES: Final = 65536
# Bytes per send, counted as written when each is (see TlsLink._send_raw).
_SEND_PIECE: Final = 64 << 10
# SIOCOUTQ (linux/sockios.h) has the value of TIOCOUTQ: for a TCP socket, the bytes written
# and not yet acknowledged by the peer (sent or not).
_SIOCOUTQ: Final = getattr(termios, "TIOCOUTQ", 0x5411)
# tcp_info.tcpi_state after a reset (or a full close): TCP_CLOSE in linux/tcp_states.h.
_TCP_CLOSE: Final = 7


def liveness_options(stall_timeout: float) -> tuple[tuple[int, int, int], ...]:
    """Socket options that make the kernel give up on a dead peer within ``stall_timeout``.

    A silently blackholed peer sends no RST and no FIN. With data outstanding,
    TCP_USER_TIMEOUT ends the connection once nothing was acknowledged for that long (the
    ledger's stall check does the same; whichever comes first). An idle link has nothing
    outstanding, so keepalive probes it: the first probe after half the timeout, then every
    quarter; with TCP_USER_TIMEOUT set, Linux aborts once no answer came for the user timeout
    and at least one probe is unanswered, so an idle dead link ends within ``stall_timeout``.
    """
    idle = max(1, int(stall_timeout / 2))
    interval = max(1, int(stall_timeout / 4))
    return (
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1000, int(stall_timeout * 1000))),
    )


class Link(Protocol):
    """What the forwarder needs of a connection. ``written`` counts the raw bytes handed to
    the kernel; ``acknowledged()`` how many of them the peer's TCP has acknowledged."""

    endpoint: Endpoint
    index: int  # position in the configured priority order
    written: int
    eof: bool  # the peer closed its sending side
    dead: bool  # known dead (reset, timed out): a clean close would only wait

    def describe(self) -> str: ...
    def accepted(self) -> bool: ...
    async def wait_accepted(self) -> None: ...
    async def send(self, data: bytes, cuts: Sequence[int]) -> None: ...
    def acknowledged(self) -> int: ...
    async def receive_until_closed(self) -> None: ...
    async def close(self) -> None: ...
    def abort(self) -> None: ...


# Opens a link to endpoint number ``index``; raises EndpointError.
Connector = Callable[[Endpoint, int], Awaitable[Link]]


def tls_connector(config: ForwarderConfig) -> Connector:
    """The real thing: TCP (and TLS when configured) with the configured timeouts."""

    async def connect(endpoint: Endpoint, index: int) -> Link:
        return await TlsLink.open(
            endpoint,
            index,
            config.ssl_context,
            connect_timeout=config.connect_timeout,
            confirm_timeout=config.confirm_timeout,
            stall_timeout=config.stall_timeout,
            client_certificate=config.client_certificate,
        )

    return connect


def _unacknowledged(fd: int) -> int:
    raw = fcntl.ioctl(fd, _SIOCOUTQ, b"\0\0\0\0")
    return int.from_bytes(raw, sys.byteorder, signed=True)


class TlsLink:
    """A TCP connection to one endpoint, with TLS when configured; counts raw bytes written."""

    def __init__(self, endpoint: Endpoint, index: int, stream: trio.SocketStream) -> None:
        self.endpoint = endpoint
        self.index = index  # position in the configured priority order
        self._name = str(endpoint)
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        # Raw bytes handed to the kernel (ciphertext with TLS), handshake included.
        self.written = 0
        # A write was interrupted: its end state is unknown and the TLS byte stream may hold a
        # partial record, so no close_notify may follow.
        self.torn = False
        # The peer closed its sending side.
        self.eof = False
        # The connection was reset or the kernel gave up on it.
        self.dead = False
        self._client_certificate: bool | None = None
        # open() has returned: the handshake is over.
        self._established = False
        # Whether the server has accepted us (see _confirm), and until when to wait for an
        # alert saying otherwise.
        self._accepted = True
        self._verdict_due = 0.0
        self._ticket = trio.Event()  # set whenever the peer's records were processed

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        index: int,
        context: ssl.SSLContext | None,
        *,
        connect_timeout: float,
        confirm_timeout: float,
        stall_timeout: float,
        client_certificate: bool | None = None,
    ) -> TlsLink:
        """Connect, handshake and (TLS 1.3) wait for the server's verdict; EndpointError."""
        name = str(endpoint)
        try:
            with trio.fail_after(connect_timeout):
                stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        except trio.TooSlowError:
            raise EndpointError(
                name, f"cannot connect to {name}: no answer within {connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise EndpointError(name, f"cannot connect to {name}: {os_cause(exc)}") from exc
        link = cls(endpoint, index, stream)
        link._client_certificate = client_certificate
        try:
            for level, option, value in liveness_options(stall_timeout):
                stream.socket.setsockopt(level, option, value)
            if context is not None:
                link._tls = context.wrap_bio(
                    link._incoming, link._outgoing, server_hostname=endpoint.tls_name
                )
                began = trio.current_time()
                try:
                    with trio.fail_after(connect_timeout):
                        await link._handshake()
                except trio.TooSlowError:
                    raise EndpointError(
                        name,
                        f"TLS handshake with {name} failed: no answer within "
                        f"{connect_timeout:g} s — is the endpoint a TLS syslog port?",
                    ) from None
                # The verdict takes about one round trip plus the server's certificate check,
                # as the handshake did; wait that long (not less than 50 ms) before sending.
                took = trio.current_time() - began
                link._verdict_due = trio.current_time() + confirm_timeout
                with trio.move_on_after(min(confirm_timeout, max(0.05, 2 * took))):
                    await link._confirm()
        except BaseException:
            stream.socket.close()
            raise
        link._established = True
        return link

    def _describe(self, exc: ssl.SSLError) -> str:
        # Once the server accepted us (TLS 1.2: its Finished; TLS 1.3: its verdict), what
        # goes wrong is the connection's, not the handshake's.
        return describe_tls_failure(
            exc,
            self.endpoint,
            client_certificate=self._client_certificate,
            after_handshake=self._established and self.accepted(),
        )

    def describe(self) -> str:
        if self._tls is None:
            return "plain TCP"
        cipher = self._tls.cipher()
        return f"{self._tls.version()}, {cipher[0] if cipher else 'no cipher'}"

    async def _send_raw(self, data: bytes | bytearray | memoryview) -> None:
        # In pieces, counting each one written: the acknowledged count is ``written`` minus
        # what the kernel still holds (SIOCOUTQ), and the kernel holds the bytes of a write
        # in progress too, so counting a large write only at its end would show no progress
        # for as long as a slow but healthy peer takes to read it, and look like a stall.
        self.torn = True
        view = memoryview(data)
        try:
            for start in range(0, len(view), _SEND_PIECE):
                piece = view[start : start + _SEND_PIECE]
                await self._stream.send_all(piece)
                self.written += len(piece)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.dead = self.dead or timed_out(exc)
            raise EndpointError(
                self._name, f"sending to {self._name} failed: {os_cause(exc)}"
            ) from exc
        self.torn = False

    async def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            await self._send_raw(pending)

    async def _feed(self) -> None:
        """Receive once; the bytes go to the TLS layer (or nowhere for plain TCP)."""
        try:
            data = await self._stream.receive_some(_RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.dead = self.dead or timed_out(exc)
            raise EndpointError(
                self._name, f"connection to {self._name} broke: {os_cause(exc)}"
            ) from exc
        if not data:
            self.eof = True
            raise EndpointError(self._name, f"{self._name} closed the connection")
        if self._tls is not None:
            self._incoming.write(data)

    async def _handshake(self) -> None:
        tls = self._tls
        assert tls is not None
        while True:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                try:
                    await self._feed()
                except EndpointError as exc:
                    raise EndpointError(
                        self._name,
                        f"TLS handshake with {self._name} failed: the server closed the "
                        f"connection — check --cert, --key and the server's TLS settings",
                    ) from exc
                continue
            except ssl.SSLError as exc:
                # The alert OpenSSL queued tells the server why; it is a courtesy only.
                with trio.move_on_after(0.5), contextlib.suppress(*LINK_ERRORS):
                    await self._flush()
                raise EndpointError(self._name, self._describe(exc)) from exc
            await self._flush()
            return

    async def _confirm(self) -> None:
        """TLS 1.3: wait for a session ticket, the sign that the server accepted us.

        A server that rejects our client certificate says so only after our side of the
        handshake has finished; data sent before its alert arrives would be acknowledged by
        its TCP and thrown away by its TLS layer. The caller bounds the wait: servers that
        send no tickets cost that much per connection.
        """
        tls = self._tls
        if tls is None or tls.version() != "TLSv1.3":
            return
        self._accepted = False
        while not self.accepted():
            try:
                await self._feed()
            except EndpointError as exc:
                raise EndpointError(
                    self._name,
                    f"TLS handshake with {self._name} failed: the server closed the "
                    f"connection right after the handshake, so it requires a client "
                    f"certificate or rejected ours — check --cert and --key",
                ) from exc
            self.absorb()

    def accepted(self) -> bool:
        """Whether data acknowledged on this connection may be committed: plain TCP and
        TLS 1.2 (the server's Finished came after its check of our certificate) at once;
        TLS 1.3 once the server sent a session ticket, or stayed silent until the verdict
        was due."""
        if self._accepted:
            return True
        tls = self._tls
        session = tls.session if tls is not None else None
        if (session is not None and session.has_ticket) or trio.current_time() >= self._verdict_due:
            self._accepted = True
        return self._accepted

    async def wait_accepted(self) -> None:
        """Return once :meth:`accepted` is true (an alert ends the session meanwhile)."""
        with trio.move_on_at(self._verdict_due):
            while not self.accepted():
                await self._ticket.wait()
        self._accepted = True

    def absorb(self) -> None:
        """Process what the peer sent: tickets, alerts, close_notify. Application data (a
        syslog receiver sends none) is discarded."""
        tls = self._tls
        if tls is None:
            return
        if not self._accepted:
            # Perhaps a session ticket: wake wait_accepted() to look.
            self._ticket.set()
            self._ticket = trio.Event()
        while True:
            try:
                if not tls.read(_RECEIVE_BYTES):
                    return
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                self.eof = True
                raise EndpointError(self._name, f"{self._name} closed the TLS session") from None
            except ssl.SSLError as exc:
                raise EndpointError(self._name, self._describe(exc)) from exc

    async def receive_until_closed(self) -> None:
        """Read until the peer closes or the connection breaks; always ends in EndpointError."""
        while True:
            await self._feed()
            self.absorb()

    async def send(self, data: bytes, cuts: Sequence[int]) -> None:
        """Write ``data``; with TLS, one record per piece ending at each of ``cuts``."""
        tls = self._tls
        if tls is None:
            await self._send_raw(data)
            return
        view = memoryview(data)
        write = tls.write
        start = 0
        try:
            for end in cuts:
                write(view[start:end])
                start = end
        except ssl.SSLError as exc:
            raise EndpointError(self._name, self._describe(exc)) from exc
        await self._send_raw(self._outgoing.read())

    def acknowledged(self) -> int:
        """Raw bytes written that the peer's TCP has acknowledged (during a write it may
        read up to one send piece low: the kernel holds part of a piece not yet counted).

        Raises once the connection has been reset: a peer that resets discards what it had
        acknowledged and not yet read, so nothing acknowledged before the reset but not yet
        committed is committed after it (it is sent again instead).
        """
        try:
            state = self._stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
            if state[0] == _TCP_CLOSE:
                # Not marked dead: a peer that resets is there, and worth reconnecting to.
                raise EndpointError(self._name, f"connection to {self._name} was reset")
            return self.written - _unacknowledged(self._fd)
        except OSError as exc:
            raise EndpointError(self._name, f"cannot query the socket: {os_cause(exc)}") from exc

    async def close(self) -> None:
        """Close without provoking RST: close_notify, FIN, read until the peer's EOF, close.

        The caller bounds the time; the socket is closed however this ends.
        """
        try:
            with contextlib.suppress(*LINK_ERRORS):
                if self._tls is not None and not self.torn and not self.eof:
                    try:
                        self._tls.unwrap()
                    except ssl.SSLWantReadError:
                        pass  # close_notify is queued; we do not wait for the peer's.
                    except ssl.SSLError:
                        pass
                    await self._flush()
                # Even after a torn write: FIN, not RST, so the peer keeps what it has.
                self._stream.socket.shutdown(socket.SHUT_WR)
                while not self.eof:
                    # Discarding what arrives keeps our receive queue empty, so the final
                    # close sends FIN rather than RST.
                    data = await self._stream.receive_some(_RECEIVE_BYTES)
                    if not data:
                        self.eof = True
        finally:
            self._stream.socket.close()

    def abort(self) -> None:
        self._stream.socket.close()


# What a dying connection raises while it is being closed; swallowed there.
LINK_ERRORS: Final = (EndpointError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)
