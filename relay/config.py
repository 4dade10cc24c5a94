"""The relay's configuration: one TOML file, every key defaulted, flags override (pure).

``load(document, overrides)`` returns a frozen :class:`Config` or raises ConfigError with one
sentence naming the key (or the flag, where a flag gave the value). ``Config`` is a
composition of each component's own dataclass, and each checks its values once, in its
``__post_init__``, with its defaults beside it: :class:`relay.listen.ListenConfig` and
``MetricsConfig``, :class:`relay.render.RenderOptions` and :class:`relay.framing.Framing`
(``[output]``), :class:`relay.spool.config.SpoolConfig`,
:class:`relay.forward.config.ForwardSettings` and ``TlsSettings`` (``[forward]``),
:class:`relay.logs.LogConfig`, :class:`relay.flows.config.TemplatesConfig`. Here is only
what the file's shape needs: which keys exist, which flag overrides which key, facility and
severity names, the ``[[endpoint]]`` tables. File reading and certificate loading happen in
the callers; the checks of single values (types, ranges, host names, sizes) are in
:mod:`relay.values`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from relay import values
from relay.addresses import format_hostport, parse_hostport
from relay.errors import ConfigError
from relay.exporters import ExportersConfig
from relay.flows.config import TemplatesConfig
from relay.forward.config import MAX_BATCH_BYTES, ForwardSettings, TlsSettings
from relay.framing import FRAMINGS, Framing
from relay.listen import (
    DEFAULT_ALLOW,
    DEFAULT_LISTEN,
    MAX_RECEIVE_BUFFER,
    ListenConfig,
    MetricsConfig,
)
from relay.logs import LogConfig
from relay.render import DEFAULT_PRI, RenderOptions
from relay.spool.config import MAX_SEGMENT_BYTES, MAX_SPOOL_BYTES, SpoolConfig

__all__ = [
    "DEFAULT_ALLOW",
    "DEFAULT_LISTEN",
    "ENDPOINT_KEYS",
    "MAX_BATCH_BYTES",
    "MAX_RECEIVE_BUFFER",
    "MAX_SEGMENT_BYTES",
    "MAX_SPOOL_BYTES",
    "SCHEMA",
    "Config",
    "EndpointConfig",
    "Overrides",
    "flag_named",
    "load",
    "parse_toml",
    "to_document",
    "with_endpoints",
]

T = TypeVar("T")

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17,
    "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
SEVERITIES = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6,
    "debug": 7,
}  # fmt: skip
_FACILITY_NAMES = {v: k for k, v in FACILITIES.items()}
_SEVERITY_NAMES = {v: k for k, v in SEVERITIES.items()}
# Where a file key is not the field's name.
_FIELDS = {
    "spool": {"max_size": "max_bytes", "segment_size": "segment_bytes"},
    "forward": {"batch_size": "batch_bytes"},
}


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
    """The whole configuration, one field per section (``output.framing`` is ``framing``)."""

    listen: ListenConfig = field(default_factory=ListenConfig)
    output: RenderOptions = field(default_factory=RenderOptions)
    framing: Framing = Framing.NEWLINE
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    tls: TlsSettings = field(default_factory=TlsSettings)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    endpoints: tuple[EndpointConfig, ...] = ()
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    exporters: ExportersConfig = field(default_factory=ExportersConfig)


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
    out: dict[str, Any] = doc.get("output", {})
    spool: dict[str, Any] = dict(doc.get("spool", {}))
    forward = dict(doc.get("forward", {}))
    tls = {k: forward.pop(k) for k in ("tls", "verify") if k in forward}

    listen = _component(
        ListenConfig,
        "listen",
        doc.get("listen", {}),
        addresses=("--listen", flags.listen or None),
        allow=("--allow", flags.allow or None),
        workers=("--workers", flags.workers),
    )
    facility = out.get("facility", _FACILITY_NAMES[DEFAULT_PRI // 8])
    severity = out.get("severity", _SEVERITY_NAMES[DEFAULT_PRI % 8])
    output = RenderOptions(
        **{k: v for k, v in out.items() if k in ("header", "body", "tag")},
        pri=FACILITIES[values.choice(facility, tuple(FACILITIES), "output.facility")] * 8
        + SEVERITIES[values.choice(severity, tuple(SEVERITIES), "output.severity")],
    )
    framing = Framing(
        values.choice(
            flags.framing or out.get("framing", Framing.NEWLINE),
            FRAMINGS,
            "--framing" if flags.framing else "output.framing",
        )
    )
    if not flags.spool and "directory" not in spool and env.get("STATE_DIRECTORY"):
        # Under systemd's StateDirectory= the unit tells us where our state lives.
        spool["directory"] = Path(env["STATE_DIRECTORY"].split(":")[0]) / "spool"
    return Config(
        listen=listen,
        output=output,
        framing=framing,
        spool=_component(
            SpoolConfig,
            "spool",
            spool,
            directory=("--spool", flags.spool or None),
            fsync=("--fsync", flags.fsync or None),
        ),
        tls=_component(TlsSettings, "forward", tls),
        forward=_component(ForwardSettings, "forward", forward),
        endpoints=_endpoints(doc.get("endpoint", []), flags),
        metrics=_component(
            MetricsConfig, "metrics", doc.get("metrics", {}), address=("--metrics", flags.metrics)
        ),
        log=_component(
            LogConfig, "log", doc.get("log", {}), format=("--log-format", flags.log_format or None)
        ),
        templates=_component(TemplatesConfig, "templates", doc.get("templates", {})),
        exporters=_component(ExportersConfig, "exporters", doc.get("exporters", {})),
    )


def _component(
    cls: Callable[..., T], section: str, table: Mapping[str, Any], **flags: tuple[str, object]
) -> T:
    """``cls`` built from the file's ``[section]`` and the flags given (field = (flag, value),
    value None: not given); an error about a flag's value names the flag, not the key."""
    names = _FIELDS.get(section, {})
    keys = {v: k for k, v in names.items()}
    kwargs = {names.get(k, k): v for k, v in table.items()}
    renamed: dict[str, str] = {}
    for name, (flag, value) in flags.items():
        if value is not None:
            kwargs[name] = value
            renamed[f"{section}.{keys.get(name, name)}"] = flag
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise flag_named(exc, renamed) from None


