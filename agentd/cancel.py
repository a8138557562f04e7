"""Withdraw queued actions that no worker has claimed yet (``agentctl cancel``, Ctrl-C while waiting).

A cancel is one conditional update, the same compare-and-set a claim is (agentd.queue): its
WHERE clause pins each row's ``version`` and repeats ``status = 'pending' AND claimed_by IS
NULL``, and LanceDB re-runs a conflicting update against the latest version, so a cancel and
a claim racing for one action have exactly one winner. A cancelled action is ``failed`` with
the code ``cancelled``: it is finished, so no worker ever claims it, and a client waiting for
it gets that acknowledgement. Cancelling again is idempotent (reported ``cancelled`` again).

Used by the daemon (``cancel`` requests) and by agentctl without a daemon.
"""

from __future__ import annotations

from typing import Any, Literal

from agentd.store import Store
from agentd.store.retry import with_retry
from agentd.store.sql import sql_in, sql_str, sql_ts
from agentd.timeutil import utcnow

__all__ = ["CANCELLED_MESSAGE", "CancelOutcome", "cancel_actions"]

CancelOutcome = Literal["cancelled", "claimed", "finished", "not_found"]
CANCELLED_MESSAGE = "cancelled before a worker claimed it"


def _outcome(row: dict[str, Any] | None) -> CancelOutcome:
    if row is None:
        return "not_found"
    if row["status"] == "failed" and row.get("error_code") == "cancelled":
        return "cancelled"
    if row["status"] in ("done", "failed"):
        return "finished"
    if row["status"] == "pending" and row.get("claimed_by") is None:  # pragma: no cover - lost to nobody
        return "not_found"
    return "claimed"


async def _rows(store: Store, action_ids: list[str]) -> dict[str, dict[str, Any]]:
    columns = ["action_id", "session_id", "kind", "status", "version", "claimed_by", "error_code"]
    table = await store.actions.query().where(sql_in("action_id", action_ids)).select(columns).to_arrow()
    return {row["action_id"]: row for row in table.to_pylist()}


async def cancel_actions(store: Store, action_ids: list[str]) -> dict[str, Any]:
    """Cancel what can be; ``{"results": [{"action_id", "outcome", "session_id", "kind", "status"}], "cancelled": n}``.

    ``outcome`` per id, in the order given: ``cancelled`` (withdrawn now or before),
    ``claimed`` (a worker has it: too late, it will be applied), ``finished`` (already done or
    failed) or ``not_found``.
    """
    ids = list(dict.fromkeys(action_ids))
    before = await _rows(store, ids)
    open_rows = [r for r in before.values() if r["status"] == "pending" and r["claimed_by"] is None]
    if open_rows:
        pins = " OR ".join(
            f"(action_id = {sql_str(r['action_id'])} AND version = {int(r['version'])})" for r in open_rows
        )
        updates = {
            "status": "'failed'",
            "version": "version + 1",
            "error": sql_str(CANCELLED_MESSAGE),
            "error_code": "'cancelled'",
            "done_at": sql_ts(utcnow()),
        }
        where = f"({pins}) AND status = 'pending' AND claimed_by IS NULL"
        await with_retry("cancel", lambda: store.actions.update(updates_sql=updates, where=where))
    after = await _rows(store, [r["action_id"] for r in open_rows]) if open_rows else {}
    results = []
    for action_id in ids:
        row = after.get(action_id) or before.get(action_id)
        outcome = _outcome(row)
        results.append(
            {
                "action_id": action_id,
                "outcome": outcome,
                "session_id": None if row is None else row["session_id"],
                "kind": None if row is None else row["kind"],
                "status": None if row is None else row["status"],
            }
        )
    return {"results": results, "cancelled": sum(1 for r in results if r["outcome"] == "cancelled")}
