"""The programmatic control path: open the database, enqueue an action, hint, wait, classify.

Every action command goes through ``Control.act`` (enqueue on the action's shard, send the
daemon a wake hint, poll the action row until a worker acknowledges it) and the control
benchmark measures exactly this path. The queue is the source of truth: the hint only makes
the owning worker claim at once instead of at its next poll, so a missing daemon costs
latency, never correctness, and an action that times out stays queued.

Importing this module imports LanceDB (about a second), so commands import it lazily.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentctl.errors import NotFound, Rejected, TimedOut, UsageProblem
from agentd.config import ConfigError, Settings
from agentd.control import DaemonUnreachable, request
from agentd.ids import new_id, shard_for
from agentd.queue import ActionQueue
from agentd.store import Store, StoreError
from agentd.store.actions import ActionRecord
from agentd.timeutil import utcnow

__all__ = ["HINT_TIMEOUT", "Control", "Submitted", "open_store", "outcome"]

log = logging.getLogger(__name__)

# A hint is an optimisation: never wait long for a daemon that does not answer.
HINT_TIMEOUT = 0.5
# Polling the action row: start fast (acks arrive in tens of ms with a hint), back off so that
# many waiting processes do not flood LanceDB with reads.
POLL_FIRST = 0.01
POLL_GROWTH = 1.25
POLL_MAX = 0.25

# Appending an action under heavy write contention (dozens of agentctl processes at once, plus
# the workers' claims and acks on the same table) can exhaust LanceDB's own commit retries.
ENQUEUE_ATTEMPTS = 10
_CONTENTION = ("contention", "conflict", "retries", "retried", "retry")

# StoreError texts that mean "there is no database here" rather than "this one disagrees".
_MISSING_DB = ("no agentd database", "has no table")


async def open_store(settings: Settings) -> Store:
    """Open the existing database; never creates one (only the daemon does).

    A missing database is "not found" (exit 3): usually a wrong ``--db``/``--config``, or a
    daemon never started. A database that disagrees with the config (shard count, schema) is a
    usage error (exit 2) whose message says which setting to change.
    """
    uri = settings.storage.uri
    try:
        return await Store.open(uri, settings.storage.num_shards, create=False)
    except StoreError as exc:
        if any(marker in str(exc) for marker in _MISSING_DB):
            raise NotFound(f"{exc}; check --db/--config", database=uri) from exc
        raise UsageProblem(str(exc), database=uri) from exc


@dataclass(slots=True)
class Submitted:
    """An enqueued action and whether the daemon took the wake hint (and if not, why)."""

    action: ActionRecord
    hinted: bool
    hint_error: str | None = None


def outcome(record: ActionRecord) -> dict[str, Any]:
    """The result of a finished action, or the error it maps to.

    "unknown session ..." is not found (exit 3), every other failure is a rejection (exit 1).
    """
    details = {"action_id": record.action_id, "session_id": record.session_id, "kind": record.kind}
    if record.status == "done":
        return dict(record.result or {})
    error = record.error or f"{record.kind} failed without a message"
    if error.startswith("unknown session"):
        raise NotFound(error, status="failed", **details)
    raise Rejected(error, status="failed", **details)


class Control:
    """One open database and its action queue, for one CLI invocation or one benchmark run."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.queue = ActionQueue(store.actions, store.num_shards)
        # None when the config names no private place for the socket: the queue still works,
        # the hint (an optimisation) is skipped and the reason shows if the wait times out.
        self.socket_path: Path | None = None
        self.socket_problem: str | None = None
        try:
            self.socket_path = settings.control_socket_path
        except ConfigError as exc:
            self.socket_problem = str(exc)

    @classmethod
    async def open(cls, settings: Settings) -> Control:
        return cls(settings, await open_store(settings))

    async def hint(self, shard: int) -> str | None:
        """Tell the daemon that ``shard`` has new actions; returns why not, or None if it took it."""
        if self.socket_path is None:
            return self.socket_problem or "no control socket"
        try:
            reply = await request(self.socket_path, {"op": "wake", "shard": shard}, timeout=HINT_TIMEOUT)
        except DaemonUnreachable as exc:
            log.debug("wake hint not delivered: %s", exc)
            return str(exc)
        if not reply.get("ok"):
            return str(reply.get("error") or "the daemon refused the hint")
        return None

    async def submit(
        self,
        kind: str,
        session_id: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        hint: bool = True,
    ) -> Submitted:
        """Enqueue one action (one LanceDB append) and, unless ``hint`` is false, wake its worker."""
        if idempotency_key is not None:  # merge_insert on the derived id; the queue retries it
            action = await self.queue.enqueue(kind, session_id, payload, idempotency_key=idempotency_key)
        else:
            action = await self._append(kind, session_id, payload)
        if not hint:
            return Submitted(action, hinted=False, hint_error="hint disabled")
        error = await self.hint(action.shard)
        return Submitted(action, hinted=error is None, hint_error=error)

    async def _append(self, kind: str, session_id: str, payload: dict[str, Any]) -> ActionRecord:
        """Append one action row, retrying commit contention without ever adding it twice.

        The row's id is fixed before the first attempt, and before each retry we look for it:
        a commit that reported an error but landed is not appended again. (ActionQueue.enqueue
        does the same append, but without retrying contention.)
        """
        record = ActionRecord(
            action_id=new_id("a"),
            session_id=session_id,
            shard=shard_for(session_id, self.store.num_shards),
            kind=kind,
            payload=payload,
            created_at=utcnow(),
        )
        data = ActionRecord.to_arrow([record])
        delay = 0.05
        for attempt in range(1, ENQUEUE_ATTEMPTS + 1):
            try:
                await self.store.actions.add(data)
                return record
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}".lower()
                if attempt == ENQUEUE_ATTEMPTS or not any(marker in text for marker in _CONTENTION):
                    raise
                log.debug("enqueue attempt %d hit write contention (%s); retrying", attempt, exc)
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
            if await self.queue.get(record.action_id) is not None:
                return record
        raise AssertionError("unreachable")  # pragma: no cover

    async def wait(self, submitted: Submitted, timeout: float) -> ActionRecord:
        """Poll until a worker acknowledged the action; TimedOut (exit 4) if ``timeout`` passes."""
        action = submitted.action
        deadline = time.monotonic() + timeout
        delay = POLL_FIRST
        while True:
            record = await self.queue.get(action.action_id)
            if record is not None and record.finished:
                return record
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * POLL_GROWTH, POLL_MAX)
        why = "" if submitted.hinted else f" ({submitted.hint_error}: is `agentd run` running with this config?)"
        raise TimedOut(
            f"no worker acknowledged {action.kind} of session {action.session_id} within {timeout:g}s{why}; "
            f"the action stays queued (action {action.action_id}) and will be applied when a worker claims it",
            action_id=action.action_id,
            session_id=action.session_id,
            kind=action.kind,
            status="pending",
        )

    async def act(
        self,
        kind: str,
        session_id: str,
        payload: dict[str, Any],
        *,
        timeout: float,
        idempotency_key: str | None = None,
        hint: bool = True,
    ) -> dict[str, Any]:
        """Enqueue, hint, wait and classify: the worker's result, or Rejected/NotFound/TimedOut."""
        submitted = await self.submit(kind, session_id, payload, idempotency_key=idempotency_key, hint=hint)
        return outcome(await self.wait(submitted, timeout))
