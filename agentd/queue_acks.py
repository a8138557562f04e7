"""How a claim ends: acknowledged (done or failed), renewed while it runs, or handed back.

Kept apart from the claiming half of ``ActionQueue`` (a mixin of it): each of these writes is a
compare-and-set on the claim (its token, and the version it was claimed at), so acknowledging
twice, after losing the lease, or after a hand-back is rejected and reported as ``ClaimLost``
instead of overwriting the next owner's claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from agentd.store.actions import ActionRecord
from agentd.store.retry import with_retry
from agentd.store.sql import sql_in, sql_str, sql_ts
from agentd.timeutil import utcnow

__all__ = ["Ack", "ClaimEnds", "ClaimLost", "QueueError"]


class QueueError(Exception):
    """A queue operation could not be carried out."""


class ClaimLost(QueueError):
    """The action is no longer ours: completed already, or reclaimed after the lease expired."""


@dataclass(slots=True)
class Ack:
    """One acknowledgement: the claimed action, its final status, result and error."""

    action: ActionRecord
    status: Literal["done", "failed"]
    result: dict[str, Any] | None = None
    error: str | None = None
    code: str | None = None  # agentd.protocol.ErrorCode of a failure


class ClaimEnds:
    """The acknowledgement half of ``ActionQueue``; the attributes below are the queue's."""

    table: Any
    lease: float
    claimer: str

    async def renew(self, actions: Iterable[ActionRecord]) -> int:
        """Extend the lease of claims we still hold (one commit); returns how many were renewed.

        The version is not bumped: acknowledgements stay valid, and a competing claim, which
        re-checks ``lease_until`` in its WHERE clause, loses to the renewal.
        """
        tokens = sorted({a.claim_token for a in actions if a.claim_token})
        if not tokens:
            return 0
        updates = {"lease_until": sql_ts(utcnow() + timedelta(seconds=self.lease))}
        where = f"status = 'claimed' AND claimed_by = {sql_str(self.claimer)} AND {sql_in('claim_token', tokens)}"
        result = await with_retry("renew", lambda: self.table.update(updates_sql=updates, where=where))
        return int(result.rows_updated)

    async def release(self, actions: Iterable[ActionRecord]) -> int:
        """Hand claimed actions back to the queue (pending again), e.g. at a graceful stop.

        The next owner claims them at once; the version bump makes any late ack of ours lose.
        """
        pins = [
            f"(action_id = {sql_str(a.action_id)} AND claim_token = {sql_str(a.claim_token)})"
            for a in actions
            if a.claim_token
        ]
        if not pins:
            return 0
        updates = {"status": "'pending'", "version": "version + 1", "lease_until": "NULL"}
        where = f"status = 'claimed' AND ({' OR '.join(pins)})"
        result = await with_retry("release", lambda: self.table.update(updates_sql=updates, where=where))
        return int(result.rows_updated)

    async def complete(self, action: ActionRecord, result: dict[str, Any] | None = None) -> ActionRecord:
        """Mark a claimed action done. Raises ClaimLost if it is no longer ours."""
        return await self._finish_one(Ack(action, "done", result))

    async def fail(self, action: ActionRecord, error: str, result: dict[str, Any] | None = None) -> ActionRecord:
        """Mark a claimed action failed with a message for the user. Raises ClaimLost likewise."""
        return await self._finish_one(Ack(action, "failed", result, error))

    async def _finish_one(self, ack: Ack) -> ActionRecord:
        [outcome] = await self.finish_many([ack])
        if isinstance(outcome, ClaimLost):
            raise outcome
        return outcome

    async def finish_many(self, acks: list[Ack]) -> list[ActionRecord | ClaimLost]:
        """Acknowledge many claimed actions in one commit; per action, the new row or ClaimLost.

        One conditional merge: each source row carries the action's final status, result and
        error, and the match condition pins the claimed version and claim token, so an action
        completed already or reclaimed by another worker is left alone and reported lost.
        """
        if not acks:
            return []
        # One action twice in a batch would count as won twice; only the first is a real ack.
        unique = list({a.action.action_id: a for a in reversed(acks)}.values())[::-1]
        if len(unique) != len(acks):
            outcomes = dict(zip((a.action.action_id for a in unique), await self.finish_many(unique), strict=True))
            first: set[str] = set()
            result: list[ActionRecord | ClaimLost] = []
            for ack in acks:
                aid = ack.action.action_id
                result.append(outcomes[aid] if aid not in first else ClaimLost(f"action {aid} acknowledged twice"))
                first.add(aid)
            return result
        now = utcnow()
        finished = [
            a.action.model_copy(
                update={
                    "status": a.status,
                    "version": a.action.version + 1,
                    "result": a.result,
                    "error": a.error,
                    "error_code": a.code if a.status == "failed" else None,
                    "done_at": now,
                    "lease_until": None,
                }
            )
            for a in acks
        ]
        data = ActionRecord.to_arrow(finished)
        # A conditional merge is LanceDB's batched compare-and-set (CASE is not supported in
        # update expressions): only rows still claimed by us at the version we read match.
        condition = (
            "target.version = source.version - 1 AND target.status = 'claimed' "
            "AND target.claim_token = source.claim_token"
        )

        async def merge() -> Any:
            return await self.table.merge_insert("action_id").when_matched_update_all(where=condition).execute(data)

        # Shield: the acknowledgement must be recorded even if the caller is being cancelled.
        outcome = await asyncio.shield(with_retry("ack", merge))
        rows_updated = int(outcome.num_updated_rows)
        won: set[str]
        if rows_updated == len(acks):
            won = {a.action.action_id for a in acks}
        else:  # some were not ours any more: find out which by their version and done_at
            rows = await self.table.query().where(sql_in("action_id", [a.action.action_id for a in acks])).to_arrow()
            current = {r.action_id: r for r in ActionRecord.from_arrow(rows)}
            won = {
                a.action.action_id
                for a in acks
                if (row := current.get(a.action.action_id)) is not None
                and row.version == a.action.version + 1
                and row.claim_token == a.action.claim_token
                and row.done_at == now
            }
        return [
            record
            if record.action_id in won
            else ClaimLost(f"action {record.action_id} is no longer claimed by this worker")
            for record in finished
        ]
