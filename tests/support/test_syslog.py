"""The suite's syslog line parser: one-digit days, both headers, hosts with colons."""

from __future__ import annotations

import pytest

from support.syslog import parse_line


@pytest.mark.parametrize(
    ("line", "timestamp", "host"),
    [
        ("<14>Dec  2 13:04:05 10.0.0.1 netstat.netflow.lt: {}", "Dec  2 13:04:05", "10.0.0.1"),
        ("<14>Nov 23 13:04:05 2001:db8::1 flows: {}", "Nov 23 13:04:05", "2001:db8::1"),
        ("<14>1 2026-12-02T13:04:05.123Z ::1 netstat.netflow.lt - - - {}",
         "2026-12-02T13:04:05.123Z", "::1"),
    ],
)  # fmt: skip
def test_a_line_parses_into_its_parts_whatever_the_day(
    line: str, timestamp: str, host: str
) -> None:
    parsed = parse_line(line.encode())
    assert parsed.timestamp == timestamp
    assert parsed.host == host
    assert parsed.tag in {"netstat.netflow.lt", "flows"}
    assert parsed.body == "{}"


def test_a_line_without_a_header_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a syslog line"):
        parse_line("Dec 2 13:04:05 host tag: body")
