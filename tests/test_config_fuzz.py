"""The configuration, fuzzed: random keys, types and values in every section and in
``[[endpoint]]`` tables, and random ``relay run`` flags, through the path ``relay run`` takes
(a TOML file read by ``cli.read_config``, the flags by the run parser, then
``service.check_startup``: the TLS context and the forwarder's configuration, all that runs
before anything is bound).

The invariant, h11's for its parser: every case either starts, with every value of the right
type and in range, or ends in ConfigError / UsageError whose message is one line naming the
key, the flag or the file. Never any other exception: before, ``server_name = 5`` loaded and
then killed the first connection with AttributeError, and ``receive_buffer = "2GiB"`` died in
setsockopt with a TypeError.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from support.relayproc import REPO

from relay.addresses import HostPort
from relay.certs import TlsFiles
from relay.cli import build_parser, read_config, run_overrides
from relay.config import (
    MAX_BATCH_BYTES,
    MAX_RECEIVE_BUFFER,
    MAX_SEGMENT_BYTES,
    MAX_SPOOL_BYTES,
    Config,
    load,
    to_document,
)
from relay.errors import EX_CONFIG, EX_USAGE, CertificateError, ConfigError, UsageError
from relay.flows.config import TemplateScopeMode
from relay.framing import FRAMINGS, Framing
from relay.logs import LogFormat, LogLevel
from relay.render import RenderOptions
from relay.service import check_startup
from relay.spool import FsyncPolicy, Overflow

# ---- a TOML writer (tomllib only reads) ------------------------------------------------------


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(value)


def toml_document(document: Mapping[str, object]) -> str:
    """Each top-level key on its own line; tables and arrays of tables written inline."""
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in document.items())


# ---- strategies -----------------------------------------------------------------------------

# Stand-ins for the real test certificate files, replaced when the test runs.
CA, CERT, KEY = "@ca", "@cert", "@key"

SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
    st.dates(),
    st.times(),
)
ANY = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
WORDS = st.sampled_from([
    "rfc3164", "rfc5424", "json", "kv", "text", "newline", "octet-counting", "user", "local0",
    "local7", "kern", "info", "debug", "emerg", "warning", "error", "DEBUG", "drop-oldest",
    "drop-newest", "always", "interval", "never", "off", "none", "", "JSON", "address",
    "address-port", "ADDRESS",
])  # fmt: skip
HOSTS = st.one_of(
    st.sampled_from([
        "127.0.0.1", "::1", "0.0.0.0", "::", "localhost", "logs.example.net", "logs.example.net.",
        "", " ", "a..b", ".example.net", "x" * 64, "b\u00fccher.example", "-a.example", "a_b",
        "1.2.3.4.5", "fe80::1%lo", "10.0.0.1 ", "a\x00b", "a\nb", "xn--", "\u00df" * 70,
    ]),
    st.text(max_size=20),
)  # fmt: skip
PORTS = st.one_of(st.integers(-1, 70000), st.sampled_from([0, 1, 6514, 65535, 65536]))
HOSTPORTS = st.one_of(
    st.builds(lambda h, p: f"[{h}]:{p}" if ":" in h else f"{h}:{p}", HOSTS, PORTS),
    st.text(max_size=20),
)
SIZES = st.one_of(
    st.integers(-1, 2**70),
    st.sampled_from([2**31 - 1, 2**31, 64 << 10, 1 << 20, 32 << 20, 1 << 30, MAX_SPOOL_BYTES]),
    st.builds(
        "{}{}".format,
        st.integers(0, 5000),
        st.sampled_from(["", "B", "K", "KiB", "M", "MiB", " MiB", "G", "GiB", "T", "kb", "x"]),
    ),
)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 100_000),
    st.sampled_from([0, 0.0, 0.01, 0.1, 1, 10, 60, 300, 3600, 86400]),
)
CIDRS = st.one_of(
    st.sampled_from(["10.0.0.0/8", "::/0", "10.0.0.1", "10.0.0.0/33", "fe80::/10", "x", ""]),
    st.text(max_size=12),
)
PATHS = st.one_of(
    st.sampled_from([CA, CERT, KEY, "", "/nonexistent/ca.pem", "relative.pem", "/", "a\x00b"]),
    st.text(max_size=20),
)
KNOWN: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "listen": {
        "addresses": st.lists(HOSTPORTS, max_size=3),
        "receive_buffer": SIZES,
        "allow": st.lists(CIDRS, max_size=3),
        "workers": st.integers(-1, 100),
    },
    "output": {
        "header": WORDS, "body": WORDS, "framing": WORDS, "facility": WORDS, "severity": WORDS,
        "tag": st.sampled_from(["nf", "netstat.netflow.lt", "a b", "", "x" * 49]) | st.text(),
    },
    "spool": {
        "directory": PATHS, "max_size": SIZES, "segment_size": SIZES, "overflow": WORDS,
        "fsync": WORDS, "fsync_interval": NUMBERS,
    },
    "forward": {
        "tls": st.booleans(), "verify": st.booleans(), "backoff_initial": NUMBERS,
        "backoff_max": NUMBERS, "connect_timeout": NUMBERS, "primary_retry_interval": NUMBERS,
        "batch_size": SIZES, "drain_timeout": NUMBERS,
    },
    "metrics": {"address": HOSTPORTS | WORDS},
    "log": {"format": WORDS, "level": WORDS, "stats_interval": NUMBERS},
    "templates": {
        "scope": WORDS, "max_age": NUMBERS, "persist": st.booleans(),
        "max_per_exporter": st.integers(-1, 2 << 20), "max_total": st.integers(-1, 2 << 20),
        "max_bytes_per_exporter": SIZES, "max_bytes": SIZES, "hold_age": NUMBERS,
        "hold_bytes_per_exporter": SIZES, "hold_bytes": SIZES,
    },
}  # fmt: skip
ENDPOINT: dict[str, st.SearchStrategy[Any]] = {
    "host": HOSTS, "port": PORTS, "ca": PATHS, "cert": PATHS, "key": PATHS,
    "server_name": HOSTS | st.integers() | st.booleans(),
}  # fmt: skip


# Values that are right, so that a case can get all the way through (then a few mutations
# make it wrong in one or two places, where the interesting errors are).
VALID: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "listen": {
        "addresses": st.lists(
            st.sampled_from(["127.0.0.1:0", "[::1]:0", "0.0.0.0:12999"]), min_size=1, max_size=2
        ),
        "receive_buffer": st.integers(1, MAX_RECEIVE_BUFFER)
        | st.sampled_from(["32MiB", "1 GiB", "4096"]),
        "allow": st.lists(
            st.sampled_from(["10.0.0.0/8", "::/0", "192.0.2.1", "fe80::/10"]), max_size=2
        ),
        "workers": st.integers(1, 64),
    },
    "output": {
        "header": st.sampled_from(["rfc3164", "rfc5424"]),
        "body": st.sampled_from(["json", "kv"]),
        "framing": st.sampled_from(FRAMINGS),
        "facility": st.sampled_from(["user", "local0", "kern"]),
        "severity": st.sampled_from(["info", "debug", "emerg"]),
        "tag": st.sampled_from(["nf", "netstat.netflow.lt", "relay-1"]),
    },
    "spool": {
        "directory": st.sampled_from(["/var/lib/flowrelay/spool", "spool", "/tmp/a b"]),
        "max_size": st.integers(1 << 30, MAX_SPOOL_BYTES) | st.sampled_from(["1GiB", "2 TiB"]),
        "segment_size": st.integers(64 << 10, 1 << 30) | st.sampled_from(["64KiB", "32MiB"]),
        "overflow": st.sampled_from(["drop-oldest", "drop-newest"]),
        "fsync": st.sampled_from(["always", "interval", "never"]),
        "fsync_interval": st.floats(0.01, 60),
    },
    "forward": {
        "tls": st.booleans(),
        "verify": st.booleans(),
        "backoff_initial": st.floats(0.01, 1),
        "backoff_max": st.floats(1, 3600),
        "connect_timeout": st.floats(0.1, 600),
        "primary_retry_interval": st.integers(1, 86400),
        "drain_timeout": st.floats(0, 3600),
        "batch_size": st.integers(64 << 10, MAX_BATCH_BYTES) | st.just("256KiB"),
    },
    "metrics": {"address": st.sampled_from(["127.0.0.1:0", "[::1]:9712", "off", ""])},
    "log": {
        "format": st.sampled_from(["json", "text"]),
        "level": st.sampled_from(["debug", "INFO", "warning", "error"]),
        "stats_interval": st.floats(1, 86400),
    },
    "templates": {
        "scope": st.sampled_from(["address", "address-port"]),
        "max_age": st.floats(0.5, 30 * 86400),
        "persist": st.booleans(),
        "max_per_exporter": st.integers(1, 1024),
        "max_total": st.integers(1024, 1 << 20),
        "max_bytes_per_exporter": st.integers(64 << 10, 256 << 10) | st.just("256KiB"),
        "max_bytes": st.integers(256 << 10, 16 << 20) | st.sampled_from(["4MiB", "16 MiB"]),
        "hold_age": st.floats(0.01, 3600),
        "hold_bytes_per_exporter": st.integers(64 << 10, 1 << 20) | st.just("1MiB"),
        "hold_bytes": st.integers(1 << 20, 1 << 30) | st.just("16MiB"),
    },
}
VALID_ENDPOINT: dict[str, st.SearchStrategy[Any]] = {
    "host": st.sampled_from(["127.0.0.1", "::1", "logs.example.net", "b\u00fccher.example"]),
    "port": st.integers(1, 65535),
    "ca": st.just(CA),
    "server_name": st.sampled_from(["localhost", "logs.example.net.", "10.0.0.1", ""]),
}


@st.composite
def valid_table(draw: st.DrawFn, keys: Mapping[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    return {k: draw(v) for k, v in keys.items() if draw(st.booleans())}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A right document with 0-3 mutations: a known key given a plausible or any value, a
    stray key, a whole section replaced by any value."""
    doc: dict[str, Any] = {
        name: draw(valid_table(keys)) for name, keys in VALID.items() if draw(st.booleans())
    }
    endpoints: list[dict[str, Any]] = []
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        endpoint = {"host": draw(VALID_ENDPOINT["host"]), "port": draw(VALID_ENDPOINT["port"])}
        endpoint |= draw(valid_table({k: VALID_ENDPOINT[k] for k in ("ca", "server_name")}))
        if draw(st.booleans()):
            endpoint |= {"cert": CERT, "key": KEY}
        endpoints.append(endpoint)
    with_empty_list: bool = draw(st.booleans())
    if endpoints or with_empty_list:
        doc["endpoint"] = endpoints
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["known", "known", "known", "endpoint", "stray", "section"]))
        if kind == "known":
            name = draw(st.sampled_from(sorted(KNOWN)))
            key = draw(st.sampled_from(sorted(KNOWN[name])))
            section = doc.setdefault(name, {})
            if isinstance(section, dict):
                section[key] = draw(KNOWN[name][key] | ANY)
        elif kind == "endpoint":
            tables = doc.get("endpoint")
            # An earlier step may have made the list hold odd values: change only tables.
            dicts = [t for t in tables if isinstance(t, dict)] if isinstance(tables, list) else []
            if dicts:
                key = draw(st.sampled_from(sorted(ENDPOINT)))
                draw(st.sampled_from(dicts))[key] = draw(ENDPOINT[key] | ANY)
            else:
                keys = st.sampled_from(sorted(ENDPOINT)) | st.text(max_size=6)
                odd: st.SearchStrategy[Any] = st.lists(
                    st.dictionaries(keys, ANY, max_size=4), max_size=2
                )
                doc["endpoint"] = draw(odd | ANY)
        elif kind == "stray":
            where = draw(st.sampled_from([None, *sorted(KNOWN)]))
            target = doc if where is None else doc.setdefault(where, {})
            if isinstance(target, dict):
                target[draw(st.text(max_size=8))] = draw(ANY)
        else:
            doc[draw(st.sampled_from([*sorted(KNOWN), "endpoint"]))] = draw(ANY)
    return doc


