"""``relay run`` subprocesses in tests: the runner is relay.testing.process; this adds what
only the suite needs (where the checkout is, and the names tests import)."""

from __future__ import annotations

from pathlib import Path

from relay.testing.process import (
    LOOPBACK,
    START_TIMEOUT,
    RelayProcess,
    http_get,
    http_get_async,
    log_events,
    parse_summary,
    relay_processes,
    tls_args,
)
from relay.testing.prometheus import Scrape, parse_metrics

REPO = Path(__file__).resolve().parents[2]

__all__ = [
    "LOOPBACK",
    "REPO",
    "START_TIMEOUT",
    "RelayProcess",
    "Scrape",
    "http_get",
    "http_get_async",
    "log_events",
    "parse_metrics",
    "parse_summary",
    "relay_processes",
    "tls_args",
]
