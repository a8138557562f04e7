"""The control-action queue over the ``actions`` table: enqueue, claim, lease, ack.

Claiming is optimistic: read the claimable rows first (so an idle poll writes nothing, since
every LanceDB ``update`` commits a version even when it matches no row), then claim the
batch in one conditional update whose WHERE clause pins each row's ``version``. LanceDB
re-runs a conflicting update against the latest version (LANCEDB.md), so a row another
claimer already took no longer matches; the rows won are read back by the claim token.
Losing a claim is normal and silent (arq's "already started elsewhere").

A claim holds a lease, which the claimer renews (``renew``) while the action waits or runs,
so a slow tick or a slow commit never lets a live claim expire. A claimer never re-claims its
own claims (its ``claimer`` name includes its ownership epoch, so it is unique per process
start). A shard's *owner* (``takeover=True``) also takes over, at once, claims that any other
claimer holds in its shards: only a predecessor that the supervisor has already killed and
reaped (or that exited) can hold them, so nothing waits a lease after a restart. The epoch
check is inside the claim's conditional write (``claim_epoch``): an owner takes over live claims
of an *older* epoch only, so a stale process that still believes it owns the shard can never take
a newer owner's actions. Claims without ``takeover`` wait for the lease to expire, as before.

``complete``/``fail`` are compare-and-set on the claimed version and token, so acknowledging
twice, after losing the lease, or after ``release`` (hand back at a graceful stop) is rejected
(``agentd.queue_acks``: how a claim ends).
One unreadable row is failed on its own and never wedges a claim batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from agentd.ids import deterministic_id, new_id, shard_for
from agentd.queue_acks import Ack, ClaimEnds, ClaimLost, QueueError
from agentd.store.actions import ActionRecord, purge_finished_actions
from agentd.store.retry import retryable, with_retry
from agentd.store.sql import sql_in, sql_str, sql_ts
from agentd.timeutil import utcnow

__all__ = ["Ack", "ActionQueue", "ClaimLost", "QueueError", "retryable"]

log = logging.getLogger(__name__)

# Appending under heavy write contention (dozens of clients plus the workers' claims and acks
# on the same table) can exhaust LanceDB's own commit retries; ours come on top.
ENQUEUE_ATTEMPTS = 10


def _parse_rows(rows: Any) -> tuple[list[ActionRecord], dict[str, str]]:
    """Parse action rows one by one: the readable records, and the reason per unreadable row."""
    records: list[ActionRecord] = []
    unreadable: dict[str, str] = {}
    for row in rows.to_pylist():
        try:
            records.append(ActionRecord.from_row(row))
        except Exception as exc:
            unreadable[str(row.get("action_id"))] = f"{type(exc).__name__}: {exc}"
    return records, unreadable


class ActionQueue(ClaimEnds):
    """The queue of one database. Cheap to create; share one per process.

    ``claimer`` identifies this process in ``claimed_by`` (default ``<host>:<pid>``); it must be
    unique per process start (the session host uses ``worker-<k>@<epoch>``).
    """

    def __init__(
        self,
        table: Any,
        num_shards: int,
        *,
        lease: float = 30.0,
        claim_batch: int = 200,
        claimer: str | None = None,
        epoch: int = 0,
    ) -> None:
        self.table = table
        self.epoch = epoch  # the claimer's ownership epoch (0: unfenced)
        self.num_shards = num_shards
        self.lease = lease
        self.claim_batch = claim_batch
        self.claimer = claimer or f"{os.uname().nodename}:{os.getpid()}"

    # -- producers ---------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        session_id: str,
        payload: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ActionRecord:
        """Append an action for ``session_id``'s shard and return it.

        With an ``idempotency_key`` the action id is derived from the key and inserted with a
        ``merge_insert`` on the declared primary key: the same key twice (even from two
        processes at once) yields one action, and the second call returns the first's row.
        """
        record = self.new_action(kind, session_id, payload, idempotency_key=idempotency_key)
        data = ActionRecord.to_arrow([record])
        if idempotency_key is None:
            await self.table.add(data)
            return record

        async def insert() -> Any:
            return await self.table.merge_insert("action_id").when_not_matched_insert_all().execute(data)

        await with_retry("enqueue", insert)
        stored = await self.get(record.action_id)
        if stored is None:  # pragma: no cover - the insert above committed or raised
            raise QueueError(f"action {record.action_id} vanished after enqueue")
        return stored

    def new_action(
        self, kind: str, session_id: str, payload: dict[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> ActionRecord:
        """The row of a new action (id derived from ``idempotency_key`` when there is one)."""
        return ActionRecord(
            action_id=deterministic_id("a", "idem", idempotency_key) if idempotency_key else new_id("a"),
            idempotency_key=idempotency_key,
            session_id=session_id,
            shard=shard_for(session_id, self.num_shards),
            kind=kind,
            payload=payload or {},
            created_at=utcnow(),
        )

    async def append_many(self, records: list[ActionRecord], *, attempts: int = ENQUEUE_ATTEMPTS) -> None:
        """Append new action rows in one commit, retrying write contention without ever adding one twice.

        The ids are fixed before the first attempt, and before each retry we look for them: a
        commit that reported an error but landed is not appended again. Used by the daemon's
        group commit (every concurrent submission in one append) and by agentctl without a daemon.
        """
        if not records:
            return
        data = ActionRecord.to_arrow(records)
        delay = 0.05
        for attempt in range(1, attempts + 1):
            try:
                await self.table.add(data)
                return
            except Exception as exc:
                if attempt == attempts or not retryable(exc):
                    raise
                log.debug("append attempt %d hit write contention (%s); retrying", attempt, exc)
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
            ids = [r.action_id for r in records]
            if int(await self.table.count_rows(sql_in("action_id", ids))) == len(ids):
                return
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_many(self, action_ids: list[str]) -> dict[str, ActionRecord]:
        """The rows of these actions (unknown ids are absent)."""
        if not action_ids:
            return {}
        rows = await self.table.query().where(sql_in("action_id", action_ids)).to_arrow()
        return {r.action_id: r for r in ActionRecord.from_arrow_tolerant(rows)[0]}

    async def get(self, action_id: str) -> ActionRecord | None:
        rows = await self.table.query().where(f"action_id = {sql_str(action_id)}").limit(2).to_arrow()
        found = ActionRecord.from_arrow(rows)
        return found[0] if found else None

    async def wait(self, action_id: str, *, timeout: float, poll: float = 0.02) -> ActionRecord | None:
        """Poll until the action is done or failed; None if ``timeout`` passes first."""
        deadline = asyncio.get_running_loop().time() + timeout
        delay = poll
        while True:
            record = await self.get(action_id)
            if record is not None and record.finished:
                return record
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.25)

    # -- consumers ---------------------------------------------------------------------------

    def _claimable_clause(self, shards: Iterable[int], *, takeover: bool = False) -> str:
        now = sql_ts(utcnow())
        stale = f"lease_until < {now}"
        if takeover:
            other = f"claimed_by <> {sql_str(self.claimer)}"
            if self.epoch:  # fenced: never from a newer owner, whatever a stale process believes
                other = f"({other} AND (claim_epoch IS NULL OR claim_epoch < {int(self.epoch)}))"
            stale = f"({stale} OR {other})"
        # Our own claims are never claimable again: their lease is renewed while we hold them.
        mine = f"claimed_by = {sql_str(self.claimer)}"
        claimed = f"(status = 'claimed' AND {stale} AND NOT {mine})"
        return f"{sql_in('shard', list(shards))} AND (status = 'pending' OR {claimed})"

    async def pending(self, shards: Iterable[int], *, limit: int | None = None) -> list[ActionRecord]:
        """Claimable actions of ``shards`` (pending, or claimed with an expired lease), oldest first."""
        rows = await self.table.query().where(self._claimable_clause(shards)).to_arrow()
        records = sorted(ActionRecord.from_arrow(rows), key=lambda r: (r.created_at, r.action_id))
        return records[:limit] if limit is not None else records

    async def claimed_by_us(self, shards: Iterable[int]) -> list[ActionRecord]:
        """Our live claims in ``shards`` as stored, oldest first: to find the ones whose claim
        landed although its caller never saw it (a timeout after the update)."""
        mine = f"{sql_in('shard', list(shards))} AND status = 'claimed' AND claimed_by = {sql_str(self.claimer)}"
        records, _ = _parse_rows(await self.table.query().where(mine).to_arrow())
        return sorted(records, key=lambda r: (r.created_at, r.action_id))

    async def _candidates(self, shards: Iterable[int], limit: int, takeover: bool) -> list[tuple[str, int]]:
        """(action_id, version) of the oldest claimable actions; reads three columns only."""
        query = (
            self.table.query()
            .where(self._claimable_clause(shards, takeover=takeover))
            .select(["action_id", "version", "created_at"])
        )
        rows = (await query.to_arrow()).to_pylist()
        rows.sort(key=lambda r: (r["created_at"], r["action_id"]))
        return [(r["action_id"], r["version"]) for r in rows[:limit]]

    async def claim(
        self, shards: Iterable[int], *, limit: int | None = None, takeover: bool = False
    ) -> list[ActionRecord]:
        """Claim up to ``limit`` claimable actions of ``shards``; returns the ones won, oldest first.

        Reads first: when nothing is claimable no write happens. Then one conditional update
        pins every candidate's version; rows someone else claimed meanwhile do not match.
        ``takeover`` is for the shards' owner only (see the module docstring).
        """
        shards = list(shards)
        candidates = await self._candidates(shards, limit or self.claim_batch, takeover)
        if not candidates:
            return []
        token = new_id("c")
        now = utcnow()
        pins = " OR ".join(f"(action_id = {sql_str(aid)} AND version = {version})" for aid, version in candidates)
        # Re-check claimability in the WHERE clause too: on a conflict LanceDB re-runs it
        # against the latest version, where the version pin alone already excludes changed rows.
        where = f"({pins}) AND ({self._claimable_clause(shards, takeover=takeover)})"
        updates = self._claim_updates(token, now)
        result = await with_retry("claim", lambda: self.table.update(updates_sql=updates, where=where))
        if result.rows_updated == 0:
            log.debug("claim of %d actions: all taken elsewhere", len(candidates))
            return []
        rows = await self.table.query().where(f"claim_token = {sql_str(token)}").to_arrow()
        won, unreadable = _parse_rows(rows)
        if unreadable:
            await self._fail_unreadable(token, unreadable)
        won.sort(key=lambda r: (r.created_at, r.action_id))
        if len(won) + len(unreadable) != result.rows_updated:  # pragma: no cover - would mean a broken CAS
            log.error("claim token %s: updated %d rows but read %d", token, result.rows_updated, len(won))
        return won

    def _claim_updates(self, token: str, now: datetime) -> dict[str, str]:
        """What a claim writes into each row it wins (SQL expressions)."""
        return {
            "status": "'claimed'",
            "version": "version + 1",
            "attempts": "coalesce(attempts, 0) + 1",
            "claimed_by": sql_str(self.claimer),
            "claim_token": sql_str(token),
            "claim_epoch": str(int(self.epoch)) if self.epoch else "NULL",
            "claimed_at": sql_ts(now),
            "lease_until": sql_ts(now + timedelta(seconds=self.lease)),
        }

    async def claim_offered(self, offered: list[ActionRecord], shards: Iterable[int]) -> list[ActionRecord]:
        """Claim actions whose rows we were handed (the daemon's wake carries what it appended).

        The same conditional update as ``claim``, pinned on the offered versions, without the
        read before it; and when every offered row is won, without the read after it either
        (we know each row and what the update wrote). Saves two table scans on the control path.
        """
        shards = sorted(set(shards))
        offered = [a for a in offered if a.shard in set(shards)]
        if not offered:
            return []
        token = new_id("c")
        now = utcnow()
        lease_until = now + timedelta(seconds=self.lease)
        pins = " OR ".join(f"(action_id = {sql_str(a.action_id)} AND version = {a.version})" for a in offered)
        # A row still at the version it was offered with and still pending is claimable by its
        # shard's owner (the shards are filtered above, the epoch is fenced by the caller); any
        # claim, release, cancel or acknowledgement bumps the version. Taking over someone's
        # claim is left to ``claim`` (the loop's next turn). Two columns to filter instead of
        # six halves the update's scan.
        where = f"({pins}) AND status = 'pending'"
        updates = self._claim_updates(token, now)
        result = await with_retry("claim", lambda: self.table.update(updates_sql=updates, where=where))
        if result.rows_updated == len(offered):
            return [
                a.model_copy(
                    update={
                        "status": "claimed",
                        "version": a.version + 1,
                        "attempts": (a.attempts or 0) + 1,
                        "claimed_by": self.claimer,
                        "claim_token": token,
                        "claim_epoch": self.epoch or None,
                        "claimed_at": now,
                        "lease_until": lease_until,
                    }
                )
                for a in offered
            ]
        if result.rows_updated == 0:
            return []
        rows = await self.table.query().where(f"claim_token = {sql_str(token)}").to_arrow()
        won, unreadable = _parse_rows(rows)
        if unreadable:
            await self._fail_unreadable(token, unreadable)
        return sorted(won, key=lambda r: (r.created_at, r.action_id))

    async def _fail_unreadable(self, token: str, unreadable: dict[str, str]) -> None:
        """Fail rows that do not parse (a poisoned payload), each with the reason, so they never block a batch."""
        now = sql_ts(utcnow())
        for action_id, reason in unreadable.items():
            log.error("action %s is unreadable (%s); failing it", action_id, reason)
            updates = {
                "status": "'failed'",
                "version": "version + 1",
                "error": sql_str(f"unreadable action row: {reason}"[:500]),
                "error_code": "'invalid'",
                "done_at": now,
                "lease_until": "NULL",
            }
            where = f"action_id = {sql_str(action_id)} AND claim_token = {sql_str(token)} AND status = 'claimed'"
            try:
                await with_retry(
                    "fail unreadable", lambda u=updates, w=where: self.table.update(updates_sql=u, where=w)
                )
            except Exception as exc:  # it stays claimed by us; the next start takes it over and fails it again
                log.error("cannot fail unreadable action %s: %s", action_id, exc)

    # -- retention ---------------------------------------------------------------------------

    async def purge_finished(self, older_than: float) -> int:
        """Delete done/failed actions finished more than ``older_than`` seconds ago."""
        return await purge_finished_actions(self.table, older_than)

    async def counts(self) -> dict[str, int]:
        """How many actions are in each status (for status views)."""
        rows = await self.table.query().select(["status"]).to_arrow()
        counts: dict[str, int] = {}
        for status in rows.column("status").to_pylist() if rows.num_rows else []:
            counts[status] = counts.get(status, 0) + 1
        return counts
