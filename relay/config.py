"""The relay's configuration: one TOML file, every key defaulted, flags override (pure).

``load(text, overrides)`` returns a frozen :class:`Config` or raises ConfigError with one
sentence naming the key. File reading and certificate loading happen in the callers; the
checks of single values (types, ranges, host names, sizes) are in :mod:`relay.values`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relay import values
from relay.addresses import HostPort, format_hostport, parse_hostport
from relay.errors import ConfigError
from relay.framing import FRAMINGS
from relay.render import BODIES, HEADERS, RenderOptions

DEFAULT_LISTEN = ("0.0.0.0:12999", "[::]:12999")
# Loopback, RFC 1918, shared address space (CGNAT), link-local, unique local.
DEFAULT_ALLOW = (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10", "169.254.0.0/16", "fe80::/10", "fc00::/7",
)  # fmt: skip
DEFAULT_SPOOL = "/var/lib/flowrelay/spool"
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17,
    "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
SEVERITIES = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6,
    "debug": 7,
}  # fmt: skip
# SO_RCVBUF takes a C int. The kernel caps what it grants at net.core.rmem_max anyway (and the
# relay logs what it asked for and what it got), so a larger value would buy nothing.
MAX_RECEIVE_BUFFER = (1 << 31) - 1
MAX_SPOOL_BYTES = 1 << 50  # 1 PiB: far beyond any disk, small enough for every file offset
MAX_SEGMENT_BYTES = 4 << 30
# One TLS write, held in memory (up to catch_up_factor of them while behind).
MAX_BATCH_BYTES = 64 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointConfig:
    host: str
    port: int
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def __str__(self) -> str:
        return format_hostport(self.host, self.port)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    listen: tuple[HostPort, ...] = ()
    receive_buffer: int = 32 << 20
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    workers: int = 1
    render: RenderOptions = field(default_factory=RenderOptions)
    framing: str = "newline"
    spool_dir: Path = Path(DEFAULT_SPOOL)
    spool_max_bytes: int = 1 << 30
    spool_segment_bytes: int = 32 << 20
    overflow: str = "drop-oldest"
    fsync: str = "interval"
    fsync_interval: float = 1.0
    endpoints: tuple[EndpointConfig, ...] = ()
    tls: bool = True
    verify: bool = True
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 10.0
    primary_retry_interval: float = 300.0
    batch_bytes: int = 256 << 10
    drain_timeout: float = 10.0
    stall_timeout: float = 20.0
    failover_after: int = 3
    metrics: HostPort | None = None
    log_format: str = "auto"
    log_level: str = "info"
    stats_interval: float = 60.0


# Every key the file may have, with its default; the example config documents each.
SCHEMA: dict[str, dict[str, Any]] = {
    "listen": {
        "addresses": list(DEFAULT_LISTEN),
        "receive_buffer": "32MiB",
        "allow": list(DEFAULT_ALLOW),
        "workers": 1,
    },
    "output": {
        "header": "rfc3164",
        "body": "json",
        "framing": "newline",
        "tag": "netstat.netflow.lt",
        "facility": "user",
        "severity": "info",
    },
    "spool": {
        "directory": DEFAULT_SPOOL,
        "max_size": "1GiB",
        "segment_size": "32MiB",
        "overflow": "drop-oldest",
        "fsync": "interval",
        "fsync_interval": 1.0,
    },
    "forward": {
        "tls": True,
        "verify": True,
        "backoff_initial": 0.5,
        "backoff_max": 30.0,
        "connect_timeout": 10.0,
        "primary_retry_interval": 300.0,
        "batch_size": "256KiB",
        "drain_timeout": 10.0,
        "stall_timeout": 20.0,
        "failover_after": 3,
    },
    "metrics": {"address": "127.0.0.1:9712"},
    "log": {"format": "auto", "level": "info", "stats_interval": 60.0},
}
ENDPOINT_KEYS = {"host", "port", "ca", "cert", "key", "server_name"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Overrides:
    """Command-line flags; None/empty means "not given"."""

    listen: Sequence[str] = ()
    endpoints: Sequence[str] = ()
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    spool: str | None = None
    fsync: str | None = None
    metrics: str | None = None
    allow: Sequence[str] = ()
    framing: str | None = None
    log_format: str | None = None
    workers: int | None = None


def parse_toml(text: str, *, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None


def load(
    document: Mapping[str, Any] | None = None,
    overrides: Overrides | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a parsed TOML document and apply the command-line overrides."""
    doc = dict(document or {})
    flags = overrides or Overrides()
    env = os.environ if environ is None else environ
    _reject_unknown(doc)
    section = {name: {**defaults, **doc.get(name, {})} for name, defaults in SCHEMA.items()}
    lst, out, spl, fwd = section["listen"], section["output"], section["spool"], section["forward"]
    met, log = section["metrics"], section["log"]

    listen = tuple(
        values.bind_address(a, "--listen" if flags.listen else "listen.addresses")
        for a in (flags.listen or values.strings(lst["addresses"], "listen.addresses"))
    )
    if not listen:
        raise ConfigError("listen.addresses is empty: give at least one ADDR:PORT", key="listen")
    allow = tuple(
        values.network(c, key="--allow" if flags.allow else "listen.allow")
        for c in (flags.allow or values.strings(lst["allow"], "listen.allow"))
    )
    try:
        render = RenderOptions(
            header=values.choice(out["header"], HEADERS, "output.header"),  # type: ignore[arg-type]
            body=values.choice(out["body"], BODIES, "output.body"),  # type: ignore[arg-type]
            tag=values.string(out["tag"], "output.tag"),
            pri=FACILITIES[values.choice(out["facility"], tuple(FACILITIES), "output.facility")] * 8
            + SEVERITIES[values.choice(out["severity"], tuple(SEVERITIES), "output.severity")],
        )
    except ValueError as exc:
        raise ConfigError(f"output.tag: {exc}", key="output.tag") from None
    framing = values.choice(
        flags.framing or out["framing"],
        FRAMINGS,
        "--framing" if flags.framing else "output.framing",
    )

    if flags.spool:
        directory = Path(values.plain(flags.spool, "--spool"))
    elif "directory" not in doc.get("spool", {}) and env.get("STATE_DIRECTORY"):
        # Under systemd's StateDirectory= the unit tells us where our state lives.
        directory = Path(env["STATE_DIRECTORY"].split(":")[0]) / "spool"
    else:
        directory = Path(
            values.plain(values.string(spl["directory"], "spool.directory"), "spool.directory")
        )

    endpoints = _endpoints(doc.get("endpoint", []), flags)
    metrics_addr = flags.metrics if flags.metrics is not None else met["address"]
    metrics = (
        None
        if metrics_addr in ("", "off", "none")
        else values.bind_address(
            values.string(
                metrics_addr, metrics_key := "--metrics" if flags.metrics else "metrics.address"
            ),
            metrics_key,
        )
    )
    workers_key = "--workers" if flags.workers is not None else "listen.workers"
    workers = flags.workers if flags.workers is not None else lst["workers"]
    config = Config(
        listen=listen,
        receive_buffer=values.size(
            lst["receive_buffer"], "listen.receive_buffer", maximum=MAX_RECEIVE_BUFFER
        ),
        allow=allow,
        workers=values.integer(workers, workers_key, 1, 64),
        render=render,
        framing=framing,
        spool_dir=directory,
        spool_max_bytes=values.size(
            spl["max_size"], "spool.max_size", minimum=1 << 20, maximum=MAX_SPOOL_BYTES
        ),
        spool_segment_bytes=values.size(
            spl["segment_size"], "spool.segment_size", minimum=64 << 10, maximum=MAX_SEGMENT_BYTES
        ),
        overflow=values.choice(spl["overflow"], ("drop-oldest", "drop-newest"), "spool.overflow"),
        fsync=values.choice(
            flags.fsync or spl["fsync"],
            ("always", "interval", "never"),
            "--fsync" if flags.fsync else "spool.fsync",
        ),
        fsync_interval=values.number(spl["fsync_interval"], "spool.fsync_interval", 0.01, 60),
        endpoints=endpoints,
        tls=values.boolean(fwd["tls"], "forward.tls"),
        verify=values.boolean(fwd["verify"], "forward.verify"),
        backoff_initial=values.number(fwd["backoff_initial"], "forward.backoff_initial", 0.01, 600),
        backoff_max=values.number(fwd["backoff_max"], "forward.backoff_max", 0.01, 3600),
        connect_timeout=values.number(fwd["connect_timeout"], "forward.connect_timeout", 0.1, 600),
        primary_retry_interval=values.number(
            fwd["primary_retry_interval"], "forward.primary_retry_interval", 1, 86400
        ),
        batch_bytes=values.size(
            fwd["batch_size"], "forward.batch_size", minimum=64 << 10, maximum=MAX_BATCH_BYTES
        ),
        drain_timeout=values.number(fwd["drain_timeout"], "forward.drain_timeout", 0, 3600),
        stall_timeout=values.number(fwd["stall_timeout"], "forward.stall_timeout", 2, 3600),
        failover_after=values.integer(fwd["failover_after"], "forward.failover_after", 1, 100),
        metrics=metrics,
        log_format=values.choice(
            flags.log_format or log["format"],
            ("auto", "json", "text"),
            "--log-format" if flags.log_format else "log.format",
        ),
        log_level=values.choice(
            str(log["level"]).lower(), ("debug", "info", "warning", "error"), "log.level"
        ),
        stats_interval=values.number(log["stats_interval"], "log.stats_interval", 1, 86400),
    )
    if config.backoff_max < config.backoff_initial:
        raise ConfigError(
            "forward.backoff_max must not be smaller than forward.backoff_initial",
            key="forward.backoff_max",
        )
    if config.spool_segment_bytes > config.spool_max_bytes:
        raise ConfigError(
            "spool.segment_size must not be larger than spool.max_size", key="spool.segment_size"
        )
    return config