VALID_FLAGS = st.sampled_from([
    ["--listen", "127.0.0.1:0"], ["--endpoint", "127.0.0.1:6514"], ["--ca", CA],
    ["--cert", CERT, "--key", KEY], ["--server-name", "localhost"], ["--spool", "/srv/spool"],
    ["--fsync", "always"], ["--metrics", "off"], ["--allow", "10.0.0.0/8"],
    ["--framing", "octet-counting"], ["--log-format", "text"], ["--workers", "2"],
])  # fmt: skip
# Flags of `relay run`, each with a plausible value or any text.
ODD_FLAGS = st.one_of(
    st.tuples(st.sampled_from(["--listen", "--metrics"]), HOSTPORTS | WORDS),
    st.tuples(st.just("--endpoint"), HOSTPORTS),
    st.tuples(st.sampled_from(["--ca", "--cert", "--key", "--spool"]), PATHS),
    st.tuples(st.just("--server-name"), HOSTS),
    st.tuples(st.sampled_from(["--fsync", "--framing", "--log-format"]), WORDS),
    st.tuples(st.just("--allow"), CIDRS),
    st.tuples(st.just("--workers"), st.integers(-2, 100).map(str) | st.text(max_size=4)),
    st.tuples(st.text(max_size=10), st.text(max_size=10)),
).map(list)
FLAGS = st.builds(
    lambda valid, odd: [x for group in valid + odd for x in group],
    st.lists(VALID_FLAGS, max_size=3),
    st.lists(ODD_FLAGS, max_size=1) | st.just([]),
)


