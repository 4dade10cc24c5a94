"""relay/spool/files.py: the search for the next intact frame after damage."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.spool import codec, files


def valid_check_byte(data: bytes, i: int) -> bool:
    word = int.from_bytes(data[i : i + 4], "little")
    return (word ^ (word >> 8) ^ (word >> 16) ^ 0x5A) & 0xFF == word >> 24


@given(st.binary(min_size=4, max_size=300))
def test_check_mismatches_is_zero_exactly_where_a_word_has_a_valid_check_byte(
    data: bytes,
) -> None:
    mismatches = files.check_mismatches(data)
    assert len(mismatches) == len(data)
    for i in range(len(data) - 3):
        assert (mismatches[i] == 0) == valid_check_byte(data, i), i


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "damaged"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield path, fd
    finally:
        os.close(fd)


LINES = [b"<14>line %04d " % i + b"x" * 300 for i in range(50)]


def test_a_frame_after_a_long_garbage_stretch_is_found_with_bounded_crc_work(
    segment: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 MiB of random bytes: some 30,000 offsets pass the check byte and claim lengths of up
    to 8 MiB. Checking each one's CRC (as the search once did) reads gigabytes; the search
    must spend at most its budget on them and still find the first real frame."""
    _, fd = segment
    garbage = random.Random(7).randbytes(8 << 20)
    frames = codec.encode_frames(LINES)
    os.write(fd, garbage + frames)
    decoded_bytes = 0
    decode = codec.decode_frames

    def counting(data: bytes | memoryview, *args: object, **kwargs: object) -> codec.Decoded:
        nonlocal decoded_bytes
        decoded_bytes += len(data)
        return decode(data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(codec, "decode_frames", counting)
    found = files.find_frame(fd, 1, len(garbage) + len(frames))
    assert found == len(garbage)
    # The budget, plus the one candidate that an end of data or frames followed.
    assert decoded_bytes <= files._RESYNC_BUDGET + codec.MAX_LINE + len(frames)


def test_an_intact_frame_just_before_more_damage_is_found(segment: tuple[Path, int]) -> None:
    """No frame header follows it, so only its own CRC says it is intact."""
    _, fd = segment
    one = codec.encode_frames(LINES[:1])
    data = b"\x13" * 1000 + one + b"\xff" * 4 + codec.encode_frames(LINES[1:])
    os.write(fd, data)
    assert files.find_frame(fd, 1, len(data)) == 1000
    assert files.find_frame(fd, 1001, len(data)) == 1000 + len(one) + 4


def test_a_zeroed_stretch_holds_no_candidate(segment: tuple[Path, int]) -> None:
    _, fd = segment
    os.write(fd, bytes(3 << 20))
    assert files.check_mismatches(bytes(64)) == b"\x5a" * 64
    assert files.find_frame(fd, 0, 3 << 20) is None
