"""Certificates: a throwaway test CA, CSRs for the platform, TLS contexts, and `certs check`.

Everything a user can get wrong with a certificate, key or CA file (missing, unreadable, not
PEM, encrypted, readable by other users, key not matching the certificate) becomes one
:class:`~relay.errors.CertificateError` sentence that names the file and the fix, raised before
the ``ssl`` module sees the file: OpenSSL's own errors ("[X509: KEY_VALUES_MISMATCH]") name
neither. :func:`check_files` reports the same problems, and chain and expiry problems, as a
list of findings instead of stopping at the first.

Keys are EC P-256: generating one takes well under a millisecond, so tests can make fresh
certificates freely, and every TLS 1.2+ peer (rsyslog's ossl and gtls drivers included)
accepts them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay.errors import CertificateError

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# Certificates are made valid a little before "now" so that a peer whose clock lags ours by a
# few minutes does not reject a certificate made a moment ago.
_CLOCK_SKEW = timedelta(minutes=5)
# `certs check` warns when a certificate expires within this many days.
EXPIRY_WARNING_DAYS = 30
# A chain longer than this is certainly a loop or garbage, not a real PKI.
_MAX_CHAIN = 8

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """A CA bundle, a certificate and its private key, as files.

    For a CA made by :func:`make_test_ca`, ``cert`` is the CA certificate itself (``cert ==
    ca``); for a leaf made by :func:`issue_certificate`, ``ca`` is the issuing CA's certificate.
    """

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One result of :func:`check_files`; ``message`` names the file it is about."""

    level: Literal["ok", "warning", "error"]
    path: Path | None
    message: str


# --------------------------------------------------------------------------------------------
# Making certificates


def make_test_ca(
    directory: Path,
    *,
    name: str = "flowrelay test CA",
    now: datetime | None = None,
    days: int = 365,
) -> TlsFiles:
    """Make a self-signed CA (``ca.pem``, ``ca.key``) in ``directory``; for tests and the demo.

    Existing files of those names are replaced.
    """
    now = _utc(now)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "ca.pem"
    key_path = directory / "ca.key"
    _write_private_key(key_path, key)
    _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return TlsFiles(ca=cert_path, cert=cert_path, key=key_path)


def issue_certificate(
    ca: TlsFiles,
    directory: Path,
    name: str,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    server: bool = True,
    client: bool = True,
    now: datetime | None = None,
    days: int = 365,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> TlsFiles:
    """Issue a leaf certificate ``NAME.pem`` + ``NAME.key`` in ``directory``, signed by ``ca``.

    ``name`` is the subject CN and the file stem. ``hosts`` become subject alternative names
    (IP addresses as IP SANs, anything else as DNS SANs). ``not_before``/``not_after``
    override the validity computed from ``now`` and ``days`` (tests make expired certificates
    with them). The returned ``TlsFiles.ca`` is the CA certificate, ready for the peer to
    verify against.
    """
    if not _SAFE_STEM.fullmatch(name):
        raise ValueError(f"certificate name {name!r} is not usable as a file name")
    if not (server or client):
        raise ValueError("a certificate must be good for at least one of server and client")
    now = _utc(now)
    ca_cert = _load_pem_certificates(ca.cert, "CA certificate file")[0]
    ca_key = _load_private_key(ca.key)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateError(
            f"CA key file {ca.key} holds a key type this helper cannot sign with; "
            "use a CA made by `relay certs` (EC or RSA)",
            path=str(ca.key),
        )
    key = ec.generate_private_key(ec.SECP256R1())
    purposes = []
    if server:
        purposes.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        purposes.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(not_before) if not_before else now - _CLOCK_SKEW)
        .not_valid_after(_utc(not_after) if not_after else now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(host) for host in hosts]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    _write_private_key(key_path, key)
    _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return TlsFiles(ca=ca.cert, cert=cert_path, key=key_path)