# ---- the invariant --------------------------------------------------------------------------


def start(text: str, argv: list[str], directory: Path) -> Config | ConfigError | UsageError:
    """``relay run -c FILE ARGV`` up to the point where it would bind its sockets."""
    path = directory / "relay.toml"
    path.write_text(text)
    try:
        args = build_parser().parse_args(["run", "-c", str(path), *argv])
        config = read_config(args.config, run_overrides(args))
        check_startup(config)
    except (ConfigError, UsageError) as exc:
        return exc
    return config


def assert_one_sentence_naming_the_key(exc: ConfigError | UsageError) -> None:
    message = str(exc)
    assert message.strip(), repr(exc)
    assert len(message.splitlines()) == 1, message
    if isinstance(exc, UsageError):
        assert re.search(r"argument -|unrecognized arguments|expected one argument", message), (
            message
        )
        return
    if isinstance(exc, CertificateError) and exc.path is not None:
        assert exc.path in message, message
        return
    assert exc.key is not None, f"no key named for: {message}"
    name = re.sub(r"\[\d+\]", "", exc.key).split(".", 1)[-1]
    # A key that is not a bare TOML key is shown quoted.
    shown = (name, json.dumps(name), repr(name))
    assert any(s in message for s in shown), f"{exc.key!r} not named in: {message}"


