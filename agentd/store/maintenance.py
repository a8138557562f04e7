"""Background maintenance that keeps reads flat as data grows.

Per pass: retention first (finished actions, and with ``[retention]`` old steps, stopped
sessions and old messages: ``agentd.store.retention``), so that the compaction that follows
rewrites the fragments those deletes left holes in; then per table compaction of small
fragments plus cleanup of versions older than a long window (``optimize``), and scalar indexes
on the filtered columns (created once the table has rows; ``optimize`` folds new rows into them).
Deleted rows leave the disk only when the versions that still reference them are cleaned up,
``cleanup_older_than`` later.

Safe beside writers in other processes: a compaction that meets a concurrent update fails
with "preempted" and is not retried by LanceDB, so it is recorded as skipped and retried on
the next pass; the cleanup window (>= 10 minutes) stays far above any reader's lag, and
unverified files are never deleted. Run it in one process at a time (the supervisor).

``maintenance_loop`` (the supervisor's) runs each pass in a child process, so that the memory
a pass leaves behind in LanceDB and the native allocator goes away with it
(``agentd.store.maintenance_child``); ``run_maintenance`` is the pass itself, in any process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from lancedb.index import Bitmap, BTree

from agentd.store.actions import purge_finished_actions
from agentd.store.db import TABLES, Store
from agentd.store.retention import RetentionLimits, RetentionReport, apply_retention
from agentd.store.spec import TableSpec
from agentd.store.version_window import VersionWindow

__all__ = ["MaintenanceReport", "TableReport", "ensure_indexes", "maintenance_loop", "run_maintenance"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TableReport:
    table: str
    seconds: float = 0.0
    fragments_removed: int = 0
    fragments_added: int = 0
    versions_removed: int = 0
    kept_seconds: float = 0.0  # the age window this pass pruned with
    indexes_created: list[str] = field(default_factory=list)
    skipped: str | None = None


@dataclass(slots=True)
class MaintenanceReport:
    seconds: float = 0.0
    actions_purged: int = 0
    tables: list[TableReport] = field(default_factory=list)
    # None when no [retention] rule is set.
    retention: RetentionReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "actions_purged": self.actions_purged,
            "retention": None if self.retention is None else self.retention.as_dict(),
            "tables": {
                t.table: {
                    "ms": round(t.seconds * 1000, 1),
                    "fragments_removed": t.fragments_removed,
                    "versions_removed": t.versions_removed,
                    "kept_seconds": round(t.kept_seconds, 1),
                    "indexes_created": t.indexes_created,
                    "skipped": t.skipped,
                }
                for t in self.tables
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaintenanceReport:
        """The inverse of ``asdict``: a report sent back by the maintenance child."""
        retention = data.get("retention")
        return cls(
            seconds=float(data["seconds"]),
            actions_purged=int(data["actions_purged"]),
            tables=[TableReport(**t) for t in data["tables"]],
            retention=None if retention is None else RetentionReport(**retention),
        )

    def summary(self) -> str:
        parts = [
            f"{t.table}:{t.seconds * 1000:.0f}ms" + (f"(skipped: {t.skipped})" if t.skipped else "")
            for t in self.tables
        ]
        kept = ""
        if self.retention is not None:
            r = self.retention
            kept = (
                f"steps_deleted={r.steps_deleted} sessions_purged={r.sessions_purged} "
                f"messages_deleted={r.messages_deleted} " + (f"(retention skipped: {r.skipped}) " if r.skipped else "")
            )
        return f"maintenance {self.seconds:.2f}s purged={self.actions_purged} " + kept + " ".join(parts)


def _retention_on(limits: RetentionLimits | None) -> bool:
    return limits is not None and any(
        value > 0
        for value in (
            limits.steps_per_session,
            limits.step_max_age,
            limits.stopped_session_max_age,
            limits.message_max_age,
        )
    )


async def ensure_indexes(table: Any, spec: TableSpec) -> list[str]:
    """Create the spec's missing scalar indexes; a table without rows is left for later."""
    if not spec.indexes or await table.count_rows() == 0:
        return []
    existing = {tuple(ix.columns) for ix in await table.list_indices()}
    created = []
    for index in spec.indexes:
        if (index.column,) in existing:
            continue
        config = Bitmap() if index.kind == "bitmap" else BTree()
        await table.create_index(index.column, config=config, replace=False)
        created.append(index.column)
    return created


