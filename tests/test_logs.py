"""Logging: the rate limiter (pure, time injected) and the two output formats (SPEC
"Observability": one JSON object per line by default, plain text on request)."""

from __future__ import annotations

import calendar
import json
import logging
import re
import sys
import time
from collections.abc import Iterator

import pytest

from relay.logs import RateLimitedLog, RateLimiter, TextFormatter, configure

# ---- RateLimiter ----------------------------------------------------------------------------


def test_burst_then_muted_within_the_interval() -> None:
    limiter = RateLimiter(interval=10.0, burst=3)
    verdicts = [limiter.allow("k", 100.0 + i * 0.1) for i in range(10)]
    assert verdicts[:3] == [(True, 0)] * 3
    assert verdicts[3:] == [(False, 0)] * 7


def test_next_interval_reports_how_many_were_skipped_once() -> None:
    limiter = RateLimiter(interval=10.0, burst=2)
    for i in range(50):
        limiter.allow("k", 0.0 + i * 0.01)
    assert limiter.allow("k", 9.99) == (False, 0)  # still the first interval
    assert limiter.allow("k", 10.0) == (True, 49)  # 50 + 1 tried, 2 logged
    # The count is reported once; the new interval starts clean.
    assert limiter.allow("k", 10.1) == (True, 0)
    assert limiter.allow("k", 10.2) == (False, 0)
    assert limiter.allow("k", 25.0) == (True, 1)


def test_quiet_key_reports_nothing_skipped() -> None:
    limiter = RateLimiter(interval=5.0, burst=1)
    assert limiter.allow("k", 0.0) == (True, 0)
    assert limiter.allow("k", 60.0) == (True, 0)


def test_keys_are_limited_independently() -> None:
    limiter = RateLimiter(interval=10.0, burst=1)
    assert limiter.allow(("malformed", "10.0.0.1"), 0.0) == (True, 0)
    assert limiter.allow(("malformed", "10.0.0.1"), 0.1) == (False, 0)
    # Another exporter, or another event from the same one, is not muted by the first.
    assert limiter.allow(("malformed", "10.0.0.2"), 0.2) == (True, 0)
    assert limiter.allow(("denied", "10.0.0.1"), 0.3) == (True, 0)


def test_at_most_burst_per_interval_over_a_long_flood() -> None:
    limiter = RateLimiter(interval=10.0, burst=5)
    logged = skipped = 0
    for i in range(10_000):  # 100 s of 100 events per second
        allowed, n = limiter.allow("k", i * 0.01)
        logged += allowed
        skipped += n
    assert logged == 5 * 10
    # Every event is either logged or reported as skipped by a later line, except those
    # muted in the last, still open, interval.
    assert logged + skipped == 10_000 - (1000 - 5)


# ---- configure() and the formats ------------------------------------------------------------


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line]


@pytest.mark.usefixtures("restore_root_logger")
def test_json_is_one_object_per_line_with_the_standard_and_extra_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(fmt="json", level="info")
    log = logging.getLogger("relay.ingest")
    before = time.time()
    log.warning(
        "datagram dropped: unsupported version 9",
        extra={"event": "datagram_malformed", "exporter": "10.0.0.1", "reason": "unknown_version"},
    )
    log.info("relay started", extra={"event": "started", "pending_lines": 3})
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "datagram dropped: unsupported version 9"
    assert first["level"].lower() == "warning"
    assert first["logger"] == "relay.ingest"
    assert first["event"] == "datagram_malformed"
    assert first["exporter"] == "10.0.0.1"
    assert first["reason"] == "unknown_version"
    assert second["event"] == "started"
    assert second["pending_lines"] == 3  # numbers stay numbers
    # UTC timestamp, second precision, within the test's run time.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["time"])
    stamp = calendar.timegm(time.strptime(first["time"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before - 2 <= stamp <= time.time() + 1


@pytest.mark.usefixtures("restore_root_logger")
def test_json_keeps_multiline_messages_and_tracebacks_on_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(fmt="json")
    log = logging.getLogger("relay.test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("first line\nsecond line", extra={"event": "crash"})
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == "first line\nsecond line"
    assert record["event"] == "crash"
    assert "ValueError: boom" in json.dumps(record)


@pytest.mark.usefixtures("restore_root_logger")
def test_level_filters_and_reconfiguring_does_not_duplicate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(fmt="json", level="info")
    configure(fmt="json", level="warning")
    log = logging.getLogger("relay.test")
    log.info("hidden", extra={"event": "x"})
    log.debug("hidden too")
    log.warning("shown", extra={"event": "y"})
    lines = _lines(capsys.readouterr().err)
    assert [json.loads(line)["message"] for line in lines] == ["shown"]


@pytest.mark.usefixtures("restore_root_logger")
def test_text_format_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    configure(fmt="text", level="info")
    logging.getLogger("relay.ingest").warning(
        "datagram dropped: header count is 0",
        extra={"event": "datagram_malformed", "exporter": "10.0.0.1", "skipped": 12},
    )
    logging.getLogger("relay.service").info("plain sentence")
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 2
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ warning \[datagram_malformed\] "
        r"datagram dropped: header count is 0 exporter=10\.0\.0\.1 skipped=12",
        lines[0],
    ), lines[0]
    assert lines[1].endswith(" info plain sentence")
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_text_formatter_appends_the_traceback() -> None:
    try:
        raise KeyError("k")
    except KeyError:
        record = logging.LogRecord(
            "relay", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    text = TextFormatter().format(record)
    assert text.splitlines()[0].endswith(" error failed")
    assert "KeyError: 'k'" in text


def test_rate_limited_log_mutes_a_flood_and_reports_the_count_with_the_next_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("flood"), clock=lambda: now[0], interval=10, burst=2)
    with caplog.at_level(logging.WARNING, logger="flood"):
        logged = [log.emit("disk", "disk full", event="spool_drop") for _ in range(50)]
        assert logged == [True, True] + [False] * 48
        assert log.emit("other", "another kind", event="spool_drop")  # its own limit
        now[0] = 10.0
        assert log.emit("disk", "disk full", event="spool_drop", lines=3)
    records = [r for r in caplog.records if r.getMessage() == "disk full"]
    assert len(records) == 3
    assert not hasattr(records[0], "skipped")
    assert records[2].__dict__["skipped"] == 48
    assert records[2].__dict__["lines"] == 3
    assert records[2].__dict__["event"] == "spool_drop"


def test_a_flood_of_distinct_keys_costs_the_events_limit_and_the_next_line_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Forged source addresses are free: 50,000 of them must not mean 50,000 lines."""
    now = [0.0]
    log = RateLimitedLog(
        logging.getLogger("forged"), clock=lambda: now[0], interval=10, burst=5, event_burst=20
    )
    with caplog.at_level(logging.WARNING, logger="forged"):
        for i in range(50_000):
            log.emit(("denied", f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"), "denied",
                     event="datagram_denied")  # fmt: skip
        now[0] = 10.0
        assert log.emit(("denied", "192.0.2.1"), "denied", event="datagram_denied")
    records = caplog.records
    assert len(records) == 21
    assert records[-1].__dict__["skipped_event"] == 50_000 - 20


def test_the_limiter_forgets_its_oldest_keys_and_stays_bounded() -> None:
    limiter = RateLimiter(interval=10.0, burst=1, max_keys=100)
    for i in range(1000):
        limiter.allow(i, 0.0)
    assert len(limiter._windows) == 100
    # A recent key is still muted; forgetting did not unmute everyone.
    assert limiter.allow(999, 0.1) == (False, 0)
