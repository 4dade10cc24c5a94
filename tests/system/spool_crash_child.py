"""Child process of tests/test_spool_crash.py: appends to a spool until it is killed.

Usage: python spool_crash_child.py DIRECTORY CYCLE SEED

Writes lines with fsync ``always`` and, after each write() returns, prints the sequence
number of every line in that write (one per line), so the parent knows which lines were
acknowledged when it sends SIGKILL.
"""

from __future__ import annotations

import random
import sys
import zlib
from pathlib import Path

import trio

from relay.spool import FsyncPolicy, Spool

SEGMENT_BYTES = 64 << 10  # small, so that kills also land during rotations
MAX_BYTES = 256 << 20


def line_for(cycle: int, seq: int) -> bytes:
    """The line with this id; its length and filler follow from the id, so any damage shows."""
    head = b"cycle=%d seq=%d " % (cycle, seq)
    filler = b"%08x" % zlib.crc32(head)
    return head + filler * (1 + zlib.crc32(head) % 50)


async def main(directory: Path, cycle: int, seed: int) -> None:
    rng = random.Random(seed)
    out = sys.stdout.buffer
    spool = Spool.open(
        directory, max_bytes=MAX_BYTES, segment_bytes=SEGMENT_BYTES, fsync=FsyncPolicy.ALWAYS
    )
    out.write(b"ready\n")
    out.flush()
    seq = 0
    for _ in range(1_000_000):  # killed long before
        count = rng.randint(1, 40)
        lines = [line_for(cycle, seq + i) for i in range(count)]
        accepted = await spool.write(lines)
        if accepted != count:
            raise SystemExit(f"spool refused {count - accepted} lines")
        out.write(b"".join(b"%d\n" % (seq + i) for i in range(count)))
        out.flush()
        seq += count


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
