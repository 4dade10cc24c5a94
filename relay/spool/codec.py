"""The spool's on-disk format, as pure functions: bytes in, bytes or values out.

A segment file is::

    file header   16 bytes   magic b"FRSPOOL1", segment id (u64 LE)
    frame*                   one per syslog line
    seal?         24 bytes   a frame with the seal flag, written when the segment is closed

A frame is an 8-byte header and the payload::

    word   u32 LE   bits 0-22 payload length, bit 23 seal flag, bits 24-31 check byte
    crc    u32 LE   zlib.crc32(payload)

Why this shape:

- The check byte is the XOR of the word's three low bytes and 0x5A. A single flipped bit
  anywhere in the word changes that XOR, so a damaged length is always caught before it is
  trusted (a CRC over a span chosen by a damaged length is only probably caught). The 0x5A
  makes an all-zero header invalid: zero-filled blocks are what a power cut tends to leave.
- CRC-32 catches every burst of up to 32 flipped bits, so every single flip in a payload or
  in the crc field is caught too. Together: every single-bit flip in a segment is detected,
  deterministically (tests/spool/test_store.py checks each one).
- The seal records the segment's line count, so a restart trusts a sealed segment's count
  without reading it; frames are still checked when they are read.

Decoding never raises on bad data: it returns the intact prefix of frames and says why it
stopped (``Stop``). Whether a frame cut off by the end of the buffer is a torn tail or just
the edge of a chunk is for the caller to decide.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CURSOR_MAX_SIZE",
    "FILE_HEADER_SIZE",
    "FRAME_HEADER_SIZE",
    "MAGIC",
    "MAX_LINE",
    "SEAL_SIZE",
    "Decoded",
    "Seal",
    "SegmentScan",
    "Stop",
    "decode_cursor",
    "decode_file_header",
    "decode_frames",
    "decode_seal",
    "decode_segment",
    "encode_cursor",
    "encode_file_header",
    "encode_frames",
    "encode_seal",
    "encode_segment",
]

MAGIC = b"FRSPOOL1"
_FILE_HEADER = struct.Struct("<8sQ")
FILE_HEADER_SIZE = _FILE_HEADER.size

_FRAME_HEADER = struct.Struct("<II")
FRAME_HEADER_SIZE = _FRAME_HEADER.size

_LENGTH_MASK = (1 << 23) - 1
_SEAL_FLAG = 1 << 23
MAX_LINE = _LENGTH_MASK
"""Longest payload a frame can carry (8 MiB - 1); rendered syslog lines are far shorter."""

_SEAL_PAYLOAD = struct.Struct("<QQ")  # segment id, line count
SEAL_SIZE = FRAME_HEADER_SIZE + _SEAL_PAYLOAD.size


def _word(length: int, flags: int = 0) -> int:
    low = length | flags
    check = (low ^ (low >> 8) ^ (low >> 16) ^ 0x5A) & 0xFF
    return low | (check << 24)


# Lines are a few hundred bytes: a table lookup is cheaper than computing the check byte
# per line, which matters at a million lines a second.
_WORDS: list[int] = [_word(n) for n in range(1 << 16)]
_word_of = _WORDS.__getitem__
_pack_header = _FRAME_HEADER.pack
_unpack_header = _FRAME_HEADER.unpack_from
_crc32 = zlib.crc32


def _line_word(length: int) -> int:
    if length > MAX_LINE:
        raise ValueError(f"a spool line is limited to {MAX_LINE} bytes, got {length}")
    return _word(length)


def encode_frames(lines: Sequence[bytes]) -> bytes:
    """One frame per line, concatenated. Raises ValueError for a line over MAX_LINE."""
    parts: list[bytes] = [b""] * (2 * len(lines))
    try:
        # map() over C functions keeps the per-line cost to the CRC itself.
        parts[::2] = map(_pack_header, map(_word_of, map(len, lines)), map(_crc32, lines))
    except IndexError:  # a line of 64 KiB or more: outside the table
        parts[::2] = [_pack_header(_line_word(len(line)), _crc32(line)) for line in lines]
    parts[1::2] = lines
    return b"".join(parts)


def encode_seal(segment: int, lines: int) -> bytes:
    payload = _SEAL_PAYLOAD.pack(segment, lines)
    return _pack_header(_word(len(payload), _SEAL_FLAG), _crc32(payload)) + payload


def encode_file_header(segment: int) -> bytes:
    return _FILE_HEADER.pack(MAGIC, segment)


def decode_file_header(data: bytes, segment: int) -> bool:
    """True when ``data`` starts with the header of segment ``segment``."""
    if len(data) < FILE_HEADER_SIZE:
        return False
    magic, found = _FILE_HEADER.unpack_from(data)
    return bool(magic == MAGIC and found == segment)


@dataclass(frozen=True, slots=True, kw_only=True)
class Seal:
    segment: int
    lines: int


def decode_seal(data: bytes, segment: int) -> Seal | None:
    """The seal in ``data`` (exactly SEAL_SIZE bytes) if it is intact and names ``segment``."""
    if len(data) != SEAL_SIZE:
        return None
    word, crc = _unpack_header(data)
    payload = data[FRAME_HEADER_SIZE:]
    if word != _word(_SEAL_PAYLOAD.size, _SEAL_FLAG) or _crc32(payload) != crc:
        return None
    found, lines = _SEAL_PAYLOAD.unpack(payload)
    if found != segment:
        return None
    return Seal(segment=found, lines=lines)


class Stop(StrEnum):
    """Why decode_frames stopped."""

    END = "end"  # the data ended exactly at a frame boundary
    LIMIT = "limit"  # max_bytes or max_lines reached; more frames may follow
    PARTIAL = "partial"  # the data ends inside a frame (torn tail, or the edge of a chunk)
    CORRUPT = "corrupt"  # a frame failed its check byte or CRC
    SEAL = "seal"  # a seal frame starts at ``end``


@dataclass(frozen=True, slots=True, kw_only=True)
class Decoded:
    lines: list[bytes]
    """Payloads of the intact line frames, in order (empty when keep_lines=False)."""
    count: int
    """How many intact line frames were decoded."""
    nbytes: int
    """Sum of the payload lengths."""
    end: int
    """Offset in the buffer just past the last intact line frame."""
    stop: Stop
    need: int = 0
    """When stop is PARTIAL: bytes from ``end`` needed to hold the whole next frame."""
    seal: Seal | None = None
    """When stop is SEAL: the seal at ``end``, if it is intact (else stop is CORRUPT)."""


def decode_frames(
    data: bytes | memoryview,
    start: int = 0,
    *,
    max_bytes: int | None = None,
    max_lines: int | None = None,
    keep_lines: bool = True,
) -> Decoded:
    """Decode the frames in ``data[start:]``, stopping at the first damage.

    ``max_bytes`` limits the payload bytes returned, but at least one line is returned when
    one is intact. A seal frame stops decoding (``seal`` carries it; it names no segment here,
    so its segment field is whatever was written).
    """
    # Slicing bytes copies each payload once (kept as the line, CRC'd in place); when only
    # counting, memoryview slices copy nothing.
    buf: bytes | memoryview = memoryview(data)
    if keep_lines and not isinstance(data, bytes):
        buf = bytes(data)
    elif keep_lines:
        buf = data
    size = len(buf)
    limit_bytes = size if max_bytes is None else max_bytes
    limit_lines = size if max_lines is None else max_lines
    lines: list[bytes] = []
    keep = lines.append
    words = _WORDS
    pos = start
    count = 0
    nbytes = 0
    stop = Stop.END
    need = 0
    seal: Seal | None = None
    while True:
        if pos + FRAME_HEADER_SIZE > size:
            if pos < size:
                stop, need = Stop.PARTIAL, FRAME_HEADER_SIZE
            break
        word, crc = _unpack_header(buf, pos)
        low = word & 0xFFFFFF
        if (words[low] if low < 0x10000 else _word(low)) != word:
            stop = Stop.CORRUPT
            break
        body = pos + FRAME_HEADER_SIZE
        end = body + (word & _LENGTH_MASK)
        if end > size:
            stop, need = Stop.PARTIAL, end - pos
            break
        payload = buf[body:end]
        if _crc32(payload) != crc:
            stop = Stop.CORRUPT
            break
        if word & _SEAL_FLAG:
            if end - body != _SEAL_PAYLOAD.size:
                stop = Stop.CORRUPT
                break
            found, sealed_lines = _SEAL_PAYLOAD.unpack(payload)
            stop, seal = Stop.SEAL, Seal(segment=found, lines=sealed_lines)
            break
        length = end - body
        if count and (nbytes + length > limit_bytes or count >= limit_lines):
            stop = Stop.LIMIT
            break
        if keep_lines:
            keep(payload)  # type: ignore[arg-type]  # bytes: buf is bytes when keeping
        count += 1
        nbytes += length
        pos = end
    return Decoded(
        lines=lines, count=count, nbytes=nbytes, end=pos, stop=stop, need=need, seal=seal
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentScan:
    lines: list[bytes]
    """The intact prefix of lines."""
    end: int
    """Offset just past the last intact line frame: where the damage starts, if any."""
    sealed: bool
    """True only for a whole segment: valid header, intact frames, a seal that matches."""
    stop: Stop
    """END (unsealed, clean), SEAL (sealed, clean), PARTIAL (torn) or CORRUPT."""


def encode_segment(segment: int, lines: Sequence[bytes], *, sealed: bool = True) -> bytes:
    """A whole segment file (used by tests and tools; the spool writes it piecewise)."""
    data = encode_file_header(segment) + encode_frames(lines)
    return data + encode_seal(segment, len(lines)) if sealed else data


def decode_segment(data: bytes, segment: int) -> SegmentScan:
    """Check a whole segment file: the intact prefix of lines and whether it is whole."""
    if not decode_file_header(data, segment):
        return SegmentScan(lines=[], end=0, sealed=False, stop=Stop.CORRUPT)
    decoded = decode_frames(data, FILE_HEADER_SIZE)
    stop = decoded.stop
    if stop is Stop.SEAL:
        seal = decoded.seal
        whole = decoded.end + SEAL_SIZE == len(data)
        if seal is None or seal.segment != segment or seal.lines != decoded.count or not whole:
            stop = Stop.CORRUPT
    return SegmentScan(lines=decoded.lines, end=decoded.end, sealed=stop is Stop.SEAL, stop=stop)


_CURSOR_PREFIX = b"flowrelay-spool-cursor 1 "
CURSOR_MAX_SIZE = 128


def encode_cursor(segment: int, offset: int, index: int) -> bytes:
    """The cursor file: one line of text an operator can read, with its own CRC."""
    body = _CURSOR_PREFIX + b"%d %d %d" % (segment, offset, index)
    return body + b" %08x\n" % _crc32(body)


def decode_cursor(data: bytes) -> tuple[int, int, int] | None:
    """(segment, offset, index) or None if the file is damaged or not a cursor."""
    body, sep, tail = data.rstrip(b"\n").rpartition(b" ")
    if not sep or not body.startswith(_CURSOR_PREFIX) or tail != b"%08x" % _crc32(body):
        return None
    fields = body[len(_CURSOR_PREFIX) :].split(b" ")
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        return None
    return int(fields[0]), int(fields[1]), int(fields[2])
