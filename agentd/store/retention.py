"""Retention: keep history bounded (DESIGN.md §4) and delete finished sessions on request.

Rules (``[retention]``, 0 = no limit for each): per session, a step is deleted once it is
beyond *any* configured limit (older than the last ``steps_per_session``, or stamped more than
``step_max_age`` ago), so whichever limit is reached first bounds the history. A session's
latest step is never deleted: it is its state snapshot, the source of truth a host resumes
from. Stopped sessions are purged ``stopped_session_max_age`` after their last update (the
session row and every step; participant rows stay, they are small and name the conversation's
history). Messages older than ``message_max_age`` are deleted.

Why the deletes are shaped so: a LanceDB delete is one commit and a new table version even
when nothing matches, and every version costs a manifest and a slower read until compaction.
So a pass makes at most one delete per table, each with one predicate (an IN list, a per-session
seq bound, a timestamp bound), and counts before deleting. Steps are deleted before their
session rows, so a crash between the two leaves a stopped session without steps (purged on the
next pass), never steps without a session row. Every session delete repeats the status condition
inside the delete itself, so a row that changed since it was read is left alone.

Runs in the maintenance process (the supervisor) or in ``agentctl purge``; appends by workers
never conflict with these deletes (LANCEDB.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from agentd.store.db import Store
from agentd.store.sql import delete_where, sql_in, sql_ts

__all__ = [
    "FINISHED_STATUSES",
    "MAX_SESSIONS_PER_PASS",
    "PurgeResult",
    "RetentionLimits",
    "RetentionReport",
    "apply_retention",
    "purge_sessions",
    "step_trim_bounds",
    "trim_predicate",
]

log = logging.getLogger(__name__)

# Sessions that no worker runs any more: the only ones that may be purged.
FINISHED_STATUSES: tuple[str, ...] = ("stopped", "error")
# Most sessions one pass trims or purges; the rest waits for the next pass. It bounds the size of
# one delete predicate (2,000 per-session clauses count in ~85 ms on 40k rows, measured).
MAX_SESSIONS_PER_PASS = 2000


class RetentionLimits(Protocol):
    """The ``[retention]`` section (``agentd.config.RetentionConfig``); the store imports nothing above it."""

    @property
    def steps_per_session(self) -> int: ...
    @property
    def step_max_age(self) -> float: ...
    @property
    def stopped_session_max_age(self) -> float: ...
    @property
    def message_max_age(self) -> float: ...


@dataclass(slots=True)
class RetentionReport:
    """What one retention pass deleted (shown in ``agentctl daemon status``)."""

    seconds: float = 0.0
    steps_deleted: int = 0
    sessions_purged: int = 0
    messages_deleted: int = 0
    # First line of the error of a step that failed (the pass retries next time), else None.
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ms": round(self.seconds * 1000, 1),
            "steps_deleted": self.steps_deleted,
            "sessions_purged": self.sessions_purged,
            "messages_deleted": self.messages_deleted,
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class PurgeResult:
    sessions: int = 0
    steps: int = 0


def _cutoff(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)


async def purge_sessions(
    store: Store, session_ids: Sequence[str], *, statuses: Iterable[str] = FINISHED_STATUSES
) -> PurgeResult:
    """Delete these sessions' steps, then their rows (only rows still in ``statuses``).

    Idempotent: purging a purged session deletes nothing. The caller decides which sessions may
    go (``agentctl purge`` refuses live ones); the status condition inside the row delete only
    guards against a row that changed since the caller read it.
    """
    result = PurgeResult()
    ids = sorted(set(session_ids))
    if not ids:
        return result
    result.steps = await delete_where(store.steps, sql_in("session_id", ids))
    result.sessions = await delete_where(
        store.sessions, f"{sql_in('session_id', ids)} AND {sql_in('status', list(statuses))}"
    )
    return result


def step_trim_bounds(
    rows: Any, *, keep_last: int, older_than: datetime | None
) -> dict[str, tuple[int, int | None, int]]:
    """Per session with something to trim: (latest seq, seq bound of the count rule, rows to delete).

    ``rows`` is an Arrow table of ``session_id, seq, ts``. A step is to be deleted when its seq
    is at or below the count bound (``latest - keep_last``) or its ts is before ``older_than``,
    and it is not the latest step. Pure: tested on its own.
    """
    if rows.num_rows == 0:
        return {}
    latest: dict[str, int] = {}
    ids = rows.column("session_id").to_pylist()
    seqs = rows.column("seq").to_pylist()
    for sid, seq in zip(ids, seqs, strict=True):
        if seq > latest.get(sid, -1):
            latest[sid] = seq
    old: list[bool] = [False] * len(ids)
    if older_than is not None:
        column = rows.column("ts")
        old = pc.less(column, pa.scalar(older_than, type=column.type)).fill_null(False).to_pylist()
    bounds: dict[str, tuple[int, int | None, int]] = {}
    for sid, seq, is_old in zip(ids, seqs, old, strict=True):
        top = latest[sid]
        count_bound = top - keep_last if keep_last > 0 else None
        if seq >= top or not (is_old or (count_bound is not None and seq <= count_bound)):
            continue
        previous = bounds.get(sid)
        bounds[sid] = (top, count_bound, (previous[2] if previous else 0) + 1)
    return bounds


def _trim_clause(sids: list[str], top: int, count_bound: int | None, older_than: datetime | None) -> str:
    rules = []
    if count_bound is not None:
        rules.append(f"seq <= {count_bound}")
    if older_than is not None:
        rules.append(f"ts < {sql_ts(older_than)}")
    return f"({sql_in('session_id', sids)} AND seq < {top} AND ({' OR '.join(rules)}))"


def trim_predicate(bounds: dict[str, tuple[int, int | None, int]], older_than: datetime | None) -> str | None:
    """One delete predicate for ``bounds`` (``step_trim_bounds``), one clause per distinct bound.

    Why grouped: sessions that tick at the same heartbeat share their latest seq, so 2,000
    sessions need a few dozen ``session_id IN (...)`` clauses instead of 2,000 OR-ed
    per-session clauses: 1,000 sessions went from a 58 KB predicate to 10 KB. (The memory a
    delete costs is dominated by scanning the filtered columns, not by the predicate: about
    130 MB at 200k rows either way, which is why the pass runs in a child process, see
    ``agentd.store.maintenance``.)
    """
    groups: dict[tuple[int, int | None], list[str]] = {}
    for sid, (top, bound, _count) in bounds.items():
        groups.setdefault((top, bound), []).append(sid)
    clauses = [
        _trim_clause(sorted(sids), top, bound, older_than)
        for (top, bound), sids in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or -1))
    ]
    return " OR ".join(clauses) if clauses else None


async def _stopped_sessions(store: Store, older_than: datetime) -> list[str]:
    where = f"status = 'stopped' AND updated_at < {sql_ts(older_than)}"
    rows = await store.sessions.query().where(where).select(["session_id"]).limit(MAX_SESSIONS_PER_PASS).to_arrow()
    return sorted(set(rows.column("session_id").to_pylist()))


async def _step_trim_predicate(store: Store, cfg: RetentionLimits, now: datetime, purged: set[str]) -> str | None:
    """One predicate for every session's steps beyond the limits (the latest always kept)."""
    if cfg.steps_per_session <= 0 and cfg.step_max_age <= 0:
        return None
    older_than = _cutoff(now, cfg.step_max_age) if cfg.step_max_age > 0 else None
    # Three narrow columns of a table that retention keeps bounded: a few ms per 40k rows.
    rows = await store.steps.query().select(["session_id", "seq", "ts"]).to_arrow()
    bounds = step_trim_bounds(rows, keep_last=cfg.steps_per_session, older_than=older_than)
    for sid in purged:
        bounds.pop(sid, None)
    if not bounds:
        return None
    # The sessions furthest over their limits first; the others wait for the next pass.
    chosen = dict(sorted(bounds.items(), key=lambda item: -item[1][2])[:MAX_SESSIONS_PER_PASS])
    return trim_predicate(chosen, older_than)


