"""kill -9 of a process appending with fsync ``always``: every acknowledged line survives.

Each cycle starts a child (tests/system/spool_crash_child.py) that appends to the same spool and
prints the id of each line once write() has returned, then kills it with SIGKILL at a random
moment (sometimes while it is still opening and recovering the spool). The parent reopens the
spool and checks that the lines left from earlier cycles are still there, followed by exactly
this cycle's lines 0..m-1 in order (m at least one past the last acknowledged id), each one
byte for byte; then it commits a random prefix, so the next cycle also checks the cursor.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from relay.spool import Position, Spool
from system.spool_crash_child import MAX_BYTES, SEGMENT_BYTES, line_for

CYCLES = 24
CHILD = Path(__file__).with_name("spool_crash_child.py")
ROOT = Path(__file__).resolve().parents[2]


class Child:
    """A child process whose stdout is read by a thread, so it never blocks on the pipe."""

    def __init__(self, directory: Path, cycle: int, seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(directory), str(cycle), str(seed)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        self.ready = threading.Event()
        self.output = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            self.output += chunk
            if b"ready\n" in self.output:
                self.ready.set()

    def kill(self) -> list[int]:
        """SIGKILL; return the acknowledged ids (complete lines of output only)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._thread.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        assert self.proc.returncode == -signal.SIGKILL, bytes(self.output[-200:])
        complete = bytes(self.output[: self.output.rfind(b"\n") + 1])
        return [int(x) for x in complete.split() if x != b"ready"]


def read_pending(spool: Spool) -> list[bytes]:
    lines: list[bytes] = []
    position = None
    for _ in range(100_000):
        batch = spool.read(position)
        if not batch.lines:
            return lines
        lines += batch.lines
        position = batch.end
    raise AssertionError("spool read did not finish")


def position_after(spool: Spool, count: int) -> Position:
    """The position just after the first ``count`` pending lines."""
    position = spool.cursor
    for _ in range(100_000):
        if count == 0:
            return position
        batch = spool.read(position)
        take = min(count, len(batch.lines))
        position = batch.position_after(take)
        count -= take
    raise AssertionError("position_after did not finish")


@pytest.mark.slow
def test_kill_9_never_loses_an_acknowledged_line(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    rng = random.Random(20261122)
    remaining: list[bytes] = []  # lines in the spool, not committed, from earlier cycles
    cycles_with_acks = 0
    deadline = time.monotonic() + 60
    for cycle in range(CYCLES):
        assert time.monotonic() < deadline, "crash cycles are far too slow"
        child = Child(directory, cycle, rng.randrange(1 << 30))
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.3))  # anywhere, opening and recovery included
        else:
            assert child.ready.wait(timeout=20), "child did not start"
            time.sleep(rng.uniform(0.0, 0.25))
        acked = child.kill()
        assert acked == list(range(len(acked))), "ids are printed in order"
        cycles_with_acks += bool(acked)

        with Spool.open(directory, max_bytes=MAX_BYTES, segment_bytes=SEGMENT_BYTES) as spool:
            pending = read_pending(spool)
            assert spool.statistics().pending_lines == len(pending)
            assert pending[: len(remaining)] == remaining, f"cycle {cycle}: earlier lines changed"
            new = pending[len(remaining) :]
            # Exactly this cycle's lines 0..m-1: none missing, none duplicated, none damaged.
            assert new == [line_for(cycle, i) for i in range(len(new))], f"cycle {cycle}"
            assert len(new) >= len(acked), f"cycle {cycle}: acknowledged lines lost"
            taken = rng.randint(0, len(pending))
            spool.commit(position_after(spool, taken))
            remaining = pending[taken:]
            assert spool.statistics().pending_lines == len(remaining)

    assert cycles_with_acks >= CYCLES // 2, "most cycles must get to write"
    with Spool.open(directory, max_bytes=MAX_BYTES, segment_bytes=SEGMENT_BYTES) as spool:
        assert read_pending(spool) == remaining
