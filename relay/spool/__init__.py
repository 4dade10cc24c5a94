"""The durable disk spool: lines in, batches out, nothing accepted lost.

``codec`` is the pure on-disk format (frames, seals, cursor file); ``store`` is the file layer
(segments, cursor, cap, recovery). Everything a caller needs is re-exported here.
"""

from relay.spool.store import Batch, FsyncPolicy, Overflow, Position, Spool, SpoolStats

__all__ = ["Batch", "FsyncPolicy", "Overflow", "Position", "Spool", "SpoolStats"]
