"""Which sessions a host resumes at start, and from which state.

Only live rows are read (stopped sessions cost nothing at boot). The ``sessions`` row may lag
the ``steps`` table after a crash between the two commits of a flush, so each session resumes
from the newer of its row and its latest step (DESIGN.md §4). A row or step that cannot be read
does not fail the boot: its session is returned with the problem, and the host quarantines it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from agentd.store.sessions import SessionRecord
from agentd.store.sql import sql_in
from agentd.store.steps import latest_steps_since

__all__ = ["LIVE_STATUSES", "from_step", "load_live_sessions"]

log = logging.getLogger(__name__)

LIVE_STATUSES = ["starting", "running", "paused", "stopping"]
# Steps newer than the newest session row are found within this margin (clock steps, slow flushes).
RECOVERY_MARGIN = timedelta(minutes=5)


async def load_live_sessions(
    store: Any, shards: list[int]
) -> tuple[list[tuple[SessionRecord, str | None]], list[SessionRecord]]:
    """The live sessions of ``shards`` at their newest state, each with a problem that prevents resuming it.

    Also the sessions whose row says live but whose latest step ended them (stopped, error):
    their row is stale, and no runner will ever write it, so the caller writes these.
    """
    where = f"{sql_in('shard', shards)} AND {sql_in('status', LIVE_STATUSES)}"
    records, bad = SessionRecord.from_arrow_tolerant(await store.sessions.query().where(where).to_arrow())
    for row, reason in bad:
        log.error("session row %s is unreadable, not resuming it: %s", row.get("session_id"), reason)
    if not records:
        return [], []
    newest = max(r.updated_at for r in records)
    last_seqs = {r.session_id: r.last_seq for r in records}
    steps, unreadable = await latest_steps_since(store.steps, shards, newest - RECOVERY_MARGIN, last_seqs)
    live: list[tuple[SessionRecord, str | None]] = []
    ended: list[SessionRecord] = []
    for record in records:
        step = steps.get(record.session_id)
        if step is not None and step.seq > record.last_seq:
            record = from_step(record, step.seq, step.state)
        if record.status in LIVE_STATUSES:
            live.append((record, unreadable.get(record.session_id)))
        else:
            ended.append(record)
    return live, ended


def from_step(record: SessionRecord, seq: int, state: dict[str, Any]) -> SessionRecord:
    """The step is newer than the row (crash between the two commits): take the step's state."""
    return record.model_copy(
        update={
            "last_seq": seq,
            "status": state.get("status", record.status),
            "iteration": state.get("iteration", record.iteration),
            "context": state.get("context", record.context),
            "last_result": state.get("last_result", record.last_result),
        }
    )
