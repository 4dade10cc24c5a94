"""The rsyslog platform as a pytest fixture (the runner itself is relay.testing.rsyslog)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol

import pytest

from relay.certs import TlsFiles
from relay.testing.rsyslog import (
    Message,
    Rsyslog,
    find_rsyslogd,
    installed_drivers,
    tls_driver,
)

__all__ = [
    "Message",
    "Rsyslog",
    "RsyslogFactory",
    "find_rsyslogd",
    "installed_drivers",
    "rsyslog_factory",
    "tls_driver",
]


class RsyslogFactory(Protocol):
    def __call__(
        self,
        tls: TlsFiles,
        port: int | None = None,
        *,
        mutual: bool = True,
        host: str = "127.0.0.1",
        permitted_peers: Sequence[str] | None = None,
        driver: Literal["ossl", "gtls"] | None = None,
        parse: bool = True,
        start: bool = True,
    ) -> Rsyslog: ...


@pytest.fixture
def rsyslog_factory(tmp_path: Path) -> Iterator[RsyslogFactory]:
    """Make :class:`Rsyslog` instances, started unless ``start=False``.

    ``rsyslog_factory(tls, port=None, *, mutual=True, ...)``. Each gets its own directory under
    the test's tmp_path; all are stopped at teardown, also when the test fails. Skips the test
    when rsyslogd or its TLS driver is missing.
    """
    if find_rsyslogd() is None or tls_driver() is None:
        pytest.skip("rsyslogd with a TLS driver (rsyslog-openssl or rsyslog-gnutls) is needed")
    made: list[Rsyslog] = []

    def make(
        tls: TlsFiles,
        port: int | None = None,
        *,
        mutual: bool = True,
        host: str = "127.0.0.1",
        permitted_peers: Sequence[str] | None = None,
        driver: Literal["ossl", "gtls"] | None = None,
        parse: bool = True,
        start: bool = True,
    ) -> Rsyslog:
        server = Rsyslog(
            tmp_path / f"rsyslog{len(made)}",
            tls,
            port,
            mutual=mutual,
            host=host,
            permitted_peers=permitted_peers,
            driver=driver,
            parse=parse,
        )
        made.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.stop()
