"""The durable disk spool: lines in, batches out, nothing accepted lost.

``codec`` is the pure on-disk format (frames, seals, cursor file); ``table`` the pure segment
table (positions, totals); ``policy`` the pure write policy (cap, overflow, full disk);
``files`` the file operations; ``recovery`` what an open does with what is on disk; ``cursor``
the cursor file; ``stats`` the policies and counters; ``ages`` (pure) when the pending lines
were written; ``appender`` the write path that carries the policy out; ``reading`` the read
path and the repair of damage; ``store`` the ``Spool`` facade that puts them together.
Everything a caller needs is re-exported here.
"""

from relay.spool.stats import FsyncPolicy, Overflow, SpoolStats
from relay.spool.store import Spool
from relay.spool.table import Batch, Position

__all__ = ["Batch", "FsyncPolicy", "Overflow", "Position", "Spool", "SpoolStats"]
