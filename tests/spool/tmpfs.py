"""A small tmpfs for full-disk tests: a real file system that really runs out of space."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "tmpfs"]


@contextlib.contextmanager
def tmpfs(directory: Path, *, kib: int, inodes: int | None = None) -> Iterator[Path]:
    """Mount a tmpfs of ``kib`` KiB (and at most ``inodes`` files and directories, the root
    included) on ``directory``; skip the test if not permitted."""
    directory.mkdir(parents=True, exist_ok=True)
    options = f"size={kib}k,mode=0700" + (f",nr_inodes={inodes}" if inodes else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; returns the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as f:
        block = b"\0" * 4096
        with contextlib.suppress(OSError):
            while True:
                written += f.write(block)
        with contextlib.suppress(OSError):
            while True:  # the last partial block
                n = f.write(b"\0")
                if not n:
                    break
                written += n
    return written
