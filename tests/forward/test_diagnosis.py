"""TLS failure diagnosis: OpenSSL's reason or verify code -> one sentence with a hint (pure)."""

from __future__ import annotations

import errno
import ssl

import pytest

from relay.forward import Endpoint
from relay.forward.diagnosis import describe_tls_failure, os_cause

ENDPOINT = Endpoint(host="platform.example", port=6514)


def ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    exc.reason = reason
    return exc


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, message)
    exc.verify_code = code
    exc.verify_message = message
    return exc


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "requires a client certificate"),
        ("TLSV1_ALERT_UNKNOWN_CA", "rejected our client certificate"),
        ("SSLV3_ALERT_BAD_CERTIFICATE", "rejected our client certificate"),
        ("WRONG_VERSION_NUMBER", "does not speak TLS"),
        ("HTTP_REQUEST", "does not speak TLS"),
        ("TLSV1_ALERT_PROTOCOL_VERSION", "no common TLS version or cipher"),
        ("NO_SHARED_CIPHER", "no common TLS version or cipher"),
        ("SOMETHING_NEW", "something new"),
    ],
)
def test_each_alert_names_its_likely_cause(reason: str, expected: str) -> None:
    text = describe_tls_failure(ssl_error(reason), ENDPOINT)
    assert text.startswith("TLS handshake with platform.example:6514 failed: ")
    assert expected in text
    assert " — " in text  # and a hint


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (20, "check --ca"),
        (19, "check --ca"),
        (10, "has expired"),
        (9, "not valid yet"),
        (62, "not issued for 'platform.example'"),
        (99, "check --ca and the platform's certificate"),
    ],
)
def test_each_verify_code_gets_its_hint(code: int, expected: str) -> None:
    text = describe_tls_failure(verify_error(code, "some reason"), ENDPOINT)
    assert "certificate verify failed: some reason" in text
    assert expected in text


def test_os_cause_finds_the_errno_inside_wrappers_and_groups() -> None:
    inner = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    outer = RuntimeError("wrapped")
    outer.__cause__ = inner
    assert os_cause(BaseExceptionGroup("group", [outer])) == "connection refused"
    assert os_cause(ValueError("plain")) == "plain"
    assert os_cause(ValueError()) == "ValueError"


@pytest.mark.parametrize(
    ("client_certificate", "expected"),
    [
        (False, "probably requires a client certificate, and the relay has none"),
        (True, "no common TLS version or cipher"),
        (None, "no common TLS version or cipher"),
    ],
)
def test_a_handshake_failure_alert_without_a_client_certificate_names_the_certificate(
    client_certificate: bool | None, expected: str
) -> None:
    exc = ssl_error("SSLV3_ALERT_HANDSHAKE_FAILURE")
    text = describe_tls_failure(exc, ENDPOINT, client_certificate=client_certificate)
    assert expected in text


def test_after_the_handshake_a_failure_is_the_connections_not_the_handshakes() -> None:
    text = describe_tls_failure(ssl_error("WRONG_VERSION_NUMBER"), ENDPOINT, after_handshake=True)
    assert text.startswith("TLS connection to platform.example:6514 broke after the handshake: ")
    assert "sent data that is not TLS" in text
    assert "handshake failed" not in text