async def _maintain_table(
    table: Any, spec: TableSpec, cleanup_older_than: float, versions: VersionWindow | None
) -> TableReport:
    report = TableReport(spec.name)
    started = time.perf_counter()
    try:
        report.indexes_created = await ensure_indexes(table, spec)
        if versions is not None:
            cleanup_older_than = versions.age(spec.name, await table.version())
        report.kept_seconds = cleanup_older_than
        stats = await table.optimize(cleanup_older_than=timedelta(seconds=cleanup_older_than), delete_unverified=False)
        compaction = getattr(stats, "compaction", None)
        prune = getattr(stats, "prune", None)
        report.fragments_removed = int(getattr(compaction, "fragments_removed", 0) or 0)
        report.fragments_added = int(getattr(compaction, "fragments_added", 0) or 0)
        report.versions_removed = int(getattr(prune, "old_versions_removed", 0) or 0)
    except Exception as exc:
        # Preempted by a concurrent writer (or another transient failure): the writer wins,
        # maintenance simply comes back on the next pass.
        report.skipped = str(exc).splitlines()[0][:200]
        log.info("maintenance of %s skipped until next pass: %s", spec.name, report.skipped)
    report.seconds = time.perf_counter() - started
    return report


async def run_maintenance(
    store: Store,
    *,
    cleanup_older_than: float = 1800.0,
    action_retention: float | None = 86_400.0,
    retention: RetentionLimits | None = None,
    versions: VersionWindow | None = None,
) -> MaintenanceReport:
    """One maintenance pass over every table; returns what it did and how long it took.

    ``retention`` is the ``[retention]`` section; None (or all limits 0) keeps all history.
    ``versions`` (kept across passes) shortens each busy table's ``cleanup_older_than`` to its
    commit rate (``agentd.store.version_window``).
    """
    report = MaintenanceReport()
    started = time.perf_counter()
    if action_retention is not None:
        try:
            report.actions_purged = await purge_finished_actions(store.actions, action_retention)
        except Exception as exc:
            log.info("action retention skipped until next pass: %s", exc)
    if retention is not None and _retention_on(retention):
        report.retention = await apply_retention(store, retention)
    for spec in TABLES:
        report.tables.append(await _maintain_table(store.tables[spec.name], spec, cleanup_older_than, versions))
    report.seconds = time.perf_counter() - started
    log.info("%s", report.summary())
    return report


async def maintenance_loop(
    store: Store,
    *,
    interval: float,
    cleanup_older_than: float,
    action_retention: float | None,
    stop: asyncio.Event,
    on_report: Callable[[MaintenanceReport], None] | None = None,
    retention: RetentionLimits | None = None,
    isolate: bool = True,
    active: asyncio.Event | None = None,
    keep_versions: int = 0,
    min_version_age: float = 60.0,
) -> None:
    """Run a pass every ``interval`` seconds until ``stop`` is set. Never raises on a bad pass.

    With ``isolate`` (the default) each pass runs in a ``MaintenanceChild`` on the same
    database (``agentd.store.maintenance_child`` says why); ``isolate=False`` runs it on ``store`` in this
    process. The pass in flight finishes before the loop returns; the child is closed on the
    way out, cancellation included. ``active`` is set while a pass runs (the supervisor's
    compaction of the actions table waits for it). ``keep_versions`` and ``min_version_age``
    shorten ``cleanup_older_than`` for busy tables (``agentd.store.version_window``).
    """
    from agentd.store.maintenance_child import MaintenanceChild  # imports this module

    child = MaintenanceChild(store.uri, store.num_shards) if isolate else None
    # The child gets the window's arguments and keeps its own rates; in this process, one object.
    window: dict[str, Any] = {"keep_versions": keep_versions, "min_age": min_version_age, "max_age": cleanup_older_than}
    versions = VersionWindow(**window) if child is None else None
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except TimeoutError:
                pass
            if active is not None:
                active.set()
            try:
                if child is not None:
                    # The child logs the pass's summary itself (run_maintenance).
                    report = await child.run(
                        cleanup_older_than=cleanup_older_than,
                        action_retention=action_retention,
                        retention=retention,
                        versions=window,
                    )
                else:
                    report = await run_maintenance(
                        store,
                        cleanup_older_than=cleanup_older_than,
                        action_retention=action_retention,
                        retention=retention,
                        versions=versions,
                    )
                if on_report is not None:
                    on_report(report)
            except Exception:
                log.exception("maintenance pass failed; retrying in %.0fs", interval)
            finally:
                if active is not None:
                    active.clear()
    finally:
        if child is not None:
            await asyncio.shield(child.close())
