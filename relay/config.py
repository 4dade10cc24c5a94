"""The relay's configuration: one TOML file, every key defaulted, flags override (pure).

``load(text, overrides)`` returns a frozen :class:`Config` or raises ConfigError with one
sentence naming the key. File reading and certificate loading happen in the callers.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
_SIZE_RE = re.compile(r"\s*(\d+)\s*([KMGT]i?B?|B)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


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
    log_format: str = "json"
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
    "log": {"format": "json", "level": "info", "stats_interval": 60.0},
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
        parse_hostport(a, key="--listen" if flags.listen else "listen.addresses", bind=True)
        for a in (flags.listen or _strings(lst["addresses"], "listen.addresses"))
    )
    if not listen:
        raise ConfigError("listen.addresses is empty: give at least one ADDR:PORT", key="listen")
    allow = tuple(
        _network(c, key="--allow" if flags.allow else "listen.allow")
        for c in (flags.allow or _strings(lst["allow"], "listen.allow"))
    )
    try:
        render = RenderOptions(
            header=_choice(out["header"], HEADERS, "output.header"),  # type: ignore[arg-type]
            body=_choice(out["body"], BODIES, "output.body"),  # type: ignore[arg-type]
            tag=_string(out["tag"], "output.tag"),
            pri=FACILITIES[_choice(out["facility"], tuple(FACILITIES), "output.facility")] * 8
            + SEVERITIES[_choice(out["severity"], tuple(SEVERITIES), "output.severity")],
        )
    except ValueError as exc:
        raise ConfigError(f"output.tag: {exc}", key="output.tag") from None
    framing = _choice(
        flags.framing or out["framing"],
        FRAMINGS,
        "--framing" if flags.framing else "output.framing",
    )

    if flags.spool:
        directory = Path(flags.spool)
    elif "directory" not in doc.get("spool", {}) and env.get("STATE_DIRECTORY"):
        # Under systemd's StateDirectory= the unit tells us where our state lives.
        directory = Path(env["STATE_DIRECTORY"].split(":")[0]) / "spool"
    else:
        directory = Path(_string(spl["directory"], "spool.directory"))

    endpoints = _endpoints(doc.get("endpoint", []), flags)
    metrics_addr = flags.metrics if flags.metrics is not None else met["address"]
    metrics = (
        None
        if metrics_addr in ("", "off", "none")
        else parse_hostport(
            _string(metrics_addr, "metrics.address"), key="metrics.address", bind=True
        )
    )
    workers = flags.workers if flags.workers is not None else lst["workers"]
    config = Config(
        listen=listen,
        receive_buffer=_size(lst["receive_buffer"], "listen.receive_buffer"),
        allow=allow,
        workers=_int(workers, "listen.workers", 1, 64),
        render=render,
        framing=framing,
        spool_dir=directory,
        spool_max_bytes=_size(spl["max_size"], "spool.max_size", minimum=1 << 20),
        spool_segment_bytes=_size(spl["segment_size"], "spool.segment_size", minimum=64 << 10),
        overflow=_choice(spl["overflow"], ("drop-oldest", "drop-newest"), "spool.overflow"),
        fsync=_choice(
            flags.fsync or spl["fsync"],
            ("always", "interval", "never"),
            "--fsync" if flags.fsync else "spool.fsync",
        ),
        fsync_interval=_float(spl["fsync_interval"], "spool.fsync_interval", 0.01, 60),
        endpoints=endpoints,
        tls=_bool(fwd["tls"], "forward.tls"),
        verify=_bool(fwd["verify"], "forward.verify"),
        backoff_initial=_float(fwd["backoff_initial"], "forward.backoff_initial", 0.01, 600),
        backoff_max=_float(fwd["backoff_max"], "forward.backoff_max", 0.01, 3600),
        connect_timeout=_float(fwd["connect_timeout"], "forward.connect_timeout", 0.1, 600),
        primary_retry_interval=_float(
            fwd["primary_retry_interval"], "forward.primary_retry_interval", 1, 86400
        ),
        batch_bytes=_size(fwd["batch_size"], "forward.batch_size", minimum=64 << 10),
        drain_timeout=_float(fwd["drain_timeout"], "forward.drain_timeout", 0, 3600),
        stall_timeout=_float(fwd["stall_timeout"], "forward.stall_timeout", 2, 3600),
        failover_after=_int(fwd["failover_after"], "forward.failover_after", 1, 100),
        metrics=metrics,
        log_format=_choice(
            flags.log_format or log["format"],
            ("json", "text"),
            "--log-format" if flags.log_format else "log.format",
        ),
        log_level=_choice(
            str(log["level"]).lower(), ("debug", "info", "warning", "error"), "log.level"
        ),
        stats_interval=_float(log["stats_interval"], "log.stats_interval", 1, 86400),
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
                            f"unknown key endpoint[{i}].{k} (known: {known})",
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
                    f"unknown key {name}.{k} (known in [{name}]: {known})", key=f"{name}.{k}"
                )


def _endpoints(tables: list[dict[str, Any]], flags: Overrides) -> tuple[EndpointConfig, ...]:
    found: list[EndpointConfig] = []
    if flags.endpoints:
        for text in flags.endpoints:
            hp = parse_hostport(text, key="--endpoint")
            found.append(EndpointConfig(host=hp.host, port=hp.port))
    else:
        for i, table in enumerate(tables):
            key = f"endpoint[{i}]"
            if "host" not in table or "port" not in table:
                raise ConfigError(f"{key} needs both host and port", key=f"{key}.host")
            found.append(
                EndpointConfig(
                    host=_string(table["host"], f"{key}.host"),
                    port=_int(table["port"], f"{key}.port", 1, 65535),
                    ca=_path(table.get("ca"), f"{key}.ca"),
                    cert=_path(table.get("cert"), f"{key}.cert"),
                    key=_path(table.get("key"), f"{key}.key"),
                    server_name=table.get("server_name") or None,
                )
            )
    # --ca/--cert/--key/--server-name apply to every endpoint.
    result = tuple(
        replace(
            e,
            ca=Path(flags.ca) if flags.ca else e.ca,
            cert=Path(flags.cert) if flags.cert else e.cert,
            key=Path(flags.key) if flags.key else e.key,
            server_name=flags.server_name or e.server_name,
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


def _choice(value: Any, choices: Sequence[str], key: str) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)} (got {value!r})", key=key)
    return str(value)


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string (got {value!r})", key=key)
    return value


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a list of strings (got {value!r})", key=key)
    return value


def _path(value: Any, key: str) -> Path | None:
    return None if value in (None, "") else Path(_string(value, key))


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false (got {value!r})", key=key)
    return value


def _int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{key} must be a whole number from {low} to {high} (got {value!r})", key=key
        )
    return value


def _float(value: Any, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{key} must be a number from {low} to {high} (got {value!r})", key=key)
    return float(value)


def _size(value: Any, key: str, *, minimum: int = 1) -> int:
    """Bytes as a number or a string with a binary unit: 1048576, "512MiB", "1 GiB"."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.fullmatch(value)):
        unit = (m.group(2) or "").upper()[:1]
        size = int(m.group(1)) * _UNITS[unit]
    else:
        raise ConfigError(
            f'{key} must be a size in bytes such as 1048576 or "512MiB" (got {value!r})',
            key=key,
        )
    if size < minimum:
        raise ConfigError(f"{key} must be at least {minimum} bytes (got {value!r})", key=key)
    return size


def _network(text: str, *, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a CIDR such as 10.0.0.0/8", key=key) from None
