"""The forwarder loop: connect, send, commit what was acknowledged, fail over, come back.

One :class:`_Session` per connection holds what lives as long as that connection (its
link, its ledger, whether it proved good); the :class:`Forwarder` holds what lives as long
as the process (the retry state, the counters, the spool).
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final

import trio

from relay.backoff import (
    RetryState,
    after_dead_link,
    after_failure,
    after_success,
    back_to_primary,
    reconnect_delay,
)
from relay.errors import EndpointError
from relay.forward.config import Endpoint, ForwarderConfig
from relay.forward.ledger import Ledger
from relay.forward.link import LINK_ERRORS, Connector, Link, tls_connector
from relay.framing import frame_lines, record_cuts
from relay.logs import RateLimitedLog
from relay.spool import Position, Spool

# Operators filter the forwarder's lines by this name; it stays that of the package.
logger = logging.getLogger("relay.forward")

# Batches sent on a TLS 1.3 connection before the server's verdict on our certificate.
_BATCHES_BEFORE_VERDICT: Final = 4


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwarderStats:
    """A snapshot for metrics and the periodic summary."""

    # Lines the platform's TCP acknowledged and the spool cursor moved past.
    lines_forwarded: int
    bytes_acked: int
    # Lines written to a socket, resends included.
    lines_sent: int
    # Connection attempts after the first one, failed or not.
    reconnects: int
    connection_failures: int
    # Lines sent but not acknowledged when a connection ended; they are sent again and may
    # reach the platform twice.
    duplicates_resent: int
    connected: bool
    endpoint: str | None
    last_error: str | None


# --------------------------------------------------------------------------------------------
# The service


class _Session:
    """One connection's lifetime: its link, its ledger, and what happened on it."""

    __slots__ = (
        "dead",
        "good",
        "idle_scope",
        "ledger",
        "link",
        "outstanding",
        "started",
        "switching",
    )

    def __init__(self, link: Link, *, now: float) -> None:
        self.link = link
        self.ledger: Ledger[Position] = Ledger(written=link.written, now=now)
        self.started = now
        # Something was committed: the connection proved good.
        self.good = False
        # The link stalled: its peer is gone, a clean close would only wait for it.
        self.dead = False
        # A switch back to the first endpoint is due: the sender stops after its batch.
        self.switching = False
        # Set while the sender waits for new lines, so a switch need not wait for them.
        self.idle_scope: trio.CancelScope | None = None
        # Set when a flight is added, to wake the acknowledgement poller.
        self.outstanding = trio.Event()


