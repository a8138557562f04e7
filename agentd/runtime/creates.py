"""How a session host applies ``create`` actions (a mixin of ``SessionHost``).

Kept apart because a create is the one action without a session to hand it to: the host must
find out whether the id is new (no row, no steps), adopt a session whose create landed without
its row, recognise a replayed create, and hold the actions that arrive for the session while
its create is being validated. Large batches (``agentctl create --count 10000``) look their ids
up together (``_prefetch_creates``) instead of two queries per session.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentd.agents.base import CreateError
from agentd.agents.registry import UnknownAgentType, agent_type
from agentd.runtime.ack_path import AckPath
from agentd.runtime.commands import ActionRejected, Command, CommandResult
from agentd.runtime.resume import LIVE_STATUSES, from_step
from agentd.runtime.session import SessionRunner
from agentd.store.actions import ActionRecord
from agentd.store.sessions import SessionRecord, get_session
from agentd.store.sql import sql_in
from agentd.store.steps import StepRecord, latest_step, steps_of_actions
from agentd.timeutil import utcnow

if TYPE_CHECKING:
    from agentd.store import Store
    from agentd.store.writer import BatchingWriter

__all__ = ["CreatePath"]

log = logging.getLogger("agentd.runtime.host")


class CreatePath(AckPath):
    """The create half of ``SessionHost``; the attributes below are the host's."""

    store: Store
    writer: BatchingWriter
    runners: dict[str, SessionRunner]
    _creating: dict[str, list[ActionRecord]]
    _fresh: set[str]

    def _start_runner(self, record: SessionRecord, *, creating: bool) -> SessionRunner:
        raise NotImplementedError

    def _dispatch(self, action: ActionRecord) -> None:
        raise NotImplementedError

    def _release_queued(self, session_id: str) -> None:
        for queued in self._creating.pop(session_id, []):
            self._dispatch(queued)

    async def _create(self, action: ActionRecord) -> CommandResult:
        try:
            return await self._create_session(action)
        finally:
            self._release_queued(action.session_id)

    async def _prefetch_creates(self, actions: list[ActionRecord]) -> None:
        """Find out in two queries which of a batch's creates name a session never seen before.

        Each create otherwise looks up its session row and its latest step alone: two queries a
        session, which made ``create --count 10000`` spend most of its time in lookups. A session
        absent from both tables is remembered as fresh, and its create skips them.
        """
        ids = sorted({a.session_id for a in actions if a.kind == "create" and a.session_id not in self.runners})
        if len(ids) < 2:
            return
        try:
            where = sql_in("session_id", ids)
            rows = await self.store.sessions.query().where(where).select(["session_id"]).to_arrow()
            stepped = await self.store.steps.query().where(where).select(["session_id"]).to_arrow()
        except Exception as exc:  # only an optimisation: each create looks itself up instead
            log.debug("prefetching %d creates failed: %s", len(ids), exc)
            return
        known = set(rows.column("session_id").to_pylist()) | set(stepped.column("session_id").to_pylist())
        self._fresh.update(sid for sid in ids if sid not in known)

    async def _create_session(self, action: ActionRecord) -> CommandResult:
        payload = action.payload
        fresh = action.session_id in self._fresh
        self._fresh.discard(action.session_id)
        existing = None if fresh else await get_session(self.store.sessions, action.session_id)
        if existing is not None:
            return await self._existing_create(action, existing)
        try:
            cls = agent_type(str(payload.get("agent_type", "")))
            config = cls.parse_config(dict(payload.get("config") or {}))
        except (UnknownAgentType, CreateError) as exc:
            raise ActionRejected(str(exc)) from exc
        if action.session_id in self.runners:  # created by an earlier action while we awaited
            return await self._duplicate_create(action)
        now = utcnow()
        record = SessionRecord(
            session_id=action.session_id,
            agent_id=str(payload.get("agent_id") or action.session_id),
            agent_type=cls.type_name,
            shard=action.shard,
            status="starting",
            config={**config.model_dump(mode="json", exclude_none=True), "_create_action": action.action_id},
            context={},
            conversation_id=None,
            created_at=now,
            updated_at=now,
        )
        previous = None if fresh else await latest_step(self.store.steps, action.session_id)
        if previous is not None:
            # Steps but no session row: a crash after a flush's steps commit and before its
            # sessions commit. If they are this create's, adopt them; never create again.
            if action.action_id not in await steps_of_actions(
                self.store.steps, [(action.session_id, action.action_id)]
            ):
                raise ActionRejected(f"session {action.session_id} already exists")
            return await self._adopt(record, previous)
        runner = self._start_runner(record, creating=True)
        future = runner.submit(Command("create", payload, action_id=action.action_id))
        self._release_queued(action.session_id)  # queued actions go in behind the create
        return await future

    async def _adopt(self, record: SessionRecord, latest: StepRecord) -> CommandResult:
        """Resume a session whose create was applied but whose row was never written, from its latest step."""
        record = from_step(record, latest.seq, latest.state)
        generation = await self.writer.submit(None, record)  # the missing row, durable before the ack
        if record.status in LIVE_STATUSES:
            self._start_runner(record, creating=False)
        log.warning(
            "session %s: adopted its steps up to seq %d (its row was never written)", record.session_id, latest.seq
        )
        result = {"session_id": record.session_id, "agent_id": record.agent_id, "status": record.status}
        return {**result, "seq": latest.seq, "replayed": True}, generation

    async def _existing_create(self, action: ActionRecord, existing: SessionRecord) -> CommandResult:
        if existing.config.get("_create_action") == action.action_id:  # our own create, replayed
            return {"session_id": existing.session_id, "agent_id": existing.agent_id, "status": existing.status}, 0
        raise ActionRejected(f"session {action.session_id} already exists")

    async def _duplicate_create(self, action: ActionRecord) -> CommandResult:
        existing = await get_session(self.store.sessions, action.session_id)
        if existing is not None:
            return await self._existing_create(action, existing)
        raise ActionRejected(f"session {action.session_id} already exists")
