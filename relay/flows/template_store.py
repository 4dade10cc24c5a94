"""The template cache's state file: a pure codec, and the thin I/O that reads it and
replaces it atomically.

The file is::

    magic     8 bytes   b"FRTMPLS" and the format version, b"1"
    frame*              one per template, in relay/spool/codec.py's frame format
    seal                that codec's seal frame, carrying the number of templates

and a template's payload (little-endian)::

    version u8 (9 | 10), flags u8 (bit 0 options template, bit 1 port present), port u16,
    domain u32, template ID u16, scope field count u16, field count u16,
    learned at f64, last sent at f64 (seconds, the cache's clock), address length u8,
    address (ASCII, as the relay writes it: ``192.0.2.1``, ``2001:db8::1``),
    per field: element u16, length u16, enterprise number u32

Why this shape:

- The frames are the spool's (length with a check byte, CRC-32 of the payload), so every
  single flipped bit is caught, deterministically, by code already tested for it; the seal's
  count catches a file cut at a frame boundary, which frames alone cannot.
- Loading never raises on bad data and trusts nothing beyond its checks: every payload is
  checked field by field and built into the same frozen values a decoder makes (which check
  themselves). A foreign magic or another format version ignores the whole file; damage
  keeps the intact templates before it (each one passed its CRC and its checks, and a
  restored template is used only while data fits it) and says what was wrong.
- The size is bounded: the cache is bounded, and encoding stops at MAX_FILE_SIZE, keeping
  the most recently sent templates (the snapshot is least recent first). Loading reads no
  more than MAX_FILE_SIZE.
- Writing is atomic (temp file, fsync it, rename, fsync the directory): a rename that the
  directory fsync makes durable before the data it names left empty files after a power cut
  (issue 10, item 9).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from relay.addresses import exporter_address, normalize_ip
from relay.flows.template import FieldSpec, Template, TemplateScope
from relay.flows.templates import StoredTemplate
from relay.spool import codec

__all__ = [
    "FILE_NAME",
    "MAGIC",
    "MAX_FILE_SIZE",
    "Loaded",
    "Status",
    "decode_templates",
    "encode_templates",
    "load_templates",
    "save_templates",
]

logger = logging.getLogger(__name__)

FILE_NAME = "templates"
MAGIC_PREFIX = b"FRTMPLS"
MAGIC = MAGIC_PREFIX + b"1"
MAX_FILE_SIZE = 16 * 1024 * 1024
# The seal frame names a segment in the spool; here it names the kind of file, so a spool
# seal pasted in cannot pass for a templates seal.
_SEAL_ID = int.from_bytes(MAGIC, "little")

_HEAD = struct.Struct("<BBHIHHHddB")
_FIELD = struct.Struct("<HHI")
_OPTIONS = 1
_PORT = 2


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no file: a first start
    FOREIGN = "foreign"  # not a templates file
    OTHER_VERSION = "other_version"  # a templates file of another format version
    DAMAGED = "damaged"  # what passed the checks is kept; ``detail`` says what did not
    TOO_LARGE = "too_large"
    UNREADABLE = "unreadable"  # an OSError reading it


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    status: Status
    templates: list[StoredTemplate] = field(default_factory=list)
    rejected: int = 0  # intact frames whose content failed a check
    detail: str = ""


def _encode_one(item: StoredTemplate) -> bytes:
    scope, template = item.scope, item.template
    address = scope.exporter.encode("ascii")
    flags = (_OPTIONS if template.options else 0) | (0 if scope.port is None else _PORT)
    head = _HEAD.pack(
        scope.version,
        flags,
        scope.port or 0,
        scope.domain,
        template.template_id,
        template.scope_fields,
        len(template.fields),
        item.learned_at,
        item.refreshed_at,
        len(address),
    )
    fields = b"".join(_FIELD.pack(f.element, f.length, f.enterprise) for f in template.fields)
    return head + address + fields


def encode_templates(
    items: Sequence[StoredTemplate], *, max_size: int = MAX_FILE_SIZE
) -> tuple[bytes, int]:
    """The file for ``items`` (least recently sent first) and how many were left out to stay
    within ``max_size`` (the oldest go first)."""
    payloads = [_encode_one(item) for item in items]
    budget = max_size - len(MAGIC) - codec.SEAL_SIZE
    kept: list[bytes] = []
    for payload in reversed(payloads):
        cost = codec.FRAME_HEADER_SIZE + len(payload)
        if cost > budget:
            break
        budget -= cost
        kept.append(payload)
    kept.reverse()
    data = MAGIC + codec.encode_frames(kept) + codec.encode_seal(_SEAL_ID, len(kept))
    return data, len(payloads) - len(kept)


def _decode_one(payload: bytes) -> StoredTemplate | str:
    """The template in one intact frame, or why it is not one."""
    if len(payload) < _HEAD.size:
        return "record too short"
    (version, flags, port, domain, template_id, scope_fields, nfields, learned, refreshed,
     address_length) = _HEAD.unpack_from(payload)  # fmt: skip
    if version not in (9, 10) or flags & ~(_OPTIONS | _PORT) or (port and not flags & _PORT):
        return "bad version or flags"
    if len(payload) != _HEAD.size + address_length + nfields * _FIELD.size:
        return "record length does not match its field count"
    try:
        address = payload[_HEAD.size : _HEAD.size + address_length].decode("ascii")
    except UnicodeDecodeError:
        return "exporter address is not ASCII"
    if normalize_ip(address) is None or exporter_address(address) != address:
        return "exporter address is not an IP address as the relay writes it"
    if not (math.isfinite(learned) and math.isfinite(refreshed)):
        return "times are not finite"
    start = _HEAD.size + address_length
    try:
        fields = tuple(
            FieldSpec(element=e, length=n, enterprise=p)
            for e, n, p in _FIELD.iter_unpack(payload[start:])
        )
        template = Template(
            template_id=template_id,
            fields=fields,
            options=bool(flags & _OPTIONS),
            scope_fields=scope_fields,
        )
    except ValueError as exc:
        return str(exc)
    scope = TemplateScope(
        exporter=address, domain=domain, version=version, port=port if flags & _PORT else None
    )
    return StoredTemplate(
        scope=scope, template=template, learned_at=learned, refreshed_at=refreshed
    )


def decode_templates(data: bytes) -> Loaded:
    """The templates in a file's bytes; never raises on bad data."""
    if len(data) > MAX_FILE_SIZE:
        return Loaded(status=Status.TOO_LARGE, detail=f"larger than {MAX_FILE_SIZE} bytes")
    if not data.startswith(MAGIC):
        if data.startswith(MAGIC_PREFIX) and len(data) >= len(MAGIC):
            version = data[len(MAGIC_PREFIX) : len(MAGIC)]
            return Loaded(
                status=Status.OTHER_VERSION,
                detail=f"written in format version {version!r} by another relay version",
            )
        return Loaded(status=Status.FOREIGN, detail="not a templates file")
    decoded = codec.decode_frames(data, len(MAGIC))
    templates: list[StoredTemplate] = []
    rejected = 0
    first_reason = ""
    for payload in decoded.lines:
        item = _decode_one(payload)
        if isinstance(item, str):
            rejected += 1
            first_reason = first_reason or item
        else:
            templates.append(item)
    detail = ""
    stop = decoded.stop
    if stop is codec.Stop.SEAL:
        seal = decoded.seal
        if seal is None or seal.segment != _SEAL_ID or seal.lines != decoded.count:
            detail = "the seal does not match the records"
        elif decoded.end + codec.SEAL_SIZE != len(data):
            detail = "data after the seal"
    elif stop is codec.Stop.CORRUPT:
        detail = f"a damaged record at offset {decoded.end}"
    else:  # END or PARTIAL: the file was cut
        detail = f"cut off after {decoded.count} records"
    if rejected:
        detail = "; ".join(filter(None, (detail, f"{rejected} records rejected: {first_reason}")))
    status = Status.DAMAGED if detail else Status.OK
    return Loaded(status=status, templates=templates, rejected=rejected, detail=detail)


def load_templates(path: Path) -> Loaded:
    """Read the state file; anything but a clean file or none is logged (never raised)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        return Loaded(status=Status.MISSING)
    except OSError as exc:
        loaded = Loaded(status=Status.UNREADABLE, detail=exc.strerror or str(exc))
    else:
        loaded = decode_templates(data)
    if loaded.status is not Status.OK:
        logger.warning(
            "template file %s is %s (%s); %s",
            path,
            loaded.status.value.replace("_", " "),
            loaded.detail,
            f"restoring the {len(loaded.templates)} intact templates"
            if loaded.templates
            else "starting without restored templates",
            extra={
                "event": "template_file_invalid",
                "path": str(path),
                "status": loaded.status.value,
                "restored": len(loaded.templates),
            },
        )
    return loaded


def save_templates(path: Path, items: Sequence[StoredTemplate]) -> int:
    """Replace the state file atomically; returns how many templates were left out by the
    size bound. Raises OSError (the temp file is removed): the caller logs it, rate-limited,
    and the previous file stays whole."""
    data, omitted = encode_templates(items)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)  # before the rename: see the module docstring
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return omitted