class Forwarder:
    """Sends the spool's lines to the first reachable endpoint, at least once.

    ``run`` is the service; the spool cursor moves only past acknowledged bytes, so a crash
    of the relay, a broken link or a platform restart make lines arrive again rather than
    vanish.
    """

    def __init__(
        self,
        spool: Spool,
        config: ForwarderConfig,
        *,
        rng: random.Random | None = None,
        connect: Connector | None = None,
    ) -> None:
        self._spool = spool
        self._config = config
        # Tests put fake links here.
        self._custom_connect = connect is not None
        self._open = connect if connect is not None else tls_connector(config)
        self._rng = rng if rng is not None else random.Random()
        self._retry = RetryState()
        # Identical failure lines once per log_interval; the next one says how many were muted.
        self._log = RateLimitedLog(
            logger, clock=trio.current_time, interval=config.log_interval, burst=1
        )
        self._session: _Session | None = None
        # A connection to the first endpoint, opened while on a fallback, to switch to.
        self._next_link: Link | None = None
        self._committed = trio.Event()
        # When the service's stop budget runs out (set by drain): the close after it must fit.
        self._stop_by: float | None = None
        self._lines_forwarded = 0
        self._bytes_acked = 0
        self._lines_sent = 0
        self._attempts = 0
        self._failures = 0
        self._duplicates = 0
        self._last_error: str | None = None

    # -- public -------------------------------------------------------------------------------

    def statistics(self) -> ForwarderStats:
        link = self._session.link if self._session is not None else None
        return ForwarderStats(
            lines_forwarded=self._lines_forwarded,
            bytes_acked=self._bytes_acked,
            lines_sent=self._lines_sent,
            reconnects=max(0, self._attempts - 1),
            connection_failures=self._failures,
            duplicates_resent=self._duplicates,
            connected=link is not None,
            endpoint=str(link.endpoint) if link is not None else None,
            last_error=self._last_error,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Forward until cancelled; on cancellation close the connection cleanly."""
        self._warn_if_insecure()
        task_status.started()
        try:
            await self._forward_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self._shutdown()

    def use_ssl_context(self, context: ssl.SSLContext | None) -> None:
        """From the next connection on, use ``context`` (certificates reloaded at SIGHUP).

        The current connection is kept: dropping it would only resend what is in flight. A
        change between TLS and plain TCP is not a reload and is refused by the caller.
        """
        self._config = replace(self._config, ssl_context=context)
        if not self._custom_connect:
            self._open = tls_connector(self._config)

    async def drain(self, *, timeout: float) -> bool:  # noqa: ASYNC109 - the service's API
        """Wait until everything in the spool now has been acknowledged; False on timeout.

        For SIGTERM: the service calls this before cancelling ``run``.
        """
        target = self._spool.head
        self._stop_by = trio.current_time() + timeout
        with trio.move_on_after(timeout):
            while self._spool.cursor < target:
                await self._committed.wait()
            return True
        return False

    # -- connection management ----------------------------------------------------------------

    def _warn_if_insecure(self) -> None:
        context = self._config.ssl_context
        if context is None:
            logger.warning(
                "forwarding over plain TCP without TLS, as configured: flow data crosses the "
                "network unencrypted and the endpoint is not authenticated",
                extra={"event": "forward_plaintext"},
            )
        elif context.verify_mode == ssl.CERT_NONE:
            logger.warning(
                "TLS server verification is OFF: any server, including an attacker's, "
                "receives the flow data",
                extra={"event": "forward_verification_disabled"},
            )

    async def _forward_forever(self) -> None:
        config = self._config
        first = True
        while True:
            link, self._next_link = self._next_link, None
            if link is not None:
                self._retry = back_to_primary()
            else:
                if not first:
                    await trio.sleep(
                        reconnect_delay(
                            self._retry,
                            initial=config.backoff_initial,
                            maximum=config.backoff_max,
                            rng=self._rng,
                        )
                    )
                first = False
                link = await self._connect(self._retry.endpoint)
                if link is None:
                    self._retry = after_failure(
                        self._retry,
                        endpoints=len(config.endpoints),
                        failover_after=config.failover_after,
                    )
                    continue
            await self._serve(link)

    async def _connect(self, index: int) -> Link | None:
        endpoint = self._config.endpoints[index]
        self._attempts += 1
        try:
            link = await self._open(endpoint, index)
        except EndpointError as exc:
            self._failures += 1
            self._report(exc.cause, event="forward_connect_failed", endpoint=endpoint)
            return None
        logger.info(
            "connected to %s (%s)",
            endpoint,
            link.describe(),
            extra={"event": "forward_connected", "endpoint": str(endpoint)},
        )
        return link

    def _report(self, message: str, *, event: str, endpoint: Endpoint) -> None:
        self._last_error = message
        self._log.emit(message, message, event=event, endpoint=str(endpoint))

    async def _serve(self, link: Link) -> None:
        """Forward over ``link`` until it breaks or a switch to the first endpoint is due."""
        config = self._config
        session = self._session = _Session(link, now=trio.current_time())
        failures: list[EndpointError] = []
        async with trio.open_nursery() as nursery:
            scope = nursery.cancel_scope
            nursery.start_soon(self._guarded, link.receive_until_closed, scope, failures)
            nursery.start_soon(
                self._guarded, lambda: self._acknowledge_loop(session), scope, failures
            )
            nursery.start_soon(self._guarded, lambda: self._send_loop(session), scope, failures)
            if link.index > 0:
                nursery.start_soon(self._return_to_primary, session)
        try:
            if failures:
                cause = failures[0].cause
                self._failures += 1
                self._report(cause, event="forward_connection_lost", endpoint=link.endpoint)
                good = session.good or trio.current_time() - session.started >= config.backoff_max
                # If the peer only closed its side, it may still be reading what we sent (a
                # graceful stop), and every byte it acknowledges now is not sent again.
                settle = link.eof
                self._retry = (
                    after_success(self._retry)
                    if good
                    else after_failure(
                        self._retry,
                        endpoints=len(config.endpoints),
                        failover_after=config.failover_after,
                    )
                )
                if session.dead or link.dead:
                    # Stalled or timed out: the endpoint is likely blackholed, and would
                    # answer the next connection attempts no better.
                    session.dead = True
                    self._retry = after_dead_link(self._retry, endpoints=len(config.endpoints))
            else:
                # The first endpoint answered again: settle here, then switch.
                settle = True
                logger.info(
                    "returning from %s to the first endpoint %s",
                    link.endpoint,
                    config.endpoints[0],
                    extra={"event": "forward_primary_return"},
                )
            await self._close(session, settle=settle)
        finally:
            link.abort()
            self._session = None

    @staticmethod
    async def _guarded(
        work: Callable[[], Awaitable[None]],
        scope: trio.CancelScope,
        failures: list[EndpointError],
    ) -> None:
        """Any task of a session ending ends the session; an EndpointError says why."""
        try:
            await work()
        except EndpointError as exc:
            failures.append(exc)
        finally:
            scope.cancel()

    async def _return_to_primary(self, session: _Session) -> None:
        """While on a fallback endpoint, periodically connect to the first one; on success,
        ask the sender to stop after its current batch so the session can switch."""
        while True:
            await trio.sleep(self._config.primary_retry_interval)
            link = await self._connect(0)
            if link is None:
                continue
            self._next_link = link
            session.switching = True
            if session.idle_scope is not None:
                session.idle_scope.cancel()
            return

    async def _shutdown(self) -> None:
        """Cancelled: close the current connection cleanly within the drain budget."""
        deadline = trio.current_time() + self._config.drain_timeout
        if self._stop_by is not None:
            # After a drain, the close gets what is left of its budget: the whole stop takes
            # at most drain_timeout (the unit's TimeoutStopSec= is set by that).
            deadline = min(deadline, self._stop_by)
        if self._session is not None:
            await self._close(self._session, settle=True, deadline=deadline)
        if self._next_link is not None:
            with trio.move_on_at(deadline):
                await self._next_link.close()
        self._session = self._next_link = None

    # -- sending and acknowledgements ---------------------------------------------------------

    async def _send_loop(self, session: _Session) -> None:
        link, ledger = session.link, session.ledger
        spool = self._spool
        config = self._config
        framing = config.framing
        tls = config.ssl_context is not None
        position: Position = spool.cursor
        size = config.batch_bytes
        # Before the server's verdict on our certificate nothing can be committed; sending on
        # regardless would only grow what a rejection makes us send again.
        unverified = link.written + _BATCHES_BEFORE_VERDICT * config.batch_bytes
        while not session.switching:
            if link.written >= unverified and not link.accepted():
                await link.wait_accepted()
            batch = spool.read(position, size)
            lines = batch.lines
            if not lines:
                with trio.CancelScope() as session.idle_scope:
                    await spool.wait_readable(position)
                session.idle_scope = None
                continue
            data = frame_lines(lines, framing)
            cuts = record_cuts(data, lines, framing) if tls else ()
            ledger.sending(len(lines))
            await link.send(data, cuts)
            self._lines_sent += len(lines)
            ledger.sent(
                raw_end=link.written,
                end=batch.end,
                lines=len(lines),
                wire_bytes=len(data),
                now=trio.current_time(),
            )
            session.outstanding.set()
            position = batch.end
            self._reap(session)
            # One batch goes out per turn of the event loop, while a receiver takes a whole
            # burst of datagrams per turn. Behind (the batch was full), the next one doubles,
            # up to catch_up_factor x batch_bytes, so that delivery keeps pace with receiving
            # under full load; caught up, batches are batch_bytes again.
            if batch.nbytes >= size - (size >> 2):
                size = min(2 * size, config.catch_up_factor * config.batch_bytes)
            else:
                size = config.batch_bytes

    async def _acknowledge_loop(self, session: _Session) -> None:
        config = self._config
        link, ledger = session.link, session.ledger
        while True:
            if not ledger.outstanding:
                session.outstanding = trio.Event()
                await session.outstanding.wait()
            await trio.sleep(config.ack_poll_interval)
            self._reap(session)
            if ledger.stalled(now=trio.current_time(), timeout=config.stall_timeout):
                session.dead = True
                raise EndpointError(
                    str(link.endpoint),
                    f"{link.endpoint} acknowledged nothing for {config.stall_timeout:g} s",
                )

    def _reap(self, session: _Session) -> None:
        """Commit every batch whose last byte the peer's TCP has acknowledged."""
        link, ledger = session.link, session.ledger
        if not ledger.outstanding:
            return
        commit = ledger.acknowledged(
            link.acknowledged(), now=trio.current_time(), committable=link.accepted()
        )
        if commit is None:
            return
        self._spool.commit(commit.end)
        self._lines_forwarded += commit.lines
        self._bytes_acked += commit.wire_bytes
        session.good = True
        self._committed.set()
        self._committed = trio.Event()

    async def _close(
        self, session: _Session, *, settle: bool, deadline: float | None = None
    ) -> None:
        """Close ``link`` within one drain_timeout (or by ``deadline``): the first half for
        acknowledgements (``settle``), the rest for close_notify and the peer's EOF. A dead
        link is closed at once: its peer will neither acknowledge nor answer."""
        now = trio.current_time()
        if deadline is None:
            deadline = now + self._config.drain_timeout
        budget = max(0.0, deadline - now)
        if settle and not session.dead:
            with trio.move_on_at(deadline - budget / 2):
                await self._settle(session)
        # Lines that were sent and not acknowledged go again on the next connection.
        self._duplicates += session.ledger.abandon()
        if session.dead or session.link.dead:
            session.link.abort()
            return
        with trio.move_on_at(deadline):
            await session.link.close()

    async def _settle(self, session: _Session) -> None:
        """Before a clean close: wait until everything written is acknowledged."""
        with contextlib.suppress(*LINK_ERRORS):
            while session.ledger.outstanding:
                self._reap(session)
                if session.ledger.outstanding:
                    await trio.sleep(self._config.ack_poll_interval)
