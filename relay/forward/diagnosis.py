"""Why a connection to an endpoint failed, in one sentence an operator can act on: pure code.

OpenSSL's reasons and verify codes are precise but cryptic ("sslv3 alert handshake
failure"); the sentence names the endpoint, the likely cause and the flag to check.
"""

from __future__ import annotations

import errno
import os
import ssl
from typing import Final

from relay.forward.config import Endpoint

# OpenSSL X509_V_ERR_* codes worth a specific hint.
_UNTRUSTED_CODES: Final = frozenset({2, 18, 19, 20, 21})  # issuer unknown / self-signed
_EXPIRED: Final = 10
_NOT_YET_VALID: Final = 9
_NAME_MISMATCH_CODES: Final = frozenset({62, 64})  # host name / IP address mismatch
# Alerts a server sends when it does not like our client certificate.
_REJECTED_CLIENT_CERT: Final = frozenset(
    {
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV1_ALERT_DECRYPT_ERROR",
    }
)
_NOT_TLS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"}
)
_HANDSHAKE_FAILURE: Final = "SSLV3_ALERT_HANDSHAKE_FAILURE"
_NO_COMMON_PROTOCOL: Final = frozenset(
    {
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "UNSUPPORTED_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE",
        "NO_SHARED_CIPHER",
        "TLSV1_ALERT_INSUFFICIENT_SECURITY",
    }
)


def describe_tls_failure(
    exc: ssl.SSLError,
    endpoint: Endpoint,
    *,
    client_certificate: bool | None = None,
    after_handshake: bool = False,
) -> str:
    """One sentence naming the endpoint, the cause, and what to check.

    ``client_certificate`` says whether the relay presents one (None: unknown). In TLS 1.2
    an OpenSSL server that requires a client certificate and gets none answers with a plain
    handshake_failure alert, which otherwise means "no common version or cipher".
    ``after_handshake``: the handshake was over and the server had accepted us, so the
    failure belongs to the connection, not to the handshake.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = f"certificate verify failed: {exc.verify_message}"
        if code in _UNTRUSTED_CODES:
            hint = "check --ca (the CA bundle that signed the platform's certificate)"
        elif code == _EXPIRED:
            hint = (
                "the server's certificate has expired; the platform must renew it "
                "(or this machine's clock is wrong)"
            )
        elif code == _NOT_YET_VALID:
            hint = "the server's certificate is not valid yet; check this machine's clock"
        elif code in _NAME_MISMATCH_CODES:
            hint = (
                f"the certificate is not issued for {endpoint.tls_name!r}; "
                f"check the endpoint host or --server-name"
            )
        else:
            hint = "check --ca and the platform's certificate"
        return f"TLS handshake with {endpoint} failed: {detail} — {hint}"
    reason = exc.reason or ""
    alert = reason.lower().replace("_", " ") if reason else str(exc)
    if after_handshake:
        if reason in _NOT_TLS:
            detail = f"the endpoint sent data that is not TLS ({alert})"
            hint = "is something other than a TLS syslog receiver answering on that port?"
        else:
            detail = alert
            hint = "check the platform's receiver"
        return f"TLS connection to {endpoint} broke after the handshake: {detail} — {hint}"
    if reason == _HANDSHAKE_FAILURE and client_certificate is False:
        detail = (
            f"the server probably requires a client certificate, and the relay has none ({alert})"
        )
        hint = "set --cert and --key to the certificate the platform issued"
    elif reason.endswith("CERTIFICATE_REQUIRED"):
        detail = f"the server requires a client certificate ({alert})"
        hint = "set --cert and --key to the certificate the platform issued"
    elif reason in _REJECTED_CLIENT_CERT:
        detail = f"the server rejected our client certificate ({alert})"
        hint = "check --cert and --key against what the platform issued"
    elif reason in _NOT_TLS:
        detail = f"the endpoint does not speak TLS ({alert})"
        hint = "check the port (is it a plain TCP syslog port?)"
    elif reason in _NO_COMMON_PROTOCOL:
        detail = f"no common TLS version or cipher ({alert})"
        hint = "the relay requires TLS 1.2 or later; check the server's TLS settings"
    else:
        detail = alert
        hint = "check --ca, --cert and --key"
    return f"TLS handshake with {endpoint} failed: {detail} — {hint}"


def os_cause(exc: BaseException) -> str:
    """The most specific readable reason inside trio's wrappers and exception groups."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        seen += 1
        if isinstance(current, BaseExceptionGroup) and current.exceptions:
            current = current.exceptions[0]
            continue
        if isinstance(current, OSError) and current.errno and current.errno > 0:
            return os.strerror(current.errno).lower()
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if current.__cause__ is None:
            break
        current = current.__cause__
    return str(exc) or type(exc).__name__


def timed_out(exc: BaseException) -> bool:
    """Whether the kernel gave up on the connection (TCP_USER_TIMEOUT or keepalive expired):
    ETIMEDOUT somewhere in the chain of causes."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return False
        if isinstance(current, OSError) and current.errno == errno.ETIMEDOUT:
            return True
        current = current.__cause__
    return False
