"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.rsyslog import rsyslog_factory

from relay.certs import TlsFiles, issue_certificate, make_test_ca

__all__ = ["rsyslog_factory"]


# ---- TLS material (made once per session: EC P-256, a few milliseconds) -------------------


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="session")
def tls_ca(tls_dir: Path) -> TlsFiles:
    """A test CA; its ``ca`` is the bundle both sides verify against."""
    return make_test_ca(tls_dir)


@pytest.fixture(scope="session")
def tls_server(tls_ca: TlsFiles, tls_dir: Path) -> TlsFiles:
    """The platform's certificate: CN localhost, SANs localhost, 127.0.0.1 and ::1."""
    return issue_certificate(tls_ca, tls_dir, "localhost", client=False)


@pytest.fixture(scope="session")
def tls_client(tls_ca: TlsFiles, tls_dir: Path) -> TlsFiles:
    """The relay's client certificate, as the platform issues per customer."""
    return issue_certificate(tls_ca, tls_dir, "flowrelay-client", hosts=(), server=False)
