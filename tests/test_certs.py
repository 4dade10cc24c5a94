"""Certificates: making them, loading them into TLS contexts, and `relay certs check`."""

from __future__ import annotations

import logging
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay.certs import (
    Finding,
    TlsFiles,
    check_files,
    client_context,
    issue_certificate,
    make_key_and_csr,
    make_test_ca,
    server_context,
)
from relay.errors import CertificateError, ConfigError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def ca(tmp_path: Path) -> TlsFiles:
    return make_test_ca(tmp_path / "ca", now=NOW)


@pytest.fixture
def client(ca: TlsFiles, tmp_path: Path) -> TlsFiles:
    return issue_certificate(ca, tmp_path / "client", "client", hosts=(), server=False, now=NOW)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def levels(findings: list[Finding]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"ok": [], "warning": [], "error": []}
    for finding in findings:
        out[finding.level].append(finding.message)
    return out


# ---- making certificates ----------------------------------------------------------------


def test_test_ca_and_leaf_files(ca: TlsFiles, tmp_path: Path) -> None:
    assert ca.cert == ca.ca
    assert mode(ca.key) == 0o600
    assert mode(ca.cert) == 0o644
    leaf = issue_certificate(ca, tmp_path / "srv", "server", now=NOW, days=10)
    assert leaf.ca == ca.cert
    assert mode(leaf.key) == 0o600
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "server"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc == NOW + timedelta(days=10)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_no_file_is_ever_group_readable_while_written(tmp_path: Path) -> None:
    old = os.umask(0)  # the loosest umask: permissions must not depend on it
    try:
        ca = make_test_ca(tmp_path)
    finally:
        os.umask(old)
    assert mode(ca.key) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_certificate_times_must_be_aware(ca: TlsFiles, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        issue_certificate(ca, tmp_path, "x", now=datetime(2026, 1, 1))


def test_key_and_csr_for_the_platform(tmp_path: Path) -> None:
    key_path, csr_path = make_key_and_csr(tmp_path / "req", "customer 42", organization="ACME")
    assert key_path.name == "customer-42.key"
    assert mode(key_path) == 0o600
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "O=ACME,CN=customer 42"
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == csr.public_key()


def test_csr_never_overwrites_a_key(tmp_path: Path) -> None:
    key_path, _ = make_key_and_csr(tmp_path, "relay1")
    before = key_path.read_bytes()
    with pytest.raises(CertificateError, match=r"already exists") as caught:
        make_key_and_csr(tmp_path, "relay1")
    assert str(key_path) in str(caught.value)
    assert key_path.read_bytes() == before


def test_rsa_csr(tmp_path: Path) -> None:
    _, csr_path = make_key_and_csr(tmp_path, "relay2", key_type="rsa")
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.public_key().key_size == 2048  # type: ignore[union-attr]


# ---- TLS contexts over a real loopback connection ---------------------------------------


async def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_name: str = "localhost"
) -> trio.SSLStream[trio.SocketStream]:
    """Connect client to server on 127.0.0.1, exchange one byte each way."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    result: list[BaseException] = []

    async def serve(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server, server_side=True)
        try:
            await tls.do_handshake()
            await tls.send_all(await tls.receive_some(1))
        except trio.BrokenResourceError as exc:
            result.append(exc)
        finally:
            await trio.aclose_forcefully(tls)

    failure: trio.BrokenResourceError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(tcp, client, server_hostname=server_name)
        try:
            await tls.send_all(b"x")
            assert await tls.receive_some(1) == b"x"
        except trio.BrokenResourceError as exc:
            failure = exc  # raised below, outside the nursery's exception group
        finally:
            await trio.aclose_forcefully(tls)
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return tls


async def test_mutual_tls_handshake(ca: TlsFiles, client: TlsFiles, tmp_path: Path) -> None:
    server = issue_certificate(ca, tmp_path / "srv", "localhost", client=False, now=NOW)
    server_ctx = server_context(cert=server.cert, key=server.key, client_ca=ca.ca)
    client_ctx = client_context(ca=ca.ca, cert=client.cert, key=client.key)
    assert client_ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client_ctx.verify_mode == ssl.CERT_REQUIRED
    assert client_ctx.check_hostname
    await handshake(server_ctx, client_ctx)
    await handshake(server_ctx, client_ctx, server_name="127.0.0.1")


async def test_wrong_host_name_is_refused(ca: TlsFiles, client: TlsFiles, tmp_path: Path) -> None:
    server = issue_certificate(ca, tmp_path / "srv", "localhost", client=False, now=NOW)
    server_ctx = server_context(cert=server.cert, key=server.key)
    client_ctx = client_context(ca=ca.ca, cert=None, key=None)
    with pytest.raises(trio.BrokenResourceError) as caught:
        await handshake(server_ctx, client_ctx, server_name="platform.example.com")
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


async def test_server_requires_a_client_certificate(ca: TlsFiles, tmp_path: Path) -> None:
    server = issue_certificate(ca, tmp_path / "srv", "localhost", client=False, now=NOW)
    server_ctx = server_context(cert=server.cert, key=server.key, client_ca=ca.ca)
    client_ctx = client_context(ca=ca.ca, cert=None, key=None)
    with pytest.raises(trio.BrokenResourceError):
        await handshake(server_ctx, client_ctx)


async def test_verify_off_accepts_anything(ca: TlsFiles, tmp_path: Path) -> None:
    # The loud warning is the forwarder's, said once at start (tests/test_service.py).
    other = make_test_ca(tmp_path / "other", name="someone else")
    server = issue_certificate(other, tmp_path / "srv", "elsewhere", hosts=(), now=NOW)
    client_ctx = client_context(ca=ca.ca, cert=None, key=None, verify=False)
    assert client_ctx.verify_mode == ssl.CERT_NONE
    assert not client_ctx.check_hostname
    await handshake(server_context(cert=server.cert, key=server.key), client_ctx)


def test_system_store_when_no_ca() -> None:
    context = client_context(ca=None, cert=None, key=None)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


# ---- each unusable file: one CertificateError naming the file and the fix ---------------


def raises_naming(path: Path, *fragments: str, **files: Path | None) -> CertificateError:
    with pytest.raises(CertificateError) as caught:
        client_context(
            ca=files.get("ca"), cert=files.get("cert"), key=files.get("key"), verify=True
        )
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    assert caught.value.path == str(path)
    assert isinstance(caught.value, ConfigError)  # exit code 78
    return caught.value


def test_missing_ca_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    raises_naming(missing, "does not exist", ca=missing)


def test_ca_file_is_a_directory(tmp_path: Path) -> None:
    raises_naming(tmp_path, "is a directory", ca=tmp_path)


def test_der_ca_file_gets_a_conversion_hint(ca: TlsFiles, tmp_path: Path) -> None:
    der = tmp_path / "ca.der"
    cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    raises_naming(der, "not a PEM certificate", "openssl x509 -inform der", ca=der)


def test_garbage_ca_file(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("hello\n")
    raises_naming(junk, "not a PEM certificate", ca=junk)


def test_corrupt_pem_block(ca: TlsFiles, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    text = ca.cert.read_text().splitlines()
    text[3] = "A" * len(text[3])
    broken.write_text("\n".join(text) + "\n")
    raises_naming(broken, "cannot be parsed", ca=broken)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_cert_file(ca: TlsFiles, client: TlsFiles) -> None:
    client.cert.chmod(0o000)
    raises_naming(client.cert, "cannot be read", ca=ca.ca, cert=client.cert, key=client.key)


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o620])
def test_key_readable_by_others(ca: TlsFiles, client: TlsFiles, loose: int) -> None:
    client.key.chmod(loose)
    error = raises_naming(
        client.key, f"run chmod 600 {client.key}", ca=ca.ca, cert=client.cert, key=client.key
    )
    assert f"mode {loose:04o}" in str(error)
    if loose & 0o044:
        assert "is readable by other users" in str(error)


def test_key_does_not_match_certificate(ca: TlsFiles, client: TlsFiles, tmp_path: Path) -> None:
    other = issue_certificate(ca, tmp_path / "other", "other", now=NOW)
    raises_naming(other.key, "does not match", str(client.cert), cert=client.cert, key=other.key)


def test_encrypted_key(client: TlsFiles, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(client.key.read_bytes(), password=None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    encrypted.chmod(0o600)
    raises_naming(encrypted, "encrypted", "openssl pkey", cert=client.cert, key=encrypted)


def test_key_not_pem(client: TlsFiles, tmp_path: Path) -> None:
    der = tmp_path / "key.der"
    key = serialization.load_pem_private_key(client.key.read_bytes(), password=None)
    der.write_bytes(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    der.chmod(0o600)
    raises_naming(der, "not a PEM private key", cert=client.cert, key=der)


def test_certificate_without_key(client: TlsFiles) -> None:
    raises_naming(client.cert, "without its key", cert=client.cert)
    raises_naming(client.key, "without its certificate", key=client.key)


def test_missing_key_file(client: TlsFiles, tmp_path: Path) -> None:
    missing = tmp_path / "gone.key"
    raises_naming(missing, "does not exist", cert=client.cert, key=missing)


def test_expired_client_certificate_is_loaded_with_a_warning(
    ca: TlsFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    old = issue_certificate(
        ca,
        tmp_path,
        "old",
        not_before=now - timedelta(days=10),
        not_after=now - timedelta(days=1),
    )
    with caplog.at_level(logging.WARNING, logger="relay.certs"):
        client_context(ca=ca.ca, cert=old.cert, key=old.key)
    assert f"certificate file {old.cert} expired" in caplog.text


# ---- `relay certs check` ----------------------------------------------------------------


def test_check_good_set(ca: TlsFiles, client: TlsFiles) -> None:
    found = levels(check_files(ca=ca.ca, cert=client.cert, key=client.key, now=NOW))
    assert found["error"] == []
    assert found["warning"] == []
    ok = " | ".join(found["ok"])
    assert f"key file {client.key} matches certificate {client.cert}" in ok
    assert f"certificate file {client.cert} chains to CA file {ca.ca}" in ok
    assert "valid until" in ok


def test_check_mismatched_key(ca: TlsFiles, client: TlsFiles, tmp_path: Path) -> None:
    other = issue_certificate(ca, tmp_path / "other", "other", now=NOW)
    findings = check_files(ca=ca.ca, cert=client.cert, key=other.key, now=NOW)
    errors = [f for f in findings if f.level == "error"]
    assert [f.path for f in errors] == [other.key]
    assert "does not match" in errors[0].message


def test_check_expired_and_not_yet_valid(ca: TlsFiles, client: TlsFiles) -> None:
    later = NOW + timedelta(days=400)
    errors = levels(check_files(ca=ca.ca, cert=client.cert, key=client.key, now=later))["error"]
    assert any(f"certificate file {client.cert}" in m and "expired on" in m for m in errors)
    assert any(f"CA file {ca.ca}" in m and "expired on" in m for m in errors)
    earlier = NOW - timedelta(days=1)
    errors = levels(check_files(ca=ca.ca, cert=client.cert, key=client.key, now=earlier))["error"]
    assert any("not valid before" in m and "clock" in m for m in errors)


def test_check_expiring_soon(ca: TlsFiles, client: TlsFiles) -> None:
    soon = NOW + timedelta(days=350)
    found = levels(check_files(ca=ca.ca, cert=client.cert, key=client.key, now=soon))
    assert found["error"] == []
    assert any(
        f"certificate file {client.cert}" in m and "in 15 day" in m for m in found["warning"]
    )


def test_check_wrong_ca_of_another_name(client: TlsFiles, tmp_path: Path) -> None:
    other = make_test_ca(tmp_path / "other", name="another CA", now=NOW)
    findings = check_files(ca=other.ca, cert=client.cert, key=client.key, now=NOW)
    chain = [f for f in findings if "not in CA file" in f.message]
    assert [(f.level, f.path) for f in chain] == [("warning", client.cert)]


def test_check_wrong_ca_of_the_same_name(client: TlsFiles, tmp_path: Path) -> None:
    # make_test_ca's default name: a different CA that looks the same by name.
    impostor = make_test_ca(tmp_path / "other", now=NOW)
    errors = levels(check_files(ca=impostor.ca, cert=client.cert, key=client.key, now=NOW))
    assert any("signature does not verify" in m and str(client.cert) in m for m in errors["error"])


def test_check_world_readable_key(ca: TlsFiles, client: TlsFiles) -> None:
    client.key.chmod(0o644)
    findings = check_files(ca=ca.ca, cert=client.cert, key=client.key, now=NOW)
    errors = [f for f in findings if f.level == "error"]
    assert [f.path for f in errors] == [client.key]
    assert f"run chmod 600 {client.key}" in errors[0].message
    # The other checks still ran.
    assert any("matches certificate" in f.message for f in findings)


def test_check_missing_files_are_findings(tmp_path: Path) -> None:
    findings = check_files(ca=tmp_path / "a.pem", cert=tmp_path / "b.pem", key=tmp_path / "c.key")
    errors = [f for f in findings if f.level == "error"]
    assert [f.path for f in errors] == [tmp_path / "a.pem", tmp_path / "b.pem", tmp_path / "c.key"]
    assert all("does not exist" in f.message for f in errors)


def test_check_server_only_certificate(ca: TlsFiles, tmp_path: Path) -> None:
    server = issue_certificate(ca, tmp_path, "srv", client=False, now=NOW)
    warnings = levels(check_files(ca=ca.ca, cert=server.cert, key=server.key, now=NOW))["warning"]
    assert any("not marked for client authentication" in m for m in warnings)


def test_check_without_ca_uses_the_system_store(client: TlsFiles) -> None:
    findings = check_files(ca=None, cert=client.cert, key=client.key, now=NOW)
    assert not [f for f in findings if f.level == "error"]
    assert any("system's CA store" in f.message for f in findings)


def test_check_chain_through_an_intermediate(ca: TlsFiles, tmp_path: Path) -> None:
    """A platform bundle: leaf + intermediate in the cert file, root in the CA file."""
    root_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    root_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuing CA")])
    mid = (
        x509.CertificateBuilder()
        .subject_name(mid_name)
        .issuer_name(root_cert.subject)
        .public_key(mid_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=300))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "customer")]))
        .issuer_name(mid_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=200))
        .sign(mid_key, hashes.SHA256())
    )
    cert_path = tmp_path / "bundle.pem"
    cert_path.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + mid.public_bytes(serialization.Encoding.PEM)
    )
    key_path = tmp_path / "customer.key"
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    found = levels(check_files(ca=ca.ca, cert=cert_path, key=key_path, now=NOW))
    assert found["error"] == []
    assert any("'CN=customer' issued by 'CN=issuing CA' issued by" in m for m in found["ok"])
    # Without the intermediate the chain is broken.
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    found = levels(check_files(ca=ca.ca, cert=cert_path, key=key_path, now=NOW))
    assert any("issued by CN=issuing CA, which is not in CA file" in m for m in found["warning"])
    # And the relay can load it (mutual TLS with a chain file).
    client_context(ca=ca.ca, cert=cert_path, key=key_path)