def flag_named(exc: ConfigError, flags: Mapping[str, str]) -> ConfigError:
    """``exc`` as a user who gave the value by a flag meets it: naming the flag (``flags``
    maps file keys to flags), not the file's key."""
    if exc.key is None or exc.key not in flags:
        return exc
    flag = flags[exc.key]
    return ConfigError(str(exc).replace(exc.key, flag, 1), key=flag)


def to_document(config: Config) -> dict[str, Any]:
    """The configuration as a document with every key given: ``load(to_document(c)) == c``.

    The worker supervisor hands this to its workers, so that each runs with the configuration
    the supervisor resolved (file, flags and environment), not with a re-parsed command line.
    Sizes are written with their unit where one fits, as the example file writes them.
    """
    endpoints = []
    for e in config.endpoints:
        table: dict[str, Any] = {"host": e.host, "port": e.port}
        for name in ("ca", "cert", "key"):
            if (path := getattr(e, name)) is not None:
                table[name] = str(path)
        if e.server_name is not None:
            table["server_name"] = e.server_name
        endpoints.append(table)
    listen, spool, forward, tls = config.listen, config.spool, config.forward, config.tls
    t = config.templates
    address = config.metrics.address
    return {
        "listen": {
            "addresses": [str(a) for a in listen.addresses],
            "receive_buffer": _size(listen.receive_buffer),
            "allow": [str(n) for n in listen.allow],
            "workers": listen.workers,
        },
        "output": {
            "header": config.output.header,
            "body": config.output.body,
            "framing": str(config.framing),
            "tag": config.output.tag,
            "facility": _FACILITY_NAMES[config.output.pri // 8],
            "severity": _SEVERITY_NAMES[config.output.pri % 8],
        },
        "spool": {
            "directory": str(spool.directory),
            "max_size": _size(spool.max_bytes),
            "segment_size": _size(spool.segment_bytes),
            "overflow": str(spool.overflow),
            "fsync": str(spool.fsync),
            "fsync_interval": spool.fsync_interval,
        },
        "forward": {
            "tls": tls.tls,
            "verify": tls.verify,
            "backoff_initial": forward.backoff_initial,
            "backoff_max": forward.backoff_max,
            "connect_timeout": forward.connect_timeout,
            "primary_retry_interval": forward.primary_retry_interval,
            "batch_size": _size(forward.batch_bytes),
            "drain_timeout": forward.drain_timeout,
            "stall_timeout": forward.stall_timeout,
            "failover_after": forward.failover_after,
        },
        "metrics": {
            "address": "off" if address is None else str(address),
            "max_exporters": config.metrics.max_exporters,
        },
        "log": {
            "format": str(config.log.format),
            "level": str(config.log.level),
            "stats_interval": config.log.stats_interval,
        },
        "templates": {
            "scope": str(t.scope),
            "max_age": t.max_age,
            "persist": t.persist,
            "max_per_exporter": t.max_per_exporter,
            "max_total": t.max_total,
            "max_bytes_per_exporter": _size(t.max_bytes_per_exporter),
            "max_bytes": _size(t.max_bytes),
            "hold_age": t.hold_age,
            "hold_bytes_per_exporter": _size(t.hold_bytes_per_exporter),
            "hold_bytes": _size(t.hold_bytes),
        },
        "exporters": {"silent_after": config.exporters.silent_after},
        "endpoint": endpoints,
    }


def _size(size: int) -> int | str:
    """32 MiB as "32MiB", as the example file writes it; a size without a unit as is."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return size


# Every key the file may have, with its default (the example config documents each): the
# defaults of the components, written as a file writes them.
SCHEMA: dict[str, dict[str, Any]] = {
    name: table for name, table in to_document(Config()).items() if name != "endpoint"
}
ENDPOINT_KEYS = {"host", "port", "ca", "cert", "key", "server_name"}


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
