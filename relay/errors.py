"""One error hierarchy; each boundary decides once what an error means.

- DecodeError: the exporter's fault. Counted by reason, logged rate-limited, datagram dropped.
- ConfigError / CertificateError: start-up stops with one sentence, exit code 78.
- UsageError: bad command line, exit code 2.
- EndpointError: stays inside the forwarder (nothing acknowledged, back off, retry).
- SpoolError: the disk buffer cannot be used at start (permissions, another format, the
  lock held by another relay): exit code 78, an operator must act.
  SpoolTransient, an I/O error on a spool that was usable (EIO from a failing disk, a
  segment that cannot be deleted) or no room to create it: exit code 75, which systemd
  retries, and the worker supervisor restarts the worker instead of stopping them all.

Anything else escaping a boundary is a bug.

The process exit codes live here too, beside the errors they stand for, so that the CLI, the
worker supervisor and the service mean the same thing by each number.
"""

from __future__ import annotations

EX_OK = 0
# The command ran and found a problem it reported (decode: unreadable files; certs check: an
# error finding; demo: lines missing).
EX_FAILURE = 1
# Bad command line (argparse's own code).
EX_USAGE = 2
# sysexits.h EX_CONFIG: the configuration cannot work. The systemd unit's
# RestartPreventExitStatus=78 stops the restart loop on it.
EX_CONFIG = 78
# sysexits.h EX_TEMPFAIL: a temporary condition (the spool's file system is full); the unit's
# Restart=always retries it, so the relay starts once space is free.
EX_TEMPFAIL = 75
# Ctrl-C before the relay's own signal handling was in place (128 + SIGINT).
EX_INTERRUPTED = 130


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class DecodeError(RelayError):
    """A datagram is not a NetFlow v1/v5/v6/v7 export we can decode.

    ``reason`` is a stable label used as the metrics label and in logs.
    """

    def __init__(
        self, reason: str, detail: str, *, version: int | None = None, offset: int | None = None
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.version = version
        self.offset = offset
        where = []
        if version is not None:
            where.append(f"netflow v{version}")
        if offset is not None:
            where.append(f"offset {offset}")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {detail}" if prefix else detail)


class UsageError(RelayError):
    """The command line is wrong (exit code 2)."""


class ConfigError(RelayError, ValueError):
    """A configuration the daemon cannot start with (exit code 78, EX_CONFIG).

    The message is one sentence naming the key or file and how to fix it. It is a ValueError
    too: the configuration dataclasses raise it when built with a bad value, as any
    constructor would.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class CertificateError(ConfigError):
    """A certificate, key or CA file is unusable; the message names the file."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        super().__init__(message, key=key)


class SpoolError(RelayError):
    """The spool directory cannot be used (permissions, missing disk)."""


class SpoolTransient(SpoolError):
    """The spool failed in a way that may pass (exit code 75, EX_TEMPFAIL): an I/O error
    while running, or no room to create it. Unlike a configuration error, a restart may
    succeed, so systemd must be allowed to retry."""


class SpoolDiskFull(SpoolTransient):
    """The spool directory cannot be created or opened because its file system is full."""


class EndpointError(RelayError):
    """A connection to an endpoint failed or broke; the forwarder retries."""

    def __init__(self, endpoint: str, cause: str) -> None:
        self.endpoint = endpoint
        self.cause = cause
        super().__init__(f"{endpoint}: {cause}")
