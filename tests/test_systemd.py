"""relay.systemd: the notify messages, the environment it reads, and the sender on a real
AF_UNIX datagram socket (a path and the abstract namespace)."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.systemd import (
    READY,
    STOPPING,
    WATCHDOG,
    Notifier,
    NotifyError,
    message,
    socket_address,
    status,
    watchdog_period,
    watchdog_timeout,
    without_notify,
)

KEYS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=12)
VALUES = st.text(st.characters(exclude_characters="\n", exclude_categories=["Cs"]))


def test_the_fixed_messages_are_what_sd_notify_sends() -> None:
    assert READY == b"READY=1\n"
    assert STOPPING == b"STOPPING=1\n"
    assert WATCHDOG == b"WATCHDOG=1\n"
    assert message({"READY": "1", "STATUS": "ok"}) == b"READY=1\nSTATUS=ok\n"


@given(st.dictionaries(KEYS, VALUES, min_size=1))
def test_any_fields_come_back_from_the_datagram_line_by_line(fields: dict[str, str]) -> None:
    lines = message(fields).decode().split("\n")
    assert lines[-1] == ""
    assert dict(line.split("=", 1) for line in lines[:-1]) == fields


@pytest.mark.parametrize(
    "fields", [{}, {"ready": "1"}, {"": "1"}, {"READY=": "1"}, {"STATUS": "two\nlines"}]
)
def test_what_the_protocol_cannot_carry_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(NotifyError):
        message(fields)


def test_the_status_is_folded_onto_one_line() -> None:
    assert status("received=3\n  pending=0\t") == b"STATUS=received=3 pending=0\n"


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@flowrelay/notify", b"\0flowrelay/notify"),
        ("", None),
        (None, None),
        ("relative/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_the_notify_socket_is_a_path_or_an_abstract_name(
    value: str | None, address: str | bytes | None
) -> None:
    assert socket_address(value) == address


def test_the_watchdog_is_pinged_at_half_its_timeout() -> None:
    env = {"WATCHDOG_USEC": "30000000"}
    assert watchdog_period(env, 7) == 15.0
    assert watchdog_timeout(env, 7) == 30.0
    assert watchdog_period({**env, "WATCHDOG_PID": "7"}, 7) == 15.0


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "soon"},
        # Meant for another process (the parent that exec'd us, say).
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"},
    ],
)
def test_no_watchdog_unless_asked_of_this_process(env: dict[str, str]) -> None:
    assert watchdog_period(env, 7) is None
    assert watchdog_timeout(env, 7) is None


def test_children_get_no_notify_environment() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/bin"}
    assert without_notify(env) == {"PATH": "/bin"}


# ---- the sender, on a real socket ---------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # sun_path holds 108 bytes: pytest's tmp_path for a test named by a sentence can be longer.
    with tempfile.TemporaryDirectory(prefix="fr-", dir="/tmp") as name:
        yield Path(name)


def receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_the_notifier_sends_one_datagram_per_message_to_a_path(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    with receiver(path) as sock:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
        assert notifier.enabled
        assert notifier.send(READY + status("up"))
        assert notifier.send(WATCHDOG)
        notifier.close()
        assert sock.recv(4096) == b"READY=1\nSTATUS=up\n"
        assert sock.recv(4096) == b"WATCHDOG=1\n"


def test_the_notifier_reaches_an_abstract_socket() -> None:
    name = f"flowrelay-test-{os.getpid()}-{id(object())}"
    with receiver(b"\0" + name.encode()) as sock:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send(STOPPING)
        notifier.close()
        assert sock.recv(4096) == b"STOPPING=1\n"


def test_without_a_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_period is None
    assert not notifier.send(READY)


def test_a_vanished_socket_is_logged_once_and_never_raises(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.systemd")
    path = str(short_dir / "gone")
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert not notifier.send(READY)
    assert not notifier.send(WATCHDOG)
    failed = [r for r in caplog.records if getattr(r, "event", None) == "systemd_notify_failed"]
    assert len(failed) == 1
    with receiver(path) as sock:
        assert notifier.send(WATCHDOG)
        assert sock.recv(4096) == b"WATCHDOG=1\n"
    assert any(getattr(r, "event", None) == "systemd_notify_restored" for r in caplog.records)
    notifier.close()