def assert_usable(config: Config) -> None:
    """Every value of the right type and in range, as the running relay will use it."""
    assert config.listen.addresses
    assert all(isinstance(a, HostPort) for a in config.listen.addresses)
    assert all(isinstance(a.host, str) and 0 <= a.port <= 65535 for a in config.listen.addresses)
    assert isinstance(config.listen.receive_buffer, int)
    assert config.listen.receive_buffer >= 1
    assert config.listen.receive_buffer <= MAX_RECEIVE_BUFFER
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, config.listen.receive_buffer)
    assert isinstance(config.listen.workers, int)
    assert 1 <= config.listen.workers <= 64
    assert isinstance(config.output, RenderOptions)
    assert config.framing in FRAMINGS
    assert "\x00" not in str(config.spool.directory)
    assert 1 << 20 <= config.spool.max_bytes <= MAX_SPOOL_BYTES
    assert 64 << 10 <= config.spool.segment_bytes <= min(MAX_SEGMENT_BYTES, config.spool.max_bytes)
    assert 64 << 10 <= config.forward.batch_bytes <= MAX_BATCH_BYTES
    assert config.spool.overflow in ("drop-oldest", "drop-newest")
    assert config.spool.fsync in ("always", "interval", "never")
    # Choices are enums, whichever way they came (file, flag, default).
    assert isinstance(config.framing, Framing)
    assert isinstance(config.spool.overflow, Overflow)
    assert isinstance(config.spool.fsync, FsyncPolicy)
    assert isinstance(config.log.format, LogFormat)
    assert isinstance(config.log.level, LogLevel)
    assert isinstance(config.templates.scope, TemplateScopeMode)
    for number in (
        config.spool.fsync_interval, config.forward.backoff_initial, config.forward.backoff_max,
        config.forward.connect_timeout, config.forward.primary_retry_interval,
        config.forward.drain_timeout, config.log.stats_interval,
    ):  # fmt: skip
        assert isinstance(number, float)
        assert math.isfinite(number)
        assert number >= 0
    assert isinstance(config.tls.tls, bool)
    assert isinstance(config.tls.verify, bool)
    assert config.log.format in ("auto", "json", "text")
    assert config.log.level in ("debug", "info", "warning", "error")
    assert config.metrics.address is None or isinstance(config.metrics.address, HostPort)
    t = config.templates
    assert t.scope in tuple(TemplateScopeMode)
    assert isinstance(t.persist, bool)
    for seconds in (t.max_age, t.hold_age):
        assert isinstance(seconds, float)
        assert 0 < seconds <= 30 * 86400
    assert 1 <= t.max_per_exporter <= t.max_total <= 1 << 20
    assert 64 << 10 <= t.max_bytes_per_exporter <= t.max_bytes <= 16 << 20
    assert 64 << 10 <= t.hold_bytes_per_exporter <= t.hold_bytes <= 1 << 30
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for e in config.endpoints:
        assert isinstance(e.host, str)
        assert isinstance(e.port, int)
        assert 1 <= e.port <= 65535
        assert e.server_name is None or isinstance(e.server_name, str)
        e.host.encode("idna")  # what getaddrinfo does with it
        # What the forwarder does with it on every connection.
        probe.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=e.server_name or e.host)
        for path in (e.ca, e.cert, e.key):
            assert path is None or isinstance(path, Path)
    # And what the worker supervisor hands its workers reads back to the same configuration.
    assert load(to_document(config), environ={}) == config


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(document=documents(), argv=FLAGS)
@example(
    document={"endpoint": [{"host": "logs.example.net", "port": 6514, "server_name": 5}]}, argv=[]
)
@example(document={"listen": {"receive_buffer": "2GiB"}}, argv=["--endpoint", "e.example:1"])
@example(document={"listen": {"receive_buffer": 2**31}}, argv=["--endpoint", "e.example:1"])
def test_every_configuration_starts_or_ends_in_one_sentence_naming_the_key(
    document: dict[str, Any], argv: list[str], scratch: Path, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    real = {CA: str(tls_ca.ca), CERT: str(tls_client.cert), KEY: str(tls_client.key)}

    def resolve(value: object) -> object:
        if isinstance(value, str):
            return real.get(value, value)
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    outcome = start(toml_document(resolve(document)), [str(resolve(a)) for a in argv], scratch)  # type: ignore[arg-type]
    if isinstance(outcome, Config):
        event("starts")
        assert_usable(outcome)
    else:
        event(type(outcome).__name__)
        assert_one_sentence_naming_the_key(outcome)


# ---- the same through a real process --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flags", "code", "named"),
    [
        ('[[endpoint]]\nhost = "logs.example.net"\nport = 6514\nserver_name = 5\n', [], EX_CONFIG,
         "endpoint[0].server_name"),
        ('[listen]\nreceive_buffer = "2GiB"\n', [], EX_CONFIG, "listen.receive_buffer"),
        ('[listen]\nreceive_buffer = 4294967296\n', [], EX_CONFIG, "listen.receive_buffer"),
        ('[[endpoint]]\nhost = "two words"\nport = 6514\n', [], EX_CONFIG, "endpoint[0].host"),
        ("[spool]\ndirectory = 7\n", [], EX_CONFIG, "spool.directory"),
        ("[forward]\nbackoff_max = nan\n", [], EX_CONFIG, "forward.backoff_max"),
        ("[log]\nlevel = 1979-05-27\n", [], EX_CONFIG, "log.level"),
        ("listen = 3\n", [], EX_CONFIG, "listen"),
        ("[listen]\nworkers = 4\n", ["--workers", "many"], EX_USAGE, "--workers"),
        ("", ["--server-name", ".example.net"], EX_CONFIG, "--server-name"),
    ],
)  # fmt: skip
def test_relay_run_with_a_bad_file_exits_78_or_2_with_one_line_and_no_traceback(
    tmp_path: Path, text: str, flags: list[str], code: int, named: str
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(text)
    endpoint = [] if "[[endpoint]]" in text else ["--endpoint", "127.0.0.1:9"]
    spool = [] if "[spool]" in text else ["--spool", str(tmp_path / "spool")]
    proc = subprocess.run(
        [
            sys.executable, "-m", "relay", "run", "-c", str(config), "--listen", "127.0.0.1:0",
            "--metrics", "off", *spool, *endpoint, *flags,
        ],
        capture_output=True, text=True, timeout=30, cwd=REPO, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr
    [line] = proc.stderr.splitlines()
    assert named in line, line
