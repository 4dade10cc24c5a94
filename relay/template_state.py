"""The template cache's state file in the running relay: restored at start, saved as it
changes (the codec and the atomic write are :mod:`relay.flows.template_store`).

SPEC "Templates": kept in the state directory beside the spool and loaded on start, so that
after a restart data records decode at once, before the exporter re-sends its templates
(Cisco IOS and ASA default to every 30 minutes). The file lives in the spool's directory
(each worker has its own spool, hence its own templates), as ``templates``; the spool ignores
files that are not its segments.

When to write: a new, replaced or expired template changes what a restart would decode, so
it is saved within ``SOON`` seconds; a refresh only moves a template's expiry, so refreshes
alone are saved every ``REFRESH_EVERY`` seconds. The write (a few MiB at most, fsynced) runs
in a worker thread: the receive loop never waits on the disk. A failed write is logged,
rate-limited, and retried at the next change; the previous file stays whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import trio

from relay.flows import template_store
from relay.flows.templates import TemplateCache, TemplateEvent
from relay.logs import RateLimitedLog

log = logging.getLogger(__name__)

SOON = 5.0
REFRESH_EVERY = 600.0
_CHANGES = (TemplateEvent.LEARNED, TemplateEvent.REPLACED, TemplateEvent.EXPIRED)


class TemplateState:
    """One cache's state file; ``path`` None keeps nothing (templates.persist = false)."""

    def __init__(
        self, cache: TemplateCache, path: Path | None, *, clock: Callable[[], float]
    ) -> None:
        self._cache = cache
        self.path = path
        self._clock = clock
        self._saved = self._marks()
        self._saved_at = clock()
        self._log = RateLimitedLog(log, clock=clock)

    def restore(self, now: float) -> int:
        """Load the file into the (empty) cache; how many templates were restored."""
        if self.path is None:
            return 0
        loaded = template_store.load_templates(self.path)
        kept = self._cache.restore(loaded.templates, now)
        if loaded.templates:
            log.info(
                "restored %d of %d templates from %s",
                kept,
                len(loaded.templates),
                self.path,
                extra={"event": "templates_restored", "restored": kept, "path": str(self.path)},
            )
        self._saved = self._marks()
        return kept

    def due(self, now: float) -> bool:
        """Whether the cache changed enough since the last save to write it now."""
        if self.path is None:
            return False
        changes, refreshes = self._marks()
        if changes != self._saved[0]:
            return now - self._saved_at >= SOON
        return refreshes != self._saved[1] and now - self._saved_at >= REFRESH_EVERY

    async def save(self) -> bool:
        """Write the file in a worker thread; False (logged) if the disk refused it."""
        if self.path is None:
            return True
        marks, items = self._marks(), self._cache.snapshot()
        path = self.path
        try:
            omitted = await trio.to_thread.run_sync(template_store.save_templates, path, items)
        except OSError as exc:
            self._log.emit(
                ("template_save_failed",),
                f"could not save templates to {path}: {exc.strerror or exc}; will retry",
                event="template_save_failed",
                level=logging.WARNING,
            )
            return False
        if omitted:
            self._log.emit(
                ("templates_omitted",),
                f"{omitted} least recently sent templates left out of {path} (size bound)",
                event="templates_omitted",
                level=logging.WARNING,
            )
        self._saved, self._saved_at = marks, self._clock()
        return True

    def _marks(self) -> tuple[int, int]:
        events = self._cache.statistics().events
        return sum(events[e] for e in _CHANGES), events[TemplateEvent.REFRESHED]
