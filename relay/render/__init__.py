"""Flow records -> syslog lines (sans-IO); the wire framing is :mod:`relay.framing`."""

from __future__ import annotations

from relay.render.options import (
    BODIES,
    DEFAULT_PRI,
    DEFAULT_TAG,
    HEADERS,
    Body,
    Header,
    RenderOptions,
)
from relay.render.renderer import Rendered, Renderer, rfc3164_timestamp

__all__ = [
    "BODIES",
    "DEFAULT_PRI",
    "DEFAULT_TAG",
    "HEADERS",
    "Body",
    "Header",
    "RenderOptions",
    "Rendered",
    "Renderer",
    "rfc3164_timestamp",
]
