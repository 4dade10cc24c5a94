"""``log.format = "auto"`` (the default) against a real ``relay run``: text when stderr is a
terminal (a pty here), JSON when it is a pipe; an explicit format wins over both."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.relayproc import LOOPBACK, REPO, tls_args

from relay.certs import TlsFiles
from relay.logs import resolve_format
from relay.testing.ports import free_port

TEXT_STARTED = " info [started] relay started listen=127.0.0.1:"


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert resolve_format("auto", terminal=True) == "text"
    assert resolve_format("auto", terminal=False) == "json"
    for fmt in ("json", "text"):
        assert resolve_format(fmt, terminal=True) == fmt
        assert resolve_format(fmt, terminal=False) == fmt


def run_args(tmp_path: Path, tls_ca: TlsFiles, tls_client: TlsFiles) -> list[str]:
    # An endpoint nobody listens on: the relay starts, logs, and retries it meanwhile.
    return [
        sys.executable, "-m", "relay", "run",
        "--listen", f"{LOOPBACK}:0", "--endpoint", f"{LOOPBACK}:{free_port()}",
        "--spool", str(tmp_path / "spool"), "--metrics", "off",
        *tls_args(ca=tls_ca.ca, cert=tls_client.cert, key=tls_client.key),
    ]  # fmt: skip


def read_until(fd: int, marker: bytes, *, timeout: float = 15.0) -> bytes:
    """What ``fd`` gives until ``marker`` has appeared and its line ended."""
    data = b""
    deadline = time.monotonic() + timeout
    while not (marker in data and b"\n" in data[data.index(marker) :]):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {marker!r} within {timeout} s: {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side closed
                chunk = b""
            if not chunk:
                raise EOFError(f"output ended before {marker!r}: {data!r}")
            data += chunk
    return data


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def started_on_a_pty(argv: list[str]) -> str:
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env
        )
    finally:
        os.close(slave)
    try:
        text = read_until(master, b"relay started").decode()
        assert stop(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return text


def started_on_a_pipe(argv: list[str], marker: bytes = b'"started"') -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    try:
        assert process.stderr is not None
        text = read_until(process.stderr.fileno(), marker).decode()
        assert stop(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
    return text


def test_by_default_a_terminal_gets_text(
    tmp_path: Path, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    text = started_on_a_pty(run_args(tmp_path, tls_ca, tls_client))
    [line] = [x for x in text.splitlines() if "relay started" in x]
    assert TEXT_STARTED in line
    assert not line.lstrip().startswith("{")


def test_by_default_a_pipe_gets_json(
    tmp_path: Path, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    text = started_on_a_pipe(run_args(tmp_path, tls_ca, tls_client))
    objects = [json.loads(x) for x in text.splitlines() if x.strip()]
    [started] = [o for o in objects if o.get("event") == "started"]
    assert started["message"] == "relay started"
    assert started["level"] == "INFO"


@pytest.mark.parametrize(("flag", "json_expected"), [("json", True), ("text", False)])
def test_an_explicit_format_wins_on_a_terminal(
    tmp_path: Path, tls_ca: TlsFiles, tls_client: TlsFiles, flag: str, json_expected: bool
) -> None:
    argv = [*run_args(tmp_path, tls_ca, tls_client), "--log-format", flag]
    text = started_on_a_pty(argv)
    [line] = [x for x in text.splitlines() if "relay started" in x]
    assert line.lstrip().startswith("{") is json_expected


def test_an_explicit_text_format_in_the_file_wins_on_a_pipe(
    tmp_path: Path, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[log]\nformat = "text"\n')
    argv = [*run_args(tmp_path, tls_ca, tls_client), "-c", str(config)]
    text = started_on_a_pipe(argv, b"relay started")
    [line] = [x for x in text.splitlines() if "relay started" in x]
    assert TEXT_STARTED in line