def to_document(config: Config) -> dict[str, Any]:
    """The configuration as a document with every key given: ``load(to_document(c)) == c``.

    The worker supervisor hands this to its workers, so that each runs with the configuration
    the supervisor resolved (file, flags and environment), not with a re-parsed command line.
    """
    facility = {v: k for k, v in FACILITIES.items()}[config.render.pri // 8]
    severity = {v: k for k, v in SEVERITIES.items()}[config.render.pri % 8]
    endpoints = []
    for e in config.endpoints:
        table: dict[str, Any] = {"host": e.host, "port": e.port}
        for name in ("ca", "cert", "key"):
            if (path := getattr(e, name)) is not None:
                table[name] = str(path)
        if e.server_name is not None:
            table["server_name"] = e.server_name
        endpoints.append(table)
    return {
        "listen": {
            "addresses": [str(a) for a in config.listen],
            "receive_buffer": config.receive_buffer,
            "allow": [str(n) for n in config.allow],
            "workers": config.workers,
        },
        "output": {
            "header": config.render.header,
            "body": config.render.body,
            "framing": config.framing,
            "tag": config.render.tag,
            "facility": facility,
            "severity": severity,
        },
        "spool": {
            "directory": str(config.spool_dir),
            "max_size": config.spool_max_bytes,
            "segment_size": config.spool_segment_bytes,
            "overflow": config.overflow,
            "fsync": config.fsync,
            "fsync_interval": config.fsync_interval,
        },
        "forward": {
            "tls": config.tls,
            "verify": config.verify,
            "backoff_initial": config.backoff_initial,
            "backoff_max": config.backoff_max,
            "connect_timeout": config.connect_timeout,
            "primary_retry_interval": config.primary_retry_interval,
            "batch_size": config.batch_bytes,
            "drain_timeout": config.drain_timeout,
            "stall_timeout": config.stall_timeout,
            "failover_after": config.failover_after,
        },
        "metrics": {"address": "off" if config.metrics is None else str(config.metrics)},
        "log": {
            "format": config.log_format,
            "level": config.log_level,
            "stats_interval": config.stats_interval,
        },
        "endpoint": endpoints,
    }


def with_endpoints(config: Config, endpoints: tuple[EndpointConfig, ...]) -> Config:
    return replace(config, endpoints=endpoints)


def _reject_unknown(doc: Mapping[str, Any]) -> None:
    for name, value in doc.items():
        if name == "endpoint":
            if not isinstance(value, list):
                raise ConfigError(
                    "endpoint must be an array of tables ([[endpoint]])", key="endpoint"
                )
            for i, table in enumerate(value):
                if not isinstance(table, dict):
                    raise ConfigError(f"endpoint[{i}] must be a table", key="endpoint")
                for k in table:
                    if k not in ENDPOINT_KEYS:
                        known = ", ".join(sorted(ENDPOINT_KEYS))
                        raise ConfigError(
                            f"unknown key endpoint[{i}].{values.bare_key(k)} (known: {known})",
                            key=f"endpoint.{k}",
                        )
            continue
        if name not in SCHEMA:
            known = ", ".join([*SCHEMA, "endpoint"])
            raise ConfigError(f"unknown section or key {name!r} (known: {known})", key=name)
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a table ([{name}])", key=name)
        for k in value:
            if k not in SCHEMA[name]:
                known = ", ".join(SCHEMA[name])
                raise ConfigError(
                    f"unknown key {name}.{values.bare_key(k)} (known in [{name}]: {known})",
                    key=f"{name}.{k}",
                )


def _endpoints(tables: list[dict[str, Any]], flags: Overrides) -> tuple[EndpointConfig, ...]:
    found: list[EndpointConfig] = []
    if flags.endpoints:
        for text in flags.endpoints:
            hp = parse_hostport(text, key="--endpoint")
            found.append(EndpointConfig(host=values.hostname(hp.host, "--endpoint"), port=hp.port))
    else:
        for i, table in enumerate(tables):
            key = f"endpoint[{i}]"
            if "host" not in table or "port" not in table:
                raise ConfigError(f"{key} needs both host and port", key=f"{key}.host")
            found.append(
                EndpointConfig(
                    host=values.hostname(table["host"], f"{key}.host"),
                    port=values.integer(table["port"], f"{key}.port", 1, 65535),
                    ca=values.path(table.get("ca"), f"{key}.ca"),
                    cert=values.path(table.get("cert"), f"{key}.cert"),
                    key=values.path(table.get("key"), f"{key}.key"),
                    server_name=values.optional_hostname(
                        table.get("server_name"), f"{key}.server_name"
                    ),
                )
            )
    # --ca/--cert/--key/--server-name apply to every endpoint.
    flag_ca, flag_cert = values.path(flags.ca, "--ca"), values.path(flags.cert, "--cert")
    flag_key = values.path(flags.key, "--key")
    flag_name = values.optional_hostname(flags.server_name, "--server-name")
    result = tuple(
        replace(
            e,
            ca=flag_ca or e.ca,
            cert=flag_cert or e.cert,
            key=flag_key or e.key,
            server_name=flag_name or e.server_name,
        )
        for e in found
    )
    for e in result:
        if (e.cert is None) != (e.key is None):
            raise ConfigError(
                f"endpoint {e}: a client certificate needs its key and a key its certificate "
                "(set both cert and key, or neither)",
                key="endpoint.cert",
            )
    return result
