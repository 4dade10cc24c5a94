"""How a line is to look: header style, body style, tag and PRI, validated when built."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Header = Literal["rfc3164", "rfc5424"]
Body = Literal["json", "kv"]

HEADERS: tuple[Header, ...] = ("rfc3164", "rfc5424")
BODIES: tuple[Body, ...] = ("json", "kv")
DEFAULT_TAG = "netstat.netflow.lt"
DEFAULT_PRI = 14  # facility user (1) * 8 + severity informational (6)

# RFC 3164 TAG / RFC 5424 APP-NAME: printable US-ASCII without spaces, at most 48 characters.
_TAG_RE = re.compile(r"[!-~]{1,48}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderOptions:
    header: Header = "rfc3164"
    body: Body = "json"
    tag: str = DEFAULT_TAG
    pri: int = DEFAULT_PRI

    def __post_init__(self) -> None:
        if self.header not in HEADERS:
            raise ValueError(f"header must be one of {', '.join(HEADERS)}, not {self.header!r}")
        if self.body not in BODIES:
            raise ValueError(f"body must be one of {', '.join(BODIES)}, not {self.body!r}")
        if not _TAG_RE.fullmatch(self.tag):
            raise ValueError(
                f"tag {self.tag!r} must be 1-48 printable ASCII characters without spaces"
            )
        if not 0 <= self.pri <= 191:
            raise ValueError(f"pri must be between 0 and 191, not {self.pri}")
