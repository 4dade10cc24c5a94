"""Syslog framing on the wire (RFC 6587 / RFC 5425): the one writer and the one reader.

Spool lines carry no framing; it is added when they go out. ``newline`` (the default, what
most receivers expect) ends every line with LF; ``octet-counting`` prefixes ``LEN SP``. The
writer side (:func:`frame_lines`, :func:`framed_size`, :func:`record_cuts`) is what the
forwarder sends; the reader side (:class:`FrameDecoder`) is what a receiver does with it, for
the test sink and for checks. Both are pure. Like h11's ``_writers`` / ``_readers``, there
is exactly one of each, so the two can never disagree about a framing.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from enum import StrEnum
from itertools import accumulate
from operator import add
from typing import Final


class Framing(StrEnum):
    """The file's ``output.framing``; a StrEnum, so it equals (and prints as) its word."""

    NEWLINE = "newline"
    OCTET_COUNTING = "octet-counting"


FRAMINGS: Final[tuple[Framing, ...]] = tuple(Framing)

# A TLS record carries at most 16 KiB of plaintext. Giving OpenSSL at most that much per write,
# cut at line ends, makes every record hold whole lines.
TLS_RECORD_PAYLOAD: Final = 16384

# RFC 5425 allows messages up to 2 GB; a reader that buffered that much for one frame would be
# a memory bomb, so frames beyond this are a framing error (rsyslog's default limit is 8 KiB).
DEFAULT_MAX_FRAME = 1 << 20
_MAX_DIGITS = len(str(DEFAULT_MAX_FRAME)) + 2
# A newline-framed run ends early where a frame starting with a digit (octet-counted) begins.
_DIGIT_AFTER_LF = re.compile(rb"\n[0-9]")

# ---- writer ---------------------------------------------------------------------------------


class _OctetPrefixes(dict[int, bytes]):
    """``b"LEN "`` per line length, made once: lines of a site have few distinct lengths,
    and a dict lookup inside ``map`` keeps framing out of per-line Python code."""

    def __missing__(self, length: int) -> bytes:
        prefix = b"%d " % length
        if len(self) < 1 << 16:
            self[length] = prefix
        return prefix


_OCTET_PREFIX = _OctetPrefixes()


def frame_lines(lines: Sequence[bytes], framing: Framing) -> bytes:
    """The wire bytes for ``lines`` (spool lines carry no framing)."""
    if not lines:
        return b""
    if framing == Framing.NEWLINE:
        return b"\n".join(lines) + b"\n"
    parts: list[bytes] = [b""] * (2 * len(lines))
    parts[0::2] = map(_OCTET_PREFIX.__getitem__, map(len, lines))
    parts[1::2] = lines
    return b"".join(parts)


def record_cuts(
    data: bytes, lines: Sequence[bytes], framing: Framing, limit: int = TLS_RECORD_PAYLOAD
) -> list[int]:
    """End offsets that cut ``data`` (= ``frame_lines(lines, framing)``) into pieces of whole
    lines, each at most ``limit`` bytes unless one line alone is longer.

    The last cut is ``len(data)``.
    """
    total = len(data)
    cuts: list[int] = []
    start = 0
    if framing == Framing.NEWLINE:
        # Lines never contain a newline, so the last newline inside the window ends a line;
        # searching the joined bytes keeps this out of per-line Python code.
        while start < total:
            if total - start <= limit:
                cuts.append(total)
                break
            nl = data.rfind(b"\n", start, start + limit)
            end = nl + 1 if nl >= 0 else data.index(b"\n", start + limit) + 1
            cuts.append(end)
            start = end
        return cuts
    lengths = list(map(len, lines))
    framed = map(add, lengths, map(len, map(_OCTET_PREFIX.__getitem__, lengths)))
    ends = list(accumulate(framed))
    while start < total:
        fit = bisect_right(ends, start + limit)
        end = ends[fit - 1] if fit and ends[fit - 1] > start else ends[bisect_right(ends, start)]
        cuts.append(end)
        start = end
    return cuts


def framed_size(lines: Sequence[bytes], framing: Framing) -> int:
    """Length of ``frame_lines(lines, framing)`` without building it."""
    total = sum(map(len, lines))
    if framing == Framing.NEWLINE:
        return total + len(lines)
    return total + sum(len(str(len(line))) + 1 for line in lines)


# ---- reader ---------------------------------------------------------------------------------


class FrameError(Exception):
    """The byte stream is not RFC 6587 framing; ``lines`` holds the frames decoded before."""

    def __init__(self, message: str, *, lines: list[bytes]) -> None:
        self.lines = lines
        super().__init__(message)


class FrameDecoder:
    """Split a syslog byte stream into messages, both RFC 6587 framings, fed in any pieces.

    A frame that starts with a digit is octet-counted (``LEN SP MSG``, MSG may hold newlines);
    any other frame runs to the next LF. Messages come out without framing; empty
    newline-framed messages (blank lines) are skipped.
    """

    __slots__ = ("_buffer", "_max_frame")

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes held of a frame that has not been completed yet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data``; return every message completed by it, in order.

        Raises :class:`FrameError` on an octet count that is not a number or too large, or a
        newline-framed message longer than the limit; the decoder is unusable afterwards.
        """
        buf = self._buffer
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        try:
            while pos < end:
                first = buf[pos]
                if 0x30 <= first <= 0x39:
                    space = buf.find(b" ", pos, pos + _MAX_DIGITS + 1)
                    if space < 0:
                        if end - pos > _MAX_DIGITS or not buf[pos:end].isdigit():
                            raise self._error(f"octet count {bytes(buf[pos : pos + 12])!r}", out)
                        break
                    digits = buf[pos:space]
                    if not digits.isdigit():
                        raise self._error(f"octet count {bytes(digits)!r} is not a number", out)
                    length = int(digits)
                    if length > self._max_frame:
                        raise self._error(
                            f"octet count {length} exceeds the {self._max_frame}-byte limit", out
                        )
                    stop = space + 1 + length
                    if stop > end:
                        break
                    if length:
                        out.append(bytes(buf[space + 1 : stop]))
                    pos = stop
                else:
                    last_lf = buf.rfind(b"\n", pos)
                    if last_lf < 0:
                        if end - pos > self._max_frame:
                            raise self._error(
                                f"a newline-framed message exceeds the {self._max_frame}-byte "
                                "limit",
                                out,
                            )
                        break
                    # Every frame in buf[pos:last_lf] is newline-framed up to the first one that
                    # starts with a digit: split that whole run at C speed.
                    match = _DIGIT_AFTER_LF.search(buf, pos, last_lf)
                    cut = match.start() if match else last_lf
                    out.extend(line for line in bytes(buf[pos:cut]).split(b"\n") if line)
                    pos = cut + 1
        finally:
            del buf[:pos]
        return out

    def _error(self, what: str, out: list[bytes]) -> FrameError:
        return FrameError(f"bad syslog framing: {what}", lines=out)
