"""Checks of single configuration values (pure).

Each takes a value as TOML (or a flag) gave it and the key it came from, and returns the typed
value or raises ConfigError with one sentence naming that key. :mod:`relay.config` puts them
together; here is what each kind of value may be.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay.addresses import HostPort, parse_hostport
from relay.errors import ConfigError

_SIZE_RE = re.compile(r"\s*([0-9]+)\s*([KMGT]i?B?|B)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# A DNS name as TLS (SNI, the certificate check) and getaddrinfo take it once IDNA-encoded:
# labels of letters, digits, '-' and '_' (internal names use it), 1-63 each, 253 in all.
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def bare_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted (a newline stays visible)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def bind_address(text: str, key: str) -> HostPort:
    address = parse_hostport(text, key=key, bind=True)
    hostname(address.host, key)
    return address


def optional_hostname(value: Any, key: str) -> str | None:
    """An optional name: unset and "" both mean "not given" (as they always have)."""
    return None if value is None or value == "" else hostname(value, key)


def choice(value: Any, choices: Sequence[str], key: str) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)} (got {value!r})", key=key)
    return str(value)


def string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string (got {value!r})", key=key)
    return value


def strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a list of strings (got {value!r})", key=key)
    return value


def path(value: Any, key: str) -> Path | None:
    if value is None or value == "":
        return None
    return Path(plain(string(value, key), key))


def plain(text: str, key: str) -> str:
    """A path or name of printable characters only: NUL cannot reach a system call, and a
    newline (or a Unicode line separator) would break the one-line error messages and log
    lines that quote it."""
    if not text.isprintable():
        raise ConfigError(
            f"{key} must not contain control or other unprintable characters (got {text!r})",
            key=key,
        )
    return text


def hostname(value: Any, key: str) -> str:
    """A host name or IP address, as TLS (SNI and the certificate check) and getaddrinfo will
    take it; checked here so that a bad one ends start-up instead of the first connection."""
    name = plain(string(value, key), key)
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    try:
        encoded = name.encode("idna").decode("ascii")
    except UnicodeError:
        encoded = ""
    labels = encoded[:-1].split(".") if encoded.endswith(".") else encoded.split(".")
    if not encoded or len(encoded) > 253 or not all(_LABEL_RE.fullmatch(x) for x in labels):
        raise ConfigError(
            f"{key} must be a host name such as logs.example.net or an IP address (got {value!r})",
            key=key,
        )
    return name


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false (got {value!r})", key=key)
    return value


def integer(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{key} must be a whole number from {low} to {high} (got {value!r})", key=key
        )
    return value


def number(value: Any, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{key} must be a number from {low} to {high} (got {value!r})", key=key)
    return float(value)


def size(value: Any, key: str, *, minimum: int = 1, maximum: int = 1 << 62) -> int:
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
    if size > maximum:
        raise ConfigError(
            f"{key} must be at most {maximum} bytes ({_binary(maximum)}; got {value!r})", key=key
        )
    return size


def _binary(size: int) -> str:
    """2147483647 → "2 GiB - 1", 67108864 → "64 MiB"."""
    for unit, name in ((1 << 50, "PiB"), (1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB")):
        if size % unit == 0:
            return f"{size // unit} {name}"
        if (size + 1) % unit == 0:
            return f"{(size + 1) // unit} {name} - 1"
    return f"{size} bytes"


def network(text: str, *, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a CIDR such as 10.0.0.0/8", key=key) from None
