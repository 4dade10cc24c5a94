"""Diagnosis of TLS failures against real TLS servers on loopback (issue 10 items 12, 14d)."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from forward.test_forwarder import fill, make_config, open_spool, running, wait_for
from relay.certs import TlsFiles, client_context, server_context
from relay.forward import Forwarder


@asynccontextmanager
async def tls12_server(context: ssl.SSLContext, *, garbage: bytes = b"") -> AsyncIterator[int]:
    """A TLS 1.2-only OpenSSL server (Python's blocking ssl module, in a thread, so that its
    alerts reach the wire as a platform's do); after each handshake it writes ``garbage`` on
    the raw TCP stream (not in a TLS record), then reads until the peer goes."""
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            with (
                conn,
                contextlib.suppress(OSError),
                context.wrap_socket(conn, server_side=True) as tls,
            ):
                if garbage:
                    time.sleep(0.2)
                    # Beside the TLS layer, straight onto the TCP stream.
                    os.write(tls.fileno(), garbage)
                while tls.recv(65536):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        await trio.to_thread.run_sync(thread.join, 10)
        listener.close()


async def first_failure(forwarder: Forwarder) -> str:
    async with running(forwarder):
        await wait_for(
            lambda: forwarder.statistics().connection_failures >= 1, timeout=10, what="a failure"
        )
    error = forwarder.statistics().last_error
    assert error is not None
    return error


async def test_a_tls12_server_that_wants_a_client_certificate_names_the_missing_certificate(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles
) -> None:
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 10)
    server = server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    no_certificate = client_context(ca=tls_ca.ca, cert=None, key=None)
    async with tls12_server(server) as port:
        config = make_config([port], no_certificate, client_certificate=False)
        error = await first_failure(Forwarder(spool, config))
    assert "handshake failure" in error
    assert "requires a client certificate" in error, error
    assert "--cert and --key" in error
    assert "no common TLS version" not in error


async def test_the_same_alert_with_a_client_certificate_still_means_no_common_protocol(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 10)
    server = server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    server.set_ciphers("AES128-SHA")  # TLS 1.2 only, and nothing the relay offers
    client = client_context(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key)
    async with tls12_server(server) as port:
        config = make_config([port], client, client_certificate=True)
        error = await first_failure(Forwarder(spool, config))
    assert "requires a client certificate" not in error, error


async def test_garbage_after_a_finished_handshake_is_not_called_a_handshake_failure(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    spool = open_spool(tmp_path / "spool")
    fill(spool, 0, 10)
    server = server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    client = client_context(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key)
    async with tls12_server(server, garbage=b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4) as port:
        config = make_config([port], client, client_certificate=True)
        error = await first_failure(Forwarder(spool, config))
    assert error.startswith(f"TLS connection to 127.0.0.1:{port} broke after the handshake"), error
    assert "not TLS" in error, error
