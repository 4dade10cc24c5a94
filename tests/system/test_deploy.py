"""deploy/: what an operator installs must agree with the code it deploys.

The example config is loaded by the real loader and must name every key with its default; the
systemd unit, Dockerfile, compose file and sysctl snippet are checked for the settings the
README promises; and the unit's own command line, with the example config, is run against a
real TLS receiver, health-checked with the Dockerfile's HEALTHCHECK command and drained with
SIGTERM within the unit's stop timeout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

from relay.certs import TlsFiles, server_context
from relay.cli import build_parser
from relay.config import ENDPOINT_KEYS, SCHEMA, load, with_endpoints
from relay.errors import UsageError
from relay.testing.ports import free_port
from relay.testing.sink import SyslogSink

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLE = DEPLOY / "relay.example.toml"
UNIT = DEPLOY / "flowrelay.service"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
SYSCTL = DEPLOY / "99-flowrelay.conf"
# What $CREDENTIALS_DIRECTORY (LoadCredential='s copies) is for this unit.
CREDENTIALS = "/run/credentials/flowrelay.service"
DEFAULTS = load({}, environ={})


# ---- the example configuration ----------------------------------------------------------


def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text())


def test_example_config_loads() -> None:
    config = load(example(), environ={})
    [endpoint] = config.endpoints
    assert (endpoint.host, endpoint.port) == ("logs.example.net", 6514)
    for path in (endpoint.ca, endpoint.cert, endpoint.key):
        assert path is not None
        assert path.parent == Path("/etc/flowrelay/certs")
    # Every key is set to its default, so apart from the endpoint the file changes nothing.
    assert config == with_endpoints(DEFAULTS, config.endpoints)


def test_example_config_sets_every_key_to_its_default() -> None:
    doc = example()
    for section, keys in SCHEMA.items():
        assert section in doc, f"[{section}] missing from {EXAMPLE.name}"
        for key, default in keys.items():
            assert key in doc[section], f"{section}.{key} missing from {EXAMPLE.name}"
            assert doc[section][key] == default, f"{section}.{key} is not set to its default"
    [endpoint] = doc["endpoint"]
    assert set(endpoint) == ENDPOINT_KEYS


def test_example_config_explains_every_key() -> None:
    """Each key line follows a comment block that gives its default (or says it is required)."""
    lines = EXAMPLE.read_text().splitlines()
    keys_seen = set()
    for number, line in enumerate(lines):
        match = re.match(r"(\w+) = ", line)
        if not match:
            continue
        keys_seen.add(match.group(1))
        # Keys documented together (backoff_initial and backoff_max) share one comment block.
        above = number - 1
        while above >= 0 and re.match(r"\w+ = ", lines[above]):
            above -= 1
        block = []
        while above >= 0 and lines[above].startswith("#"):
            block.append(lines[above])
            above -= 1
        text = " ".join(block)
        assert block, f"line {number + 1} ({match.group(1)}) has no comment above it"
        assert re.search(r"\b(Defaults?|Required)\b", text), (
            f"the comment above {match.group(1)} (line {number + 1}) gives no default"
        )
    every_key = {k for keys in SCHEMA.values() for k in keys} | ENDPOINT_KEYS
    assert every_key <= keys_seen


def test_example_config_commented_keys_are_real() -> None:
    """Keys shown only in comments (the second endpoint) are keys the loader accepts."""
    known = {k for keys in SCHEMA.values() for k in keys} | ENDPOINT_KEYS
    commented = re.findall(r"^# (\w+) = (.+)$", EXAMPLE.read_text(), flags=re.MULTILINE)
    assert commented
    for key, value in commented:
        assert key in known, f"commented key {key} is not a configuration key"
        tomllib.loads(f"v = {value}")


# ---- the systemd unit --------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    """Every KEY=VALUE of the unit, all values of repeated keys, in order."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", text)
    assert match, f"unsupported time span {text!r}"
    return float(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


def exec_start() -> list[str]:
    [command] = unit_settings()["ExecStart"]
    return shlex.split(command.replace("${CREDENTIALS_DIRECTORY}", CREDENTIALS))


HARDENING = {
    "DynamicUser": "yes",
    "StateDirectory": "flowrelay",
    "ConfigurationDirectory": "flowrelay",
    # Every exit not asked for by `systemctl stop` is restarted: on-failure would leave the
    # relay down after a stray SIGTERM/SIGHUP or exit 0 (systemd counts those as clean).
    "Restart": "always",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes",
    "RestrictNamespaces": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "UMask": "0077",
}


@pytest.mark.parametrize(("key", "value"), HARDENING.items())
def test_unit_sets(key: str, value: str) -> None:
    assert unit_settings().get(key) == [value]


def test_unit_is_notify_with_a_watchdog_pinged_by_the_relay() -> None:
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    [watchdog] = settings["WatchdogSec"]
    # Pinged every half of it: long enough that a busy loop is not mistaken for a hung one.
    assert seconds(watchdog) >= 10
    # The notify socket is AF_UNIX: the unit must allow it.
    [families] = settings["RestrictAddressFamilies"]
    assert "AF_UNIX" in families.split()


def test_unit_reloads_with_sighup_to_the_main_process() -> None:
    # The supervisor passes SIGHUP on to its workers; the relay's own handler reloads.
    assert unit_settings()["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_unit_restricts_sockets_and_syscalls() -> None:
    settings = unit_settings()
    [families] = settings["RestrictAddressFamilies"]
    assert set(families.split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    filters = " ".join(settings["SystemCallFilter"]).split()
    assert "@system-service" in filters


def test_unit_does_not_restart_on_config_errors() -> None:
    [codes] = unit_settings()["RestartPreventExitStatus"]
    assert "78" in codes.split()


def test_unit_limits() -> None:
    settings = unit_settings()
    [nofile] = settings["LimitNOFILE"]
    assert int(nofile) >= 4096
    # systemd must not SIGKILL the relay while it drains.
    [stop] = settings["TimeoutStopSec"]
    assert seconds(stop) >= DEFAULTS.forward.drain_timeout + 10


def test_unit_command_line_is_the_relays() -> None:
    argv = exec_start()
    assert argv[:4] == ["/usr/local/bin/relay", "run", "-c", "/etc/flowrelay/relay.toml"]
    args = build_parser().parse_args(argv[1:])
    # Each credential the command uses is loaded by the unit, from /etc/flowrelay/certs.
    loaded = dict(c.split(":", 1) for c in unit_settings()["LoadCredential"])
    for flag in ("ca", "cert", "key"):
        path = Path(getattr(args, flag))
        assert path.parent == Path(CREDENTIALS)
        assert loaded[path.name] == f"/etc/flowrelay/certs/{path.name}"


def test_unknown_flag_would_be_refused() -> None:
    """The check above can fail: the parser refuses what the relay does not know."""
    with pytest.raises(UsageError):
        build_parser().parse_args(["run", "--no-such-flag"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists; point it at one that does.
    relay = shutil.which("relay") or sys.executable
    text = UNIT.read_text().replace("/usr/local/bin/relay", relay)
    unit = tmp_path / "flowrelay.service"
    unit.write_text(text)
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSistem=strict"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit), str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [line for line in done.stderr.splitlines() if str(tmp_path) in line]
    # The deliberately misspelt copy proves that complaints are seen at all.
    assert any("broken.service" in line for line in complaints), done.stderr
    assert not [line for line in complaints if "/flowrelay.service" in line], done.stderr


# ---- the container -----------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (NAME, arguments), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, rest = line.partition(" ")
            found.append((name.upper(), rest.strip()))
    return found


def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def test_dockerfile_runs_as_non_root() -> None:
    steps = dockerfile()
    runtime = steps[max(i for i, (name, _) in enumerate(steps) if name == "FROM") :]
    users = [args for name, args in runtime if name == "USER"]
    assert users, "the runtime stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"
    last_user = max(i for i, (name, _) in enumerate(runtime) if name == "USER")
    entry = max(i for i, (name, _) in enumerate(runtime) if name == "ENTRYPOINT")
    assert last_user < entry


def test_dockerfile_base_ports_volumes_entrypoint() -> None:
    steps = dockerfile()
    assert all(args.split()[0] == "python:3.11-slim" for name, args in steps if name == "FROM")
    exposed = {p for name, args in steps if name == "EXPOSE" for p in args.split()}
    assert {"12999/udp", "9712/tcp"} <= exposed
    [volumes] = [json.loads(args) for name, args in steps if name == "VOLUME"]
    # The spool the example config (and the default) uses lies on a volume.
    spool = load(example(), environ={}).spool.directory
    assert any(spool.is_relative_to(v) for v in volumes)
    assert "/etc/flowrelay/certs" in volumes
    [entrypoint] = [json.loads(args) for name, args in steps if name == "ENTRYPOINT"]
    assert entrypoint[:4] == ["relay", "run", "-c", "/etc/flowrelay/relay.toml"]
    build_parser().parse_args(entrypoint[1:])


def healthcheck_command() -> list[str]:
    [check] = [args for name, args in dockerfile() if name == "HEALTHCHECK"]
    assert "CMD [" in check
    command: list[str] = json.loads(check[check.index("CMD [") + 4 :])
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


def healthcheck_url(metrics: str) -> str:
    """The image's health check URL, moved to the metrics address ``metrics``."""
    env = dict(
        pair.split("=", 1) for name, args in dockerfile() if name == "ENV" for pair in args.split()
    )
    url = urlsplit(env["FLOWRELAY_HEALTHZ"])
    # The image's default matches the relay's default metrics address.
    assert url.netloc == str(DEFAULTS.metrics.address)
    assert url.path == "/healthz"
    return urlunsplit(url._replace(netloc=metrics))


def run_healthcheck(url: str) -> int:
    env = {**os.environ, "FLOWRELAY_HEALTHZ": url}
    done = subprocess.run(healthcheck_command(), env=env, capture_output=True, timeout=30)
    return done.returncode


def test_healthcheck_fails_without_a_relay() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        assert run_healthcheck(healthcheck_url(f"127.0.0.1:{port}")) != 0


def compose_service() -> dict[str, str]:
    """services.relay's scalar settings (a two-level YAML reading: enough for this file)."""
    settings: dict[str, str] = {}
    section: list[str] = []
    for raw in COMPOSE.read_text().splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        if indent == 0:
            section = [key]
        elif indent == 2:
            section = [*section[:1], key]
        elif indent == 4 and section == ["services", "relay"]:
            settings[key] = value.strip().strip("\"'")
    return settings


def test_compose_uses_host_networking() -> None:
    relay = compose_service()
    assert relay["network_mode"] == "host"
    # Bridge-only settings would be ignored or refused with host networking.
    assert "ports" not in relay
    assert "networks" not in relay


def test_compose_restart_and_stop() -> None:
    relay = compose_service()
    # Not "always" (restarts even after `docker stop` at the next daemon start) and not
    # "on-failure" (see the comment in compose.yaml).
    assert relay["restart"] == "unless-stopped"
    assert seconds(relay["stop_grace_period"]) >= DEFAULTS.forward.drain_timeout + 10


def test_compose_mounts_spool_and_certs() -> None:
    text = COMPOSE.read_text()
    assert re.search(r"^\s+- spool:/var/lib/flowrelay$", text, flags=re.MULTILINE)
    assert re.search(r":/etc/flowrelay/certs:ro$", text, flags=re.MULTILINE)


# ---- the sysctl snippet ------------------------------------------------------------------


def test_sysctl_allows_the_default_receive_buffer() -> None:
    values = {}
    for line in SYSCTL.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            values[key.strip()] = int(value)
    assert values["net.core.rmem_max"] >= DEFAULTS.listen.receive_buffer
    for key in values:
        assert Path("/proc/sys", *key.split(".")).exists(), f"{key} is not a kernel setting"


# ---- the unit's command line, run for real -----------------------------------------------


async def test_unit_command_runs_passes_healthcheck_and_drains(
    tmp_path: Path, tls_ca: TlsFiles, tls_server: TlsFiles, tls_client: TlsFiles
) -> None:
    # What LoadCredential= gives the service: copies, mode 0400, in the credentials directory.
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    for name, source in (("ca.pem", tls_ca.ca), ("client.pem", tls_client.cert)):
        (credentials / name).write_bytes(source.read_bytes())
    (credentials / "client.key").write_bytes(tls_client.key.read_bytes())
    for file in credentials.iterdir():
        file.chmod(0o400)

    udp, metrics = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_STREAM)
    context = server_context(cert=tls_server.cert, key=tls_server.key, client_ca=tls_ca.ca)
    sink = SyslogSink(ssl_context=context)
    argv = [
        a.replace(CREDENTIALS, str(credentials)).replace("/etc/flowrelay/relay.toml", str(EXAMPLE))
        for a in exec_start()[1:]
    ]
    stop_timeout = seconds(unit_settings()["TimeoutStopSec"][0])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.run)
        # Loopback instead of the example's wildcard listeners and placeholder endpoint.
        argv += [
            "--endpoint", f"127.0.0.1:{port}", "--server-name", "localhost",
            "--listen", f"127.0.0.1:{udp}", "--metrics", f"127.0.0.1:{metrics}",
            "--spool", str(tmp_path / "spool"),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
        with (tmp_path / "relay.log").open("wb") as log:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "relay", *argv], stdout=log, stderr=log, env=env
            )
            try:
                url = healthcheck_url(f"127.0.0.1:{metrics}")
                for _ in range(100):
                    if await trio.to_thread.run_sync(run_healthcheck, url) == 0:
                        break
                    assert process.poll() is None, (tmp_path / "relay.log").read_text()
                    await trio.sleep(0.1)
                else:
                    pytest.fail("the Dockerfile's health check never passed")
                await trio.run_process(
                    [sys.executable, "-m", "relay", "send-test", "--to", f"127.0.0.1:{udp}",
                     "--count", "4", "--records", "5", "--rate", "0"],
                )  # fmt: skip
                await sink.wait_lines(20, timeout=20)
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(stop_timeout):
                    code = await process.wait()
            finally:
                if process.poll() is None:
                    process.kill()
                    await process.wait()
        sink_lines = list(sink.lines)
        await sink.stop(grace=1)
    log_text = (tmp_path / "relay.log").read_text()
    assert code == 0, log_text
    assert len(sink_lines) == 20
    assert all(b" netstat.netflow.lt: {" in line for line in sink_lines)
    assert await trio.to_thread.run_sync(run_healthcheck, url) != 0
