"""The ``[spool]`` section: where the spool lives, how large it grows, when it syncs.

One check: ``__post_init__`` takes what the file gave (a size may have a unit, a choice is
its word) and stores the typed value, or raises ConfigError naming the file's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import values
from relay.errors import ConfigError
from relay.spool.stats import FsyncPolicy, Overflow

DEFAULT_DIRECTORY = Path("/var/lib/flowrelay/spool")
# A segment is the unit of deletion: smaller segments free space sooner, and each costs a file.
MIN_SPOOL_BYTES = 1 << 20
MIN_SEGMENT_BYTES = 64 << 10
MAX_SPOOL_BYTES = 1 << 50  # 1 PiB: far beyond any disk, small enough for every file offset
MAX_SEGMENT_BYTES = 4 << 30


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolConfig:
    directory: Path = DEFAULT_DIRECTORY
    max_bytes: int = 1 << 30
    segment_bytes: int = 32 << 20
    overflow: Overflow = Overflow.DROP_OLDEST
    fsync: FsyncPolicy = FsyncPolicy.INTERVAL
    # Seconds between syncs under ``fsync = "interval"``.
    fsync_interval: float = 1.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        raw: Any = self.directory
        text = str(raw) if isinstance(raw, Path) else values.string(raw, "spool.directory")
        set_(self, "directory", Path(values.plain(text, "spool.directory")))
        set_(
            self,
            "max_bytes",
            values.size(
                self.max_bytes,
                "spool.max_size",
                minimum=MIN_SPOOL_BYTES,
                maximum=MAX_SPOOL_BYTES,
            ),
        )
        set_(
            self,
            "segment_bytes",
            values.size(
                self.segment_bytes,
                "spool.segment_size",
                minimum=MIN_SEGMENT_BYTES,
                maximum=MAX_SEGMENT_BYTES,
            ),
        )
        set_(
            self,
            "overflow",
            Overflow(values.choice(self.overflow, tuple(Overflow), "spool.overflow")),
        )
        set_(
            self, "fsync", FsyncPolicy(values.choice(self.fsync, tuple(FsyncPolicy), "spool.fsync"))
        )
        set_(
            self,
            "fsync_interval",
            values.number(self.fsync_interval, "spool.fsync_interval", 0.01, 60),
        )
        if self.segment_bytes > self.max_bytes:
            raise ConfigError(
                "spool.segment_size must not be larger than spool.max_size",
                key="spool.segment_size",
            )