def make_key_and_csr(
    directory: Path,
    common_name: str,
    *,
    organization: str | None = None,
    key_type: Literal["ec", "rsa"] = "ec",
) -> tuple[Path, Path]:
    """Make a private key (mode 0600) and a certificate signing request for the platform.

    Returns ``(key_path, csr_path)``: ``STEM.key`` and ``STEM.csr`` in ``directory``, where
    STEM is ``common_name`` with anything but letters, digits, ``.``, ``_`` and ``-`` replaced.
    An existing key file is never overwritten (it may be the one in use). ``key_type="rsa"``
    (2048 bits) is for platforms whose CA does not sign EC keys.
    """
    if not common_name.strip():
        raise CertificateError("the certificate request needs a non-empty common name")
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", common_name.strip()).lstrip(".-") or "relay"
    key_path = directory / f"{stem}.key"
    csr_path = directory / f"{stem}.csr"
    if key_path.exists():
        raise CertificateError(
            f"key file {key_path} already exists; move it away or choose another directory, "
            "so that a key in use is never overwritten",
            path=str(key_path),
        )
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name.strip())]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .sign(key, hashes.SHA256())
    )
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private_key(key_path, key)
        _write_file(csr_path, csr.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise CertificateError(
            f"cannot write the key and request in {directory} ({exc.strerror}); "
            "choose a directory this user can write to",
            path=str(directory),
        ) from exc
    return key_path, csr_path


# --------------------------------------------------------------------------------------------
# TLS contexts


def client_context(
    *, ca: Path | None, cert: Path | None, key: Path | None, verify: bool = True
) -> ssl.SSLContext:
    """The forwarder's TLS context: TLS 1.2 or later, the server verified, optional client cert.

    ``ca=None`` verifies against the system store. ``verify=False`` (only when a user asked
    for it explicitly) switches off both chain and host name checks (the forwarder says so
    loudly when it starts: ``forward_verification_disabled``). ``cert`` and
    ``key`` together present a client certificate (mutual TLS). Every unusable file raises
    :class:`CertificateError` naming it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        # No warning here: the forwarder warns once when it starts, about whatever context it
        # was given (it also warns about plain TCP). One place, so the log says it once.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if ca is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_ca_into(context, ca)
    if cert is not None or key is not None:
        _load_chain_into(context, cert, key)
    return context


def server_context(*, cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A TLS server context for the demo and test receiver; ``client_ca`` requires client certs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain_into(context, cert, key)
    if client_ca is not None:
        _load_ca_into(context, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _load_ca_into(context: ssl.SSLContext, ca: Path) -> None:
    _load_pem_certificates(ca, "CA file")
    try:
        context.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(
            f"CA file {ca} cannot be loaded ({_reason(exc)}); get a fresh copy of the CA bundle",
            path=str(ca),
        ) from exc


def _load_chain_into(context: ssl.SSLContext, cert: Path | None, key: Path | None) -> None:
    if cert is None or key is None:
        given, missing = ("certificate", "key") if key is None else ("key", "certificate")
        path = cert if cert is not None else key
        raise CertificateError(
            f"a client {given} ({path}) was given without its {missing}; "
            f"set both the certificate and the key, or neither",
            path=str(path),
        )
    leaf = _load_pem_certificates(cert, "certificate file")[0]
    private_key = _load_private_key(key)
    _require_match(leaf, cert, private_key, key)
    _log_if_outside_validity(leaf, cert)
    try:
        # The callback keeps OpenSSL from prompting on a terminal should a key turn out to be
        # encrypted after all; _load_private_key has already refused those.
        context.load_cert_chain(str(cert), str(key), password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(
            f"certificate file {cert} with key file {key} cannot be loaded ({_reason(exc)}); "
            "check that both files are the ones the platform issued",
            path=str(cert),
        ) from exc


def certificate_not_after(cert: Path) -> datetime:
    """When the (first) certificate in ``cert`` expires; CertificateError names the file."""
    return _load_pem_certificates(cert, "certificate file")[0].not_valid_after_utc


def _no_password() -> bytes:
    raise CertificateError("the key file is encrypted; decrypt it first")


def _log_if_outside_validity(leaf: x509.Certificate, path: Path) -> None:
    # The platform will refuse such a certificate; say so at start instead of per connection.
    now = datetime.now(UTC)
    if now > leaf.not_valid_after_utc:
        logger.warning(
            "certificate file %s expired on %s; ask the platform for a new certificate",
            path,
            _day(leaf.not_valid_after_utc),
            extra={"event": "tls_certificate_expired", "path": str(path)},
        )
    elif now < leaf.not_valid_before_utc:
        logger.warning(
            "certificate file %s is not valid before %s; check this machine's clock",
            path,
            _day(leaf.not_valid_before_utc),
            extra={"event": "tls_certificate_not_yet_valid", "path": str(path)},
        )


# --------------------------------------------------------------------------------------------
# `relay certs check`


def check_files(
    *, ca: Path | None, cert: Path | None, key: Path | None, now: datetime | None = None
) -> list[Finding]:
    """Check a configured CA/cert/key set; every finding names the file it is about.

    Checks: each file readable and PEM; the key not encrypted and not readable by group or
    others; the key matching the certificate; the certificate chaining to the CA file
    (signatures and validity of every link); expiry (error when expired or not yet valid,
    warning within 30 days); the certificate being usable for client authentication.
    """
    now = _utc(now)
    findings: list[Finding] = []

    roots: list[x509.Certificate] = []
    if ca is None:
        findings.append(
            Finding(
                level="ok",
                path=None,
                message="no CA file given: the platform's certificate will be verified against "
                "the system's CA store, and the client certificate's chain is not checked",
            )
        )
    else:
        roots = _attempt(findings, lambda: _load_pem_certificates(ca, "CA file")) or []
        if roots:
            findings.append(
                Finding(
                    level="ok",
                    path=ca,
                    message=f"CA file {ca} holds {len(roots)} certificate(s): "
                    + "; ".join(_describe(c) for c in roots),
                )
            )
            for root in roots:
                finding = _validity_finding(root, ca, now, what="CA file")
                if finding.level != "ok":
                    findings.append(finding)

    chain: list[x509.Certificate] = []
    if cert is not None:
        chain = _attempt(findings, lambda: _load_pem_certificates(cert, "certificate file")) or []
    private_key = None
    if key is not None:
        mode_finding = _key_mode_finding(key)
        if mode_finding is not None:
            findings.append(mode_finding)
        private_key = _attempt(findings, lambda: _load_private_key(key, check_mode=False))
        if private_key is not None and mode_finding is None:
            findings.append(
                Finding(
                    level="ok",
                    path=key,
                    message=f"key file {key} is a readable, unencrypted private key "
                    "that only its owner can read",
                )
            )

    if (cert is None) != (key is None):
        path = cert if cert is not None else key
        findings.append(
            Finding(
                level="error",
                path=path,
                message=f"{path} was given without its "
                f"{'key' if key is None else 'certificate'}; "
                "configure both the client certificate and its key, or neither",
            )
        )

    if chain:
        leaf = chain[0]
        assert cert is not None
        findings.append(_validity_finding(leaf, cert, now, what="certificate file"))
        findings.extend(_purpose_findings(leaf, cert))
        if private_key is not None:
            assert key is not None
            try:
                _require_match(leaf, cert, private_key, key)
            except CertificateError as exc:
                findings.append(Finding(level="error", path=key, message=str(exc)))
            else:
                findings.append(
                    Finding(
                        level="ok", path=key, message=f"key file {key} matches certificate {cert}"
                    )
                )
        if ca is not None and roots:
            findings.extend(_chain_findings(chain, cert, roots, ca, now))
    return findings


def _attempt(findings: list[Finding], load: Callable[[], _T]) -> _T | None:
    try:
        return load()
    except CertificateError as exc:
        findings.append(
            Finding(
                level="error",
                path=Path(exc.path) if exc.path else None,
                message=str(exc),
            )
        )
        return None


def _key_mode_finding(key: Path) -> Finding | None:
    try:
        _check_key_mode(key)
    except CertificateError as exc:
        return Finding(level="error", path=key, message=str(exc))
    except OSError:
        return None  # the loader reports a missing or unreadable file in its own words
    return None


def _validity_finding(cert: x509.Certificate, path: Path, now: datetime, *, what: str) -> Finding:
    subject = _describe(cert)
    after = cert.not_valid_after_utc
    before = cert.not_valid_before_utc
    if now > after:
        return Finding(
            level="error",
            path=path,
            message=f"{what} {path}: {subject} expired on {_day(after)}; "
            "ask the platform for a new certificate",
        )
    if now < before:
        return Finding(
            level="error",
            path=path,
            message=f"{what} {path}: {subject} is not valid before {_day(before)}; "
            "check this machine's clock",
        )
    left = after - now
    if left < timedelta(days=EXPIRY_WARNING_DAYS):
        return Finding(
            level="warning",
            path=path,
            message=f"{what} {path}: {subject} expires on {_day(after)}, in {left.days} day(s); "
            "renew it soon",
        )
    return Finding(
        level="ok",
        path=path,
        message=f"{what} {path}: {subject} is valid until {_day(after)} ({left.days} days)",
    )


def _purpose_findings(leaf: x509.Certificate, path: Path) -> list[Finding]:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []  # no restriction: good for any purpose
    if ExtendedKeyUsageOID.CLIENT_AUTH in usage:
        return []
    return [
        Finding(
            level="warning",
            path=path,
            message=f"certificate file {path} is not marked for client authentication "
            "(extended key usage); the platform may refuse it as a client certificate",
        )
    ]


def _chain_findings(
    chain: list[x509.Certificate],
    cert_path: Path,
    roots: list[x509.Certificate],
    ca_path: Path,
    now: datetime,
) -> list[Finding]:
    findings: list[Finding] = []
    intermediates = chain[1:]
    current = chain[0]
    path_names = [_describe(current)]
    for _ in range(_MAX_CHAIN):
        root = _find_issuer(current, roots)
        if root is not None:
            if root is not True:
                path_names.append(_describe(root))
                finding = _validity_finding(root, ca_path, now, what="CA file")
                if finding.level == "error":
                    findings.append(finding)
            findings.append(
                Finding(
                    level="ok",
                    path=cert_path,
                    message=f"certificate file {cert_path} chains to CA file {ca_path}: "
                    + " issued by ".join(path_names),
                )
            )
            return findings
        step = _find_issuer(current, intermediates)
        if step is None or step is True:
            break
        finding = _validity_finding(step, cert_path, now, what="intermediate in certificate file")
        if finding.level == "error":
            findings.append(finding)
        path_names.append(_describe(step))
        current = step
    issuer = current.issuer.rfc4514_string() or "(empty name)"
    named = [c for c in [*roots, *intermediates] if c.subject == current.issuer]
    if named:
        findings.append(
            Finding(
                level="error",
                path=cert_path,
                message=f"certificate file {cert_path} names issuer {issuer}, but its signature "
                f"does not verify with that certificate from CA file {ca_path}; it was issued "
                "by a different CA of the same name, so use the CA bundle issued with it",
            )
        )
    else:
        # A platform may sign client certificates with another CA than the one that signed its
        # server certificate, so this alone does not stop the relay from working.
        findings.append(
            Finding(
                level="warning",
                path=cert_path,
                message=f"certificate file {cert_path} was issued by {issuer}, which is not in "
                f"CA file {ca_path}; unless the platform signs client certificates with a "
                "separate CA, use the CA bundle issued with this certificate",
            )
        )
    return findings


def _find_issuer(
    cert: x509.Certificate, candidates: list[x509.Certificate]
) -> x509.Certificate | Literal[True] | None:
    """The candidate that signed ``cert``; True when ``cert`` itself is a candidate."""
    for candidate in candidates:
        if candidate == cert:
            return True
    for candidate in candidates:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


# --------------------------------------------------------------------------------------------
# Reading files


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CertificateError(
            f"{what} {path} does not exist; check the path in the configuration", path=str(path)
        ) from exc
    except IsADirectoryError as exc:
        raise CertificateError(
            f"{what} {path} is a directory; give the path of the file itself", path=str(path)
        ) from exc
    except PermissionError as exc:
        raise CertificateError(
            f"{what} {path} cannot be read by this user (uid {os.getuid()}); make it readable "
            "by the user the relay runs as (chown or chgrp it)",
            path=str(path),
        ) from exc
    except OSError as exc:
        raise CertificateError(
            f"{what} {path} cannot be read ({exc.strerror}); check the file", path=str(path)
        ) from exc


def _load_pem_certificates(path: Path, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    if _PEM_CERT not in data:
        hint = (
            f"convert it with: openssl x509 -inform der -in {path} -out {path}.pem"
            if data[:1] == b"\x30"  # a DER SEQUENCE: the same certificate, binary-encoded
            else "give the PEM file with '-----BEGIN CERTIFICATE-----' blocks the platform issued"
        )
        raise CertificateError(f"{what} {path} is not a PEM certificate; {hint}", path=str(path))
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(
            f"{what} {path} holds a certificate block that cannot be parsed ({exc}); "
            "get a fresh copy of the file",
            path=str(path),
        ) from exc


def _check_key_mode(key: Path) -> None:
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & 0o044:
        raise CertificateError(
            f"key file {key} is readable by other users (mode {mode:04o}); run chmod 600 {key}",
            path=str(key),
        )
    if mode & 0o033:
        raise CertificateError(
            f"key file {key} is writable or executable by other users (mode {mode:04o}); "
            f"run chmod 600 {key}",
            path=str(key),
        )


def _load_private_key(key: Path, *, check_mode: bool = True) -> PrivateKeyTypes:
    data = _read(key, "key file")
    if check_mode:
        _check_key_mode(key)
    if b"ENCRYPTED" in data:
        raise CertificateError(
            f"key file {key} is encrypted with a passphrase, which an unattended relay cannot "
            f"enter; decrypt it with: openssl pkey -in {key} -out NEW.key && chmod 600 NEW.key",
            path=str(key),
        )
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise CertificateError(
            f"key file {key} is not a PEM private key; give the PEM file with a "
            f"'-----BEGIN PRIVATE KEY-----' block (convert DER with: openssl pkey -inform der "
            f"-in {key} -out NEW.key)",
            path=str(key),
        )
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # encrypted in a way the marker test above did not catch
        raise CertificateError(
            f"key file {key} is encrypted with a passphrase, which an unattended relay cannot "
            f"enter; decrypt it with: openssl pkey -in {key} -out NEW.key && chmod 600 NEW.key",
            path=str(key),
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(
            f"key file {key} holds a private key block that cannot be parsed; "
            "get a fresh copy of the key",
            path=str(key),
        ) from exc
    return private_key


def _require_match(
    leaf: x509.Certificate, cert: Path, private_key: PrivateKeyTypes, key: Path
) -> None:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        ours = private_key.public_key().public_bytes(der, spki)
        matches = leaf.public_key().public_bytes(der, spki) == ours
    except (ValueError, TypeError, UnsupportedAlgorithm):
        matches = False
    if not matches:
        raise CertificateError(
            f"key file {key} does not match certificate file {cert}; use the key that was "
            "generated together with this certificate's request",
            path=str(key),
        )


# --------------------------------------------------------------------------------------------
# Writing files


def _write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(path, data, 0o600)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, the file having ``mode`` from its first byte.

    A key must never exist, even for a moment, with the umask's looser permissions, and a
    crash must not leave half a certificate: so write a private temporary file, then rename.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Small helpers


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("certificate times must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _describe(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string() or '(empty subject)'}'"


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
