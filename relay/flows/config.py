"""The ``[templates]`` section: how NetFlow v9 / IPFIX templates and early data are kept.

SPEC "NetFlow v9 (RFC 3954) and IPFIX": templates are scoped per exporter (and, with
``scope = "address-port"``, per source port), bounded per exporter and in total, forgotten
when not refreshed for ``max_age``, and kept in the state file when ``persist``; a data set
whose template has not come yet is held for ``hold_age``, bounded in bytes. The defaults are
the template cache's and the holding's own (relay/flows/templates.py, holding.py).

One check: ``__post_init__`` takes what the file gave (sizes may have units, the scope is its
word) and stores the typed value, or raises ConfigError naming ``templates.<key>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relay import values
from relay.errors import ConfigError
from relay.flows import holding, templates


class TemplateScopeMode(StrEnum):
    """What besides the Source ID / Observation Domain scopes a template."""

    ADDRESS = "address"  # the exporter's address (nfdump, pmacct, Akvorado)
    ADDRESS_PORT = "address-port"  # and its UDP source port: several processes, one address


# An exporter silent for a month is gone; held data costs memory while it waits.
MAX_TEMPLATE_AGE = 30 * 86400.0
MAX_HOLD_AGE = 3600.0
# A set's length is 16 bits: each byte bound holds at least one largest set.
MIN_BYTES = 64 << 10
# The state file keeps at most 16 MiB of templates (relay/flows/template_store.py).
MAX_TEMPLATE_BYTES = 16 << 20
MAX_HOLD_BYTES = 1 << 30
MAX_TEMPLATES = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplatesConfig:
    scope: TemplateScopeMode = TemplateScopeMode.ADDRESS
    # Seconds a template lives without being sent again.
    max_age: float = templates.DEFAULT_MAX_AGE
    # Keep templates in the state file and restore them on start.
    persist: bool = True
    # Templates per exporter address, and in all; their wire sizes, likewise.
    max_per_exporter: int = templates.DEFAULT_MAX_TEMPLATES_PER_EXPORTER
    max_total: int = templates.DEFAULT_MAX_TEMPLATES
    max_bytes_per_exporter: int = templates.DEFAULT_MAX_BYTES_PER_EXPORTER
    max_bytes: int = templates.DEFAULT_MAX_BYTES
    # Seconds a data set without its template is held; bytes held per exporter and in all.
    hold_age: float = holding.DEFAULT_HOLD_AGE
    hold_bytes_per_exporter: int = holding.DEFAULT_MAX_BYTES_PER_EXPORTER
    hold_bytes: int = holding.DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        scope = values.choice(self.scope, tuple(TemplateScopeMode), "templates.scope")
        set_(self, "scope", TemplateScopeMode(scope))
        set_(self, "max_age", _seconds(self.max_age, "templates.max_age", MAX_TEMPLATE_AGE))
        set_(self, "hold_age", _seconds(self.hold_age, "templates.hold_age", MAX_HOLD_AGE))
        values.boolean(self.persist, "templates.persist")
        for name in ("max_per_exporter", "max_total"):
            set_(
                self,
                name,
                values.integer(getattr(self, name), f"templates.{name}", 1, MAX_TEMPLATES),
            )
        for name, maximum in (
            ("max_bytes_per_exporter", MAX_TEMPLATE_BYTES),
            ("max_bytes", MAX_TEMPLATE_BYTES),
            ("hold_bytes_per_exporter", MAX_HOLD_BYTES),
            ("hold_bytes", MAX_HOLD_BYTES),
        ):
            size = values.size(
                getattr(self, name), f"templates.{name}", minimum=MIN_BYTES, maximum=maximum
            )
            set_(self, name, size)
        for part, whole in (
            ("max_per_exporter", "max_total"),
            ("max_bytes_per_exporter", "max_bytes"),
            ("hold_bytes_per_exporter", "hold_bytes"),
        ):
            if getattr(self, part) > getattr(self, whole):
                raise ConfigError(
                    f"templates.{part} must not be larger than templates.{whole}",
                    key=f"templates.{part}",
                )


def _seconds(value: Any, key: str, maximum: float) -> float:
    """A time above 0 (0 would forget, or never hold, everything at once)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 and math.isfinite(value) and value <= maximum)
    ):
        raise ConfigError(
            f"{key} must be a number of seconds above 0 and at most {maximum:g} (got {value!r})",
            key=key,
        )
    return float(value)
