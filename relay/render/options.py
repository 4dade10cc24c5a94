"""How a line is to look: header style, body style, tag and PRI, validated when built.

The one check of the ``[output]`` values (``framing`` is :mod:`relay.framing`'s): errors are
ConfigError naming the file's key; ``relay decode`` names its flags instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from relay.errors import ConfigError

# Literals, not enums: the renderer and its compiled fast path compare these words in many
# places, and a Literal is already one checked type.
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
            raise ConfigError(
                f"output.header must be one of {', '.join(HEADERS)} (got {self.header!r})",
                key="output.header",
            )
        if self.body not in BODIES:
            raise ConfigError(
                f"output.body must be one of {', '.join(BODIES)} (got {self.body!r})",
                key="output.body",
            )
        if not isinstance(self.tag, str) or not _TAG_RE.fullmatch(self.tag):
            raise ConfigError(
                "output.tag must be 1-48 printable ASCII characters without spaces "
                f"(got {self.tag!r})",
                key="output.tag",
            )
        if isinstance(self.pri, bool) or not isinstance(self.pri, int) or not 0 <= self.pri <= 191:
            raise ConfigError(f"pri must be between 0 and 191 (got {self.pri!r})", key="pri")