async def apply_retention(store: Store, cfg: RetentionLimits, *, now: datetime | None = None) -> RetentionReport:
    """One retention pass: at most one delete per table. Never raises; a failure is reported as skipped."""
    report = RetentionReport()
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    try:
        purged: list[str] = []
        if cfg.stopped_session_max_age > 0:
            purged = await _stopped_sessions(store, _cutoff(now, cfg.stopped_session_max_age))
        clauses = [sql_in("session_id", purged)] if purged else []
        trim = await _step_trim_predicate(store, cfg, now, set(purged))
        if trim is not None:
            clauses.append(trim)
        if clauses:
            report.steps_deleted = await delete_where(store.steps, " OR ".join(f"({c})" for c in clauses))
        if purged:
            where = f"{sql_in('session_id', purged)} AND status = 'stopped'"
            report.sessions_purged = await delete_where(store.sessions, where)
        if cfg.message_max_age > 0:
            where = f"created_at < {sql_ts(_cutoff(now, cfg.message_max_age))}"
            report.messages_deleted = await delete_where(store.messages, where)
    except Exception as exc:
        # A conflicting writer or a storage hiccup: what was deleted stays deleted, the rest
        # is found again by the next pass (every rule is recomputed from the data).
        report.skipped = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        log.info("retention skipped until next pass: %s", report.skipped)
    report.seconds = time.perf_counter() - started
    return report
