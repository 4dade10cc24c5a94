"""relay/spool/reading.py: what a read that meets damage keeps, skips and counts."""

from __future__ import annotations

import random
from pathlib import Path

from relay.spool.codec import FILE_HEADER_SIZE

from .test_store import drain, make_lines, open_spool, segment_files

FRAME = 68  # make_lines' 60-byte lines, framed


def test_a_damaged_stretch_costs_its_lines_and_bytes_and_counts_once(tmp_path: Path) -> None:
    """What SpoolStats says: one corrupt frame per damaged stretch, the lines in it lost, its
    bytes given up, and every intact line after it kept (not cut with the rest)."""
    lines = make_lines(40)
    with open_spool(tmp_path, segment_bytes=4096) as spool:
        spool.append(lines)
    first = segment_files(tmp_path)[0]
    with first.open("r+b") as f:
        f.seek(FILE_HEADER_SIZE + 5 * FRAME)
        f.write(random.Random(3).randbytes(3 * FRAME))  # lines 5, 6 and 7
    with open_spool(tmp_path, segment_bytes=4096) as spool:
        assert drain(spool) == lines[:5] + lines[8:]
        stats = spool.statistics()
        assert stats.corrupt_frames == 1
        assert stats.lines_lost_corrupt == 3
        assert stats.truncated_bytes == 3 * FRAME
        assert stats.torn_tails == 0
