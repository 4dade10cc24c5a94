"""NetFlow v9 / IPFIX templates as values: what an exporter announced, and whose it is.

The wire decoders (v9 and IPFIX) produce these; the template cache keeps them, persists them
and finds them again; the renderer turns one into a layout. Keeping them plain frozen values
means the three never share mutable state, and a template restored from disk is the same
object as one just received.
"""

from __future__ import annotations

from dataclasses import dataclass

# IPFIX (RFC 7011 §7): a field length of 65535 means the value carries its own length.
VARIABLE_LENGTH = 65535


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldSpec:
    """One (element, length) pair of a template.

    ``element`` is the information element number without the enterprise bit; ``enterprise``
    is the Private Enterprise Number for an enterprise-specific element (IPFIX), 0 for an
    IANA element. v9 vendor field types (e.g. Cisco's 40005) are plain elements, enterprise 0.
    """

    element: int
    length: int
    enterprise: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.element <= 0xFFFF:
            raise ValueError(f"element {self.element} is not a 16-bit number")
        if not 0 <= self.length <= 0xFFFF:
            raise ValueError(f"field length {self.length} is not a 16-bit number")
        if not 0 <= self.enterprise <= 0xFFFFFFFF:
            raise ValueError(f"enterprise number {self.enterprise} is not a 32-bit number")

    @property
    def variable(self) -> bool:
        return self.length == VARIABLE_LENGTH


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    """A (data or options) template. For an options template the first ``scope_fields``
    fields are its scope (RFC 3954 §6.1, RFC 7011 §3.4.2.2); a data template has none."""

    template_id: int
    fields: tuple[FieldSpec, ...]
    options: bool = False
    scope_fields: int = 0

    def __post_init__(self) -> None:
        if not 256 <= self.template_id <= 0xFFFF:
            raise ValueError(f"template ID {self.template_id} is not between 256 and 65535")
        if not self.fields:
            raise ValueError(f"template {self.template_id} has no fields")
        if not 0 <= self.scope_fields <= len(self.fields) or (
            self.scope_fields and not self.options
        ):
            raise ValueError(f"template {self.template_id}: bad scope field count")

    @property
    def record_length(self) -> int | None:
        """Bytes per record, or None when a field is variable-length."""
        if any(f.variable for f in self.fields):
            return None
        return sum(f.length for f in self.fields)

    @property
    def minimum_length(self) -> int:
        """The fewest bytes a record can take (a variable field takes at least its 1-byte
        length prefix)."""
        return sum(1 if f.variable else f.length for f in self.fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateScope:
    """Whose template it is (SPEC "Templates"): the exporter's address and its v9 Source ID
    or IPFIX Observation Domain ID, plus the UDP source port only where
    ``templates.scope = "address-port"`` (``port`` is None otherwise)."""

    exporter: str
    domain: int
    version: int  # 9 or 10: a v9 template never serves IPFIX data, nor the reverse
    port: int | None = None
