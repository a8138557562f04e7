"""Keeps the ``actions`` table in a few fragments between maintenance passes.

Why: every control action adds fragments to ``actions`` (the daemon's append, the worker's claim
and its acknowledgement each commit one), and a claim is a conditional ``update`` whose scan
opens every fragment: about 0.13 ms each here. Maintenance compacts every 20 s, by which time a
steady stream of actions has left hundreds, and a claim that took 9 ms on a compacted table
took 30 ms and more (bench/control_bench.py: the claim was the largest part of the server-side
latency). The table is small (actions are purged after ``[queue] retention``), so compacting it
costs 50-100 ms of the supervisor's LanceDB threads, once per second at most.

A compaction that meets a claim or acknowledgement on the same fragments loses (LANCEDB.md:
the rewrite is preempted, the update retries and wins), so it never delays an action by more
than one retry of its update; it is simply tried again a second later. None runs while a
maintenance pass is in flight (one maintenance process at a time, LANCEDB.md), and it never
removes versions a reader could still use (old versions are the maintenance pass's job).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

__all__ = ["CHECK_INTERVAL", "QueueCompactor"]

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # seconds between fragment counts (a manifest read, well under a ms)
# Versions older than this may be pruned by the compaction's optimize(); far above any reader's
# use, so in practice only maintenance passes (with [maintenance] cleanup_older_than) prune.
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
    ) -> None:
        self.table = table
        self.max_fragments = max_fragments
        self.interval = interval
        self.busy = busy  # True while a maintenance pass runs
        self.compactions = 0
        self.preempted = 0
        self.last_ms = 0.0

    async def run(self) -> None:
        """Until cancelled; never raises (a failed compaction is retried at the next check)."""
        while True:
            await asyncio.sleep(self.interval)
            if not self.busy():
                await self.once()

    async def once(self) -> bool:
        """Compact if the table has ``max_fragments`` or more; True if it did."""
        try:
            stats = await self.table.stats()
            fragments = int(stats["fragment_stats"]["num_fragments"])
            if fragments < self.max_fragments:
                return False
            started = time.perf_counter()
            await self.table.optimize(cleanup_older_than=_KEEP_VERSIONS, delete_unverified=False)
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
