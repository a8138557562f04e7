"""Keeps the ``actions`` table in a few fragments between maintenance passes.

Why: every control action adds fragments to ``actions`` (the daemon's append, the worker's claim
and its acknowledgement each commit one), and a claim is a conditional ``update`` whose scan
opens every fragment: about 0.13 ms each here. Maintenance compacts every 20 s, by which time a
steady stream of actions has left hundreds, and a claim that took 9 ms on a compacted table
took 30 ms and more (bench/control_bench.py: the claim was the largest part of the server-side
latency). The table is small (actions are purged after ``[queue] retention``), so compacting it
costs 50-300 ms of the supervisor's LanceDB threads (most of it the version cleanup that comes
with ``optimize()``, which reads every version kept), once per second at most.

A compaction that meets a claim or acknowledgement on the same fragments loses (LANCEDB.md:
the rewrite is preempted, the update retries and wins), so it never delays an action by more
than one retry of its update. It is tried again a tenth of a second later, not a second (then
0.2, 0.4 ... s while it keeps losing): under a steady stream (40 actions a second) most
compactions lose, and waiting the whole interval after each loss let the table grow to 90
fragments, which made claims about 10 ms slower. None runs while a maintenance pass is in
flight (one maintenance process at a time, LANCEDB.md), and it never removes versions a reader
could still use: with ``versions`` it prunes the table's old versions down to about
``[maintenance] keep_versions`` (``agentd.store.version_window``: every operation on the table
pays for each version kept), never younger than ``min_version_age``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from agentd.store.version_window import VersionWindow

__all__ = ["CHECK_INTERVAL", "QueueCompactor"]

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # seconds between fragment counts (a manifest read, well under a ms)
# Without a VersionWindow: versions older than this may be pruned by the compaction's optimize();
# far above any reader's use, so in practice only maintenance passes prune.
_KEEP_VERSIONS = timedelta(days=7)


class QueueCompactor:
    """Compacts ``table`` once it has ``max_fragments`` fragments, checked every ``interval``."""

    def __init__(
        self,
        table: Any,
        *,
        max_fragments: int,
        interval: float = CHECK_INTERVAL,
        busy: Callable[[], bool] = lambda: False,
        versions: VersionWindow | None = None,
    ) -> None:
        self.table = table
        self.max_fragments = max_fragments
        self.interval = interval
        self.busy = busy  # True while a maintenance pass runs
        self.versions = versions
        self.compactions = 0
        self.preempted = 0
        self.last_ms = 0.0

    async def run(self) -> None:
        """Until cancelled; never raises (a failed compaction is retried at the next check)."""
        losses = 0  # compactions preempted in a row
        while True:
            # A preempted compaction is tried again soon: waiting the whole interval lets a steady
            # stream of actions add fragments faster than the compactions that win remove them.
            # Each further loss doubles the wait (0.1, 0.2, 0.4 ... of the interval, at most all
            # of it), so a stream no compaction can win does not cost one ten times a second.
            await asyncio.sleep(min(self.interval, self.interval / 10 * 2 ** (losses - 1)) if losses else self.interval)
            if self.busy():
                continue
            preempted = self.preempted
            await self.once()
            losses = losses + 1 if self.preempted != preempted else 0

    async def once(self) -> bool:
        """Compact if the table has ``max_fragments`` or more; True if it did."""
        try:
            stats = await self.table.stats()
            fragments = int(stats["fragment_stats"]["num_fragments"])
            if fragments < self.max_fragments:
                return False
            started = time.perf_counter()
            keep = _KEEP_VERSIONS
            if self.versions is not None:
                keep = timedelta(seconds=self.versions.age("actions", await self.table.version()))
            await self.table.optimize(cleanup_older_than=keep, delete_unverified=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # preempted by a claim or an acknowledgement: they win
            self.preempted += 1
            log.debug("compacting the actions table skipped: %s", str(exc).splitlines()[0][:200])
            return False
        self.compactions += 1
        self.last_ms = (time.perf_counter() - started) * 1000
        log.debug("actions table compacted from %d fragments in %.0f ms", fragments, self.last_ms)
        return True

    def counters(self) -> dict[str, Any]:
        return {"compactions": self.compactions, "preempted": self.preempted, "last_ms": round(self.last_ms, 1)}
