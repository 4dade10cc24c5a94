"""relay.certwatch: the daily expiry warning (fixed clocks), and reloading real files."""

from __future__ import annotations

import itertools
import logging
import shutil
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.certs import TlsFiles, client_context, issue_certificate, make_test_ca
from relay.certwatch import (
    DAY,
    WARN_BEFORE,
    ClientTls,
    ExpiryWatch,
    expiry_check,
    register_expiry_metric,
)
from relay.metrics import Registry
from relay.testing.prometheus import parse_metrics

# 2026-01-01T00:00:00Z: every time here is fixed, none is read from the machine.
T0 = 1767225600.0
METRIC = "flowrelay_tls_client_certificate_expiry_timestamp_seconds"


def watch(days_left: float, warned_at: float | None = None) -> ExpiryWatch:
    return ExpiryWatch(path="/c/client.pem", not_after=T0 + days_left * DAY, warned_at=warned_at)


def test_no_warning_with_30_days_or_more_left() -> None:
    assert expiry_check(watch(30), T0) == (watch(30), None)
    assert expiry_check(watch(400), T0)[1] is None


def test_a_warning_under_30_days_names_the_file_the_day_and_what_to_do() -> None:
    state, warning = expiry_check(watch(29.5), T0)
    assert state.warned_at == T0
    assert warning == (
        "client certificate /c/client.pem expires on 2026-01-30 12:00 UTC, in 29 day(s); "
        "renew it with the platform and reload the relay (SIGHUP, systemctl reload flowrelay)"
    )


def test_the_warning_is_repeated_daily_not_more_often() -> None:
    state, first = expiry_check(watch(10), T0)
    assert first is not None
    state, again = expiry_check(state, T0 + DAY - 1)
    assert again is None
    state, daily = expiry_check(state, T0 + DAY)
    assert daily is not None
    assert "in 9 day(s)" in daily
    assert state.warned_at == T0 + DAY


def test_an_expired_certificate_says_it_expired() -> None:
    _, warning = expiry_check(watch(-2), T0)
    assert warning is not None
    assert warning.startswith("client certificate /c/client.pem expired on 2025-12-30 00:00 UTC")


@given(
    days_left=st.floats(min_value=-60, max_value=400),
    steps=st.lists(st.floats(min_value=0, max_value=3 * DAY), max_size=60),
)
def test_warnings_come_only_under_30_days_and_at_least_a_day_apart(
    days_left: float, steps: list[float]
) -> None:
    state = watch(days_left)
    now = T0
    warned: list[float] = []
    for step in [0.0, *steps]:
        now += step
        state, warning = expiry_check(state, now)
        if warning is not None:
            assert state.not_after - now < WARN_BEFORE
            warned.append(now)
    assert all(b - a >= DAY for a, b in itertools.pairwise(warned))
    # Under 30 days, the first check warns.
    if state.not_after - T0 < WARN_BEFORE:
        assert warned[:1] == [T0]


# ---- real files ---------------------------------------------------------------------------


class Forwarder:
    """Stands in for the forwarder's use_ssl_context: records what it was handed."""

    def __init__(self) -> None:
        self.contexts: list[ssl.SSLContext | None] = []

    def use(self, context: ssl.SSLContext | None) -> None:
        self.contexts.append(context)


@pytest.fixture
def ca(tmp_path: Path) -> TlsFiles:
    return make_test_ca(tmp_path / "ca", now=datetime.fromtimestamp(T0, UTC))


def client(ca: TlsFiles, directory: Path, name: str, days: int) -> TlsFiles:
    return issue_certificate(
        ca,
        directory,
        name,
        hosts=(),
        server=False,
        now=datetime.fromtimestamp(T0, UTC),
        days=days,
    )


def install(files: TlsFiles, live: Path) -> None:
    shutil.copy(files.cert, live / "client.pem")
    shutil.copy(files.key, live / "client.key")
    (live / "client.key").chmod(0o600)


