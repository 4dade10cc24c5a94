"""Configuration: ``relay.config.load`` (defaults, overrides, sizes, STATE_DIRECTORY), and every
configuration error ``relay run`` can meet, as a user meets it: ``python -m relay run ...`` in a
subprocess ends with exit code 78 (EX_CONFIG, so systemd does not restart it in a loop) and one
sentence on stderr that names the key or the file, never a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.relayproc import REPO

from relay.addresses import HostPort
from relay.certs import TlsFiles, issue_certificate
from relay.config import DEFAULT_ALLOW, SCHEMA, Overrides, load, to_document
from relay.errors import ConfigError
from relay.framing import Framing
from relay.logs import LogLevel
from relay.spool import FsyncPolicy, Overflow, Spool

EX_CONFIG = 78
EX_USAGE = 2

# ---- load(): defaults, overrides, sizes, environment -----------------------------------------


def test_defaults_when_the_file_is_empty() -> None:
    config = load({}, environ={})
    assert config.listen.addresses == (
        HostPort(host="0.0.0.0", port=12999),
        HostPort(host="::", port=12999),
    )
    assert config.listen.allow == tuple(ipaddress.ip_network(c) for c in DEFAULT_ALLOW)
    for network in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
        assert ipaddress.ip_network(network) in config.listen.allow
    assert ipaddress.ip_network("100.64.0.0/10") in config.listen.allow
    assert ipaddress.ip_network("fc00::/7") in config.listen.allow
    assert config.metrics.address == HostPort(host="127.0.0.1", port=9712)
    assert config.output.tag == "netstat.netflow.lt"
    assert config.output.pri == 14  # user.info
    assert config.output.header == "rfc3164"
    assert config.output.body == "json"
    assert config.framing == "newline"
    assert config.spool.fsync == "interval"
    assert config.spool.fsync_interval == 1.0
    assert config.spool.overflow == "drop-oldest"
    assert config.spool.directory == Path("/var/lib/flowrelay/spool")
    assert config.spool.max_bytes == 1 << 30
    assert config.listen.receive_buffer == 32 << 20
    assert config.tls.tls is True
    assert config.tls.verify is True
    assert config.log.format == "auto"
    assert config.endpoints == ()


def test_every_schema_key_is_accepted_with_its_default() -> None:
    """The documented defaults, written out in a file, load to the same configuration."""
    assert load(SCHEMA, environ={}) == load({}, environ={})


def test_file_values_are_used() -> None:
    config = load(
        {
            "listen": {"addresses": ["127.0.0.1:2055"], "allow": ["192.0.2.0/24"], "workers": 2},
            "output": {"header": "rfc5424", "body": "kv", "tag": "nf", "facility": "local0"},
            "spool": {"directory": "/srv/spool", "fsync": "always", "overflow": "drop-newest"},
            "forward": {"drain_timeout": 3, "tls": True},
            "metrics": {"address": "off"},
            "log": {"format": "text", "level": "DEBUG"},
            "endpoint": [
                {"host": "logs.example.net", "port": 443, "server_name": "collector"},
                {"host": "backup.example.net", "port": 6514},
            ],
        },
        environ={},
    )
    assert config.listen.addresses == (HostPort(host="127.0.0.1", port=2055),)
    assert config.listen.allow == (ipaddress.ip_network("192.0.2.0/24"),)
    assert config.listen.workers == 2
    assert (config.output.header, config.output.body, config.output.tag) == ("rfc5424", "kv", "nf")
    assert config.output.pri == 16 * 8 + 6  # local0.info
    assert config.spool.directory == Path("/srv/spool")
    assert (config.spool.fsync, config.spool.overflow) == ("always", "drop-newest")
    assert config.forward.drain_timeout == 3.0
    assert config.metrics.address is None
    assert (config.log.format, config.log.level) == ("text", "debug")
    assert [(e.host, e.port, e.server_name) for e in config.endpoints] == [
        ("logs.example.net", 443, "collector"),
        ("backup.example.net", 6514, None),
    ]


@pytest.mark.parametrize(
    ("document", "overrides", "environ"),
    [
        ({}, Overrides(), {}),
        ({}, Overrides(), {"STATE_DIRECTORY": "/run/state:/other"}),
        (
            {
                "listen": {"receive_buffer": "8MiB", "workers": 4},
                "output": {"header": "rfc5424", "body": "kv", "tag": "nf"},
                "spool": {"max_size": "2GiB", "overflow": "drop-newest", "fsync_interval": 0.25},
                "forward": {"tls": False, "verify": False, "drain_timeout": 0},
                "log": {"level": "warning", "stats_interval": 5},
                "endpoint": [
                    {"host": "logs.example.net", "port": 443, "server_name": "collector"},
                    {"host": "::1", "port": 6514, "ca": "/c/ca.pem"},
                ],
            },
            Overrides(
                listen=["[::]:0", "127.0.0.1:2055"], allow=["10.1.0.0/16", "fd00::/8"],
                framing="octet-counting", metrics="[::1]:9000",
            ),
            {},
        ),
        (
            {"forward": {"stall_timeout": 7.5, "failover_after": 2, "drain_timeout": 0}},
            Overrides(endpoints=["e.example:1"]),
            {},
        ),
        (
            {"output": {"facility": "local7", "severity": "debug"}},
            Overrides(endpoints=["e.example:1"], cert="/a.pem", key="/a.key", metrics="off"),
            {},
        ),
    ],
)  # fmt: skip
def test_a_configuration_written_as_a_document_loads_back_to_itself(
    document: dict[str, Any], overrides: Overrides, environ: dict[str, str]
) -> None:
    """What the worker supervisor hands its workers: the resolved configuration, exactly."""
    config = load(document, overrides, environ=environ)
    written = to_document(config)
    assert load(written, environ={"STATE_DIRECTORY": "/elsewhere"}) == config
    assert json.loads(json.dumps(written)) == written


def test_flags_override_the_file() -> None:
    document = {
        "listen": {"addresses": ["127.0.0.1:2055"], "allow": ["192.0.2.0/24"]},
        "output": {"framing": "newline"},
        "spool": {"directory": "/srv/spool", "fsync": "never"},
        "metrics": {"address": "127.0.0.1:9999"},
        "log": {"format": "text"},
        "endpoint": [{"host": "file.example.net", "port": 6514, "ca": "/file/ca.pem"}],
    }
    config = load(
        document,
        Overrides(
            listen=["127.0.0.1:0", "[::1]:12999"],
            endpoints=["127.0.0.1:6514", "[::1]:6515"],
            ca="/flag/ca.pem",
            cert="/flag/c.pem",
            key="/flag/c.key",
            server_name="platform",
            spool="/flag/spool",
            fsync="always",
            metrics="off",
            allow=["127.0.0.1/32"],
            framing="octet-counting",
            log_format="json",
            workers=3,
        ),
        environ={"STATE_DIRECTORY": "/env"},
    )
    assert config.listen.addresses == (
        HostPort(host="127.0.0.1", port=0),
        HostPort(host="::1", port=12999),
    )
    assert [(e.host, e.port) for e in config.endpoints] == [("127.0.0.1", 6514), ("::1", 6515)]
    for endpoint in config.endpoints:
        assert endpoint.ca == Path("/flag/ca.pem")
        assert endpoint.cert == Path("/flag/c.pem")
        assert endpoint.key == Path("/flag/c.key")
        assert endpoint.server_name == "platform"
    assert config.spool.directory == Path("/flag/spool")
    assert config.spool.fsync == "always"
    assert config.metrics.address is None
    assert config.listen.allow == (ipaddress.ip_network("127.0.0.1/32"),)
    assert config.framing == "octet-counting"
    assert config.log.format == "json"
    assert config.listen.workers == 3


def test_ca_flag_applies_to_endpoints_from_the_file() -> None:
    config = load(
        {"endpoint": [{"host": "a.example", "port": 1, "ca": "/file/ca.pem"}]},
        Overrides(cert="/c.pem", key="/c.key"),
        environ={},
    )
    (endpoint,) = config.endpoints
    assert (endpoint.ca, endpoint.cert, endpoint.key) == (
        Path("/file/ca.pem"),
        Path("/c.pem"),
        Path("/c.key"),
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1048576, 1 << 20),
        ("512MiB", 512 << 20),
        ("512M", 512 << 20),
        ("2GiB", 2 << 30),
        ("1 GiB", 1 << 30),
        ("64MiB", 64 << 20),
        ("4194304B", 4 << 20),
        ("1TiB", 1 << 40),
    ],
)
def test_sizes(text: object, size: int) -> None:
    spool = {"max_size": text, "segment_size": "64KiB"}
    assert load({"spool": spool}, environ={}).spool.max_bytes == size


@pytest.mark.parametrize("text", ["64KiB", "1 GiB", 2147483647])
def test_receive_buffers_up_to_2_gib_minus_1_are_taken(text: object) -> None:
    size = load({"listen": {"receive_buffer": text}}, environ={}).listen.receive_buffer
    # The kernel takes the value (and caps what it grants at net.core.rmem_max).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


@pytest.mark.parametrize("text", ["2GiB", 2147483648, "1TiB", 1 << 70])
def test_a_receive_buffer_of_2_gib_or_more_is_a_config_error_not_a_crash(text: object) -> None:
    """It used to pass load and die in setsockopt with a TypeError at start."""
    with pytest.raises(ConfigError) as raised:
        load({"listen": {"receive_buffer": text}}, environ={})
    assert raised.value.key == "listen.receive_buffer"
    assert "listen.receive_buffer must be at most 2147483647 bytes (2 GiB - 1;" in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server_name", 5),
        ("server_name", True),
        ("server_name", ["logs.example.net"]),
        ("server_name", ".example.net"),
        ("server_name", "two words"),
        ("server_name", "a" * 64 + ".example.net"),
        ("server_name", "bad..dots"),
        ("server_name", "nul\x00.example.net"),
        ("host", "with space.example.net"),
        ("host", "-leading.example.net"),
        ("host", 6514),
        ("ca", "/etc/ca\n.pem"),
        ("key", 0),
    ],
)  # fmt: skip
def test_endpoint_values_of_the_wrong_type_or_shape_name_the_key(key: str, value: object) -> None:
    """``server_name = 5`` used to load and kill the first connection with AttributeError."""
    table = {"host": "logs.example.net", "port": 6514, key: value}
    with pytest.raises(ConfigError) as raised:
        load({"endpoint": [table]}, environ={})
    assert raised.value.key == f"endpoint[0].{key}"
    assert f"endpoint[0].{key} must " in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "name",
    [
        "logs.example.net", "logs.example.net.", "LOGS-1.example.net", "b\u00fccher.example",
        "10.0.0.1", "::1", "in_ternal",
    ],
)  # fmt: skip
def test_good_server_names_are_taken(name: str) -> None:
    table = {"host": "10.1.2.3", "port": 6514, "server_name": name}
    [endpoint] = load({"endpoint": [table]}, environ={}).endpoints
    assert endpoint.server_name == name


def test_spool_and_batch_sizes() -> None:
    config = load(
        {
            "spool": {"max_size": "512MiB", "segment_size": "8MiB"},
            "forward": {"batch_size": "1MiB"},
        },
        environ={},
    )
    assert (config.spool.max_bytes, config.spool.segment_bytes) == (512 << 20, 8 << 20)
    assert config.forward.batch_bytes == 1 << 20


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "-1MiB", "1.5GiB", True, 1.5, ""])
def test_bad_sizes_name_the_key(text: object) -> None:
    with pytest.raises(ConfigError, match=r"listen\.receive_buffer") as raised:
        load({"listen": {"receive_buffer": text}}, environ={})
    assert raised.value.key == "listen.receive_buffer"


def test_size_below_the_minimum_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"spool\.max_size must be at least"):
        load({"spool": {"max_size": "1KiB"}}, environ={})


def test_state_directory_places_the_spool() -> None:
    """Under systemd's StateDirectory= the spool goes there, unless configured explicitly."""
    env = {"STATE_DIRECTORY": "/var/lib/flowrelay:/var/lib/other"}
    assert load({}, environ=env).spool.directory == Path("/var/lib/flowrelay/spool")
    assert load({"spool": {"directory": "/srv/s"}}, environ=env).spool.directory == Path("/srv/s")
    assert load({}, Overrides(spool="/flag"), environ=env).spool.directory == Path("/flag")
    assert load({}, environ={"STATE_DIRECTORY": ""}).spool.directory == Path(
        "/var/lib/flowrelay/spool"
    )


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"spool": {"bogus": 1}}, "spool.bogus"),
        ({"bogus": {}}, "bogus"),
        ({"endpoint": [{"host": "h", "port": 1, "colour": "red"}]}, "endpoint.colour"),
        ({"spool": {"fsync": "sometimes"}}, "spool.fsync"),
        ({"spool": {"overflow": "drop-middle"}}, "spool.overflow"),
        ({"listen": {"allow": ["10.0.0.0/33"]}}, "listen.allow"),
        ({"listen": {"addresses": ["127.0.0.1"]}}, "listen.addresses"),
        ({"listen": {"workers": 0}}, "listen.workers"),
        ({"output": {"tag": "has space"}}, "output.tag"),
        ({"output": {"facility": "nobody"}}, "output.facility"),
        ({"forward": {"tls": "yes"}}, "forward.tls"),
        ({"forward": {"backoff_initial": 5, "backoff_max": 1}}, "forward.backoff_max"),
        ({"metrics": {"address": "localhost"}}, "metrics.address"),
        ({"endpoint": [{"host": "h"}]}, "endpoint[0].host"),
        ({"endpoint": [{"host": "h", "port": 70000}]}, "endpoint[0].port"),
        ({"endpoint": [{"host": "h", "port": 1, "cert": "/c.pem"}]}, "endpoint.cert"),
    ],
)
def test_load_errors_name_the_key(document: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(document, environ={})
    assert raised.value.key == key
    message = str(raised.value)
    leaf = key.partition("[")[0].rpartition(".")[2]
    assert leaf in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        (Overrides(listen=["127.0.0.1"]), "--listen"),
        (Overrides(allow=["10.0.0.0/33"]), "--allow"),
        (Overrides(workers=0), "--workers"),
        (Overrides(metrics="localhost"), "--metrics"),
        (Overrides(spool="/srv/\nspool"), "--spool"),
        (Overrides(fsync="sometimes"), "--fsync"),
        (Overrides(framing="crlf"), "--framing"),
        (Overrides(log_format="xml"), "--log-format"),
    ],
)
def test_a_bad_flag_value_names_the_flag_not_the_key(overrides: Overrides, flag: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load({}, overrides, environ={})
    assert raised.value.key == flag
    assert str(raised.value).startswith(flag), str(raised.value)
    assert "." not in str(raised.value).partition(" ")[0]


def test_empty_flags_are_not_given_and_the_file_value_holds() -> None:
    document = {"spool": {"directory": "/srv/s", "fsync": "never"}, "log": {"format": "text"}}
    config = load(document, Overrides(spool="", fsync="", log_format=""), environ={})
    assert (config.spool.directory, config.spool.fsync) == (Path("/srv/s"), "never")
    assert config.log.format == "text"


def test_choices_are_enums_from_the_file_and_from_flags() -> None:
    from_file = load(
        {"spool": {"fsync": "never", "overflow": "drop-newest"}, "log": {"level": "DEBUG"}},
        environ={},
    )
    assert from_file.spool.fsync is FsyncPolicy.NEVER
    assert from_file.spool.overflow is Overflow.DROP_NEWEST
    assert from_file.log.level is LogLevel.DEBUG
    from_flags = load({}, Overrides(fsync="always", framing="octet-counting"), environ={})
    assert from_flags.spool.fsync is FsyncPolicy.ALWAYS
    assert from_flags.framing is Framing.OCTET_COUNTING


# ---- relay run: one sentence, exit 78 ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    returncode: int
    error: str  # the one line that is not a JSON log object
    stderr: str


def relay_run(args: Sequence[str], *, timeout: float = 20.0) -> Outcome:
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    # Start-up may log (JSON objects) before it meets the problem; the error is the rest.
    other = [
        line for line in proc.stderr.splitlines() if line.strip() and not _is_json_object(line)
    ]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(other) == 1, f"expected one sentence on stderr, got:\n{proc.stderr}"
    return Outcome(returncode=proc.returncode, error=other[0], stderr=proc.stderr)


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def assert_config_error(outcome: Outcome, *names: str) -> None:
    assert outcome.returncode == EX_CONFIG, outcome.stderr
    assert outcome.error.startswith("relay: "), outcome.error
    for name in names:
        assert name in outcome.error, f"{name!r} not named in: {outcome.error}"
    # The sentence is the last thing the process said.
    assert outcome.stderr.rstrip().endswith(outcome.error.rstrip())


@pytest.fixture
def base_args(tmp_path: Path) -> list[str]:
    """Everything a start needs except what a case breaks: loopback, no metrics, own spool."""
    return [
        "--listen",
        "127.0.0.1:0",
        "--spool",
        str(tmp_path / "spool"),
        "--metrics",
        "off",
        "--endpoint",
        "127.0.0.1:9",
    ]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unknown_key(tmp_path: Path, base_args: list[str]) -> None:
    conf = write(tmp_path / "bad.toml", '[spool]\nfsync = "always"\nfsnyc_interval = 2\n')
    assert_config_error(relay_run(["-c", str(conf), *base_args]), "spool.fsnyc_interval")


def test_unknown_section(tmp_path: Path, base_args: list[str]) -> None:
    conf = write(tmp_path / "bad.toml", "[forwarder]\ntls = true\n")
    assert_config_error(relay_run(["-c", str(conf), *base_args]), "forwarder")


def test_bad_value(tmp_path: Path, base_args: list[str]) -> None:
    conf = write(tmp_path / "bad.toml", '[spool]\noverflow = "drop-middle"\n')
    assert_config_error(relay_run(["-c", str(conf), *base_args]), "spool.overflow", "drop-middle")


def test_bad_cidr_in_the_file(tmp_path: Path, base_args: list[str]) -> None:
    conf = write(tmp_path / "bad.toml", '[listen]\nallow = ["10.0.0.0/8", "192.168.1.0/33"]\n')
    assert_config_error(relay_run(["-c", str(conf), *base_args]), "listen.allow", "192.168.1.0/33")


def test_bad_cidr_flag(base_args: list[str]) -> None:
    assert_config_error(relay_run([*base_args, "--allow", "not-a-net"]), "--allow", "not-a-net")


def test_not_toml(tmp_path: Path, base_args: list[str]) -> None:
    conf = write(tmp_path / "bad.toml", "[spool\n")
    assert_config_error(relay_run(["-c", str(conf), *base_args]), str(conf))


def test_missing_endpoint(tmp_path: Path) -> None:
    outcome = relay_run(
        ["--listen", "127.0.0.1:0", "--spool", str(tmp_path / "s"), "--metrics", "off"]
    )
    assert_config_error(outcome, "endpoint")


def test_missing_config_file(tmp_path: Path, base_args: list[str]) -> None:
    missing = tmp_path / "nowhere.toml"
    assert_config_error(relay_run(["-c", str(missing), *base_args]), str(missing))


def test_config_file_that_is_a_directory(tmp_path: Path, base_args: list[str]) -> None:
    assert_config_error(relay_run(["-c", str(tmp_path), *base_args]), str(tmp_path))


def test_unreadable_certificate(tls_client: TlsFiles, tmp_path: Path, base_args: list[str]) -> None:
    missing = tmp_path / "client.pem"
    outcome = relay_run(
        [
            *base_args,
            "--ca",
            str(tls_client.ca),
            "--cert",
            str(missing),
            "--key",
            str(tls_client.key),
        ]
    )
    assert_config_error(outcome, str(missing))


def test_unreadable_ca(tls_client: TlsFiles, tmp_path: Path, base_args: list[str]) -> None:
    not_pem = write(tmp_path / "ca.pem", "this is not a certificate\n")
    outcome = relay_run(
        [
            *base_args,
            "--ca",
            str(not_pem),
            "--cert",
            str(tls_client.cert),
            "--key",
            str(tls_client.key),
        ]
    )
    assert_config_error(outcome, str(not_pem))


def test_world_readable_key(tls_ca: TlsFiles, tmp_path: Path, base_args: list[str]) -> None:
    client = issue_certificate(tls_ca, tmp_path, "loose", hosts=(), server=False)
    client.key.chmod(0o644)
    outcome = relay_run(
        [*base_args, "--ca", str(client.ca), "--cert", str(client.cert), "--key", str(client.key)]
    )
    assert_config_error(outcome, str(client.key), "chmod 600")


def test_certificate_not_matching_key(
    tls_ca: TlsFiles, tmp_path: Path, base_args: list[str]
) -> None:
    one = issue_certificate(tls_ca, tmp_path, "one", hosts=(), server=False)
    two = issue_certificate(tls_ca, tmp_path, "two", hosts=(), server=False)
    outcome = relay_run(
        [*base_args, "--ca", str(one.ca), "--cert", str(one.cert), "--key", str(two.key)]
    )
    assert_config_error(outcome, str(two.key))
    assert "match" in outcome.error


def test_listen_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        outcome = relay_run(
            [
                "--listen",
                f"127.0.0.1:{port}",
                "--spool",
                str(tmp_path / "s"),
                "--metrics",
                "off",
                "--endpoint",
                "127.0.0.1:9",
            ]
        )
    assert_config_error(outcome, f"127.0.0.1:{port}", "in use")


def test_metrics_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome = relay_run(
            [
                "--listen",
                "127.0.0.1:0",
                "--spool",
                str(tmp_path / "s"),
                "--metrics",
                f"127.0.0.1:{port}",
                "--endpoint",
                "127.0.0.1:9",
            ]
        )
    assert_config_error(outcome, f"127.0.0.1:{port}", "metrics")


def test_spool_directory_not_usable(tmp_path: Path) -> None:
    """Root can write anywhere, so the spool is put under a regular file: no mkdir can work."""
    blocker = write(tmp_path / "a-file", "")
    spool = blocker / "spool"
    outcome = relay_run(
        [
            "--listen",
            "127.0.0.1:0",
            "--spool",
            str(spool),
            "--metrics",
            "off",
            "--endpoint",
            "127.0.0.1:9",
        ]
    )
    assert_config_error(outcome, str(spool))


def test_spool_directory_in_use_by_another_relay(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    with Spool.open(spool_dir):
        outcome = relay_run(
            [
                "--listen",
                "127.0.0.1:0",
                "--spool",
                str(spool_dir),
                "--metrics",
                "off",
                "--endpoint",
                "127.0.0.1:9",
            ]
        )
    assert_config_error(outcome, str(spool_dir), "in use")


def test_bad_flag_value_is_usage_exit_2(base_args: list[str]) -> None:
    outcome = relay_run([*base_args, "--fsync", "sometimes"])
    assert outcome.returncode == EX_USAGE, outcome.stderr
    assert "--fsync" in outcome.error