def live_tls(ca: TlsFiles, live: Path, forwarder: Forwarder, clock: list[float]) -> ClientTls:
    cert, key = live / "client.pem", live / "client.key"
    return ClientTls(
        load=lambda: client_context(ca=ca.ca, cert=cert, key=key),
        use=forwarder.use,
        cert=cert,
        clock=lambda: clock[0],
    )


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def test_a_good_new_set_is_taken_and_its_expiry_watched(
    tmp_path: Path, ca: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.certwatch")
    live = tmp_path / "live"
    live.mkdir()
    install(client(ca, tmp_path / "a", "client-a", days=365), live)
    forwarder, clock = Forwarder(), [T0]
    tls = live_tls(ca, live, forwarder, clock)
    assert tls.not_after == pytest.approx(T0 + 365 * DAY)
    tls.tick()
    assert events(caplog, "tls_certificate_expiring") == []

    install(client(ca, tmp_path / "b", "client-b", days=20), live)
    assert tls.reload()
    assert len(forwarder.contexts) == 1
    assert isinstance(forwarder.contexts[0], ssl.SSLContext)
    assert tls.not_after == pytest.approx(T0 + 20 * DAY)
    # The new certificate has 20 days left: the reload warns at once, then once a day.
    [warning] = events(caplog, "tls_certificate_expiring")
    assert "in 20 day(s)" in warning.getMessage()
    tls.tick()
    assert len(events(caplog, "tls_certificate_expiring")) == 1
    clock[0] += DAY
    tls.tick()
    assert len(events(caplog, "tls_certificate_expiring")) == 2
    assert len(events(caplog, "tls_reloaded")) == 1


def test_a_key_that_does_not_match_is_refused_naming_the_file_and_the_old_set_kept(
    tmp_path: Path, ca: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    install(client(ca, tmp_path / "a", "client-a", days=365), live)
    forwarder, clock = Forwarder(), [T0]
    tls = live_tls(ca, live, forwarder, clock)
    other = client(ca, tmp_path / "c", "client-c", days=10)
    shutil.copy(other.key, live / "client.key")

    assert not tls.reload()
    assert forwarder.contexts == []
    assert tls.not_after == pytest.approx(T0 + 365 * DAY)
    [refused] = events(caplog, "tls_reload_refused")
    assert refused.getMessage() == (
        "certificate reload refused, the certificates in use are kept: key file "
        f"{live / 'client.key'} does not match certificate file {live / 'client.pem'}; use "
        "the key that was generated together with this certificate's request"
    )
    assert refused.path == str(live / "client.key")  # type: ignore[attr-defined]


def test_a_missing_file_is_refused_naming_it(
    tmp_path: Path, ca: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    install(client(ca, tmp_path / "a", "client-a", days=365), live)
    tls = live_tls(ca, live, Forwarder(), [T0])
    (live / "client.pem").unlink()
    assert not tls.reload()
    [refused] = events(caplog, "tls_reload_refused")
    assert f"certificate file {live / 'client.pem'} does not exist" in refused.getMessage()


def test_the_expiry_metric_is_the_certificates_not_after(tmp_path: Path, ca: TlsFiles) -> None:
    live = tmp_path / "live"
    live.mkdir()
    install(client(ca, tmp_path / "a", "client-a", days=365), live)
    registry = Registry()
    register_expiry_metric(registry, live_tls(ca, live, Forwarder(), [T0]))
    expected = int((datetime.fromtimestamp(T0, UTC) + timedelta(days=365)).timestamp())
    assert parse_metrics(registry.render()).value(METRIC) == expected


def test_without_a_client_certificate_the_expiry_metric_is_absent(ca: TlsFiles) -> None:
    registry = Registry()
    tls = ClientTls(
        load=lambda: client_context(ca=ca.ca, cert=None, key=None), use=Forwarder().use, cert=None
    )
    register_expiry_metric(registry, tls)
    assert tls.not_after is None
    assert METRIC not in registry.render()
