"""A session's state and how it is written: the step and ``sessions`` rows of each change.

Split from the loop (``agentd.runtime.session``) because this part is about storage, not
scheduling: which columns of the session row never change (kept as one tuple, ~2 KB less per
session than the record), how a step's row and the session's snapshot are built from the
current state without a pydantic model per step (this runs ~10k times a second per worker),
and what a command's receipt says.
"""

from __future__ import annotations

import time
from typing import Any

from agentd.store.records import encode_json
from agentd.store.sessions import SessionRecord
from agentd.store.steps import StepRecord, StepStatus
from agentd.store.writer import BatchingWriter, Row
from agentd.timeutil import utcnow

__all__ = ["SessionState"]

# ``_persist`` builds the writer's rows as tuples in schema order (no pydantic model per step: this
# runs ~10k times a second per worker). Fail at import, not at the first flush, if a schema moves.
_STEP_COLUMNS = (
    *("session_id", "agent_id", "shard", "seq", "ts", "status", "kind", "text", "data", "state", "guidance"),
    *("notes", "latency_ms", "error", "epoch", "action_id"),
)
_SESSION_COLUMNS = (
    *("session_id", "agent_id", "agent_type", "shard", "status", "desired_status", "config", "context"),
    *("iteration", "last_seq", "last_result", "conversation_id", "created_at", "updated_at", "version", "epoch"),
)
if tuple(StepRecord.SCHEMA.names) != _STEP_COLUMNS or tuple(SessionRecord.SCHEMA.names) != _SESSION_COLUMNS:
    raise RuntimeError("steps/sessions schema changed: update SessionState._persist to match")


class SessionState:
    """The state ``SessionRunner`` changes, and the rows each change is stored as."""

    __slots__ = (
        "_fixed",
        "_record",
        "context",
        "epoch",
        "iteration",
        "last_result",
        "last_seq",
        "session_id",
        "status",
        "writer",
    )

    def __init__(self, record: SessionRecord, writer: BatchingWriter, *, epoch: int, fix: bool) -> None:
        self.session_id = record.session_id
        # The row the host passed in, until ``_fix()`` keeps just its constant columns (see there).
        self._record: SessionRecord | None = record
        self._fixed: tuple[Any, ...] = ()
        self.writer = writer
        self.epoch = epoch
        self.status: str = record.status
        self.context: dict[str, Any] = dict(record.context)
        self.iteration = record.iteration
        self.last_seq = record.last_seq
        self.last_result = record.last_result
        if fix:
            self._fix()

    def _fix(self) -> None:
        """Keep only the columns of the session row that never change, config JSON-encoded.

        Holding them in one tuple of plain values instead of the ``SessionRecord`` (a model with
        its dict, field set, config and context dicts) saves ~2 KB per session. A session being
        created keeps the record until its first step: the host sets ``conversation_id`` on it
        right after constructing the runner.
        """
        record = self._record
        if record is None:
            return
        self._fixed = (
            record.agent_id,
            record.agent_type,
            record.shard,
            record.desired_status,
            encode_json(record.config),
            record.conversation_id,
            record.created_at,
            record.version,
        )
        self._record = None

    @property
    def record(self) -> SessionRecord:
        """The session row: as the host passed it in before the first step, else its current state."""
        if self._record is not None:
            return self._record
        row = dict(zip(_SESSION_COLUMNS, self._snapshot_row(encode_json(self.context), 0), strict=True))
        row["updated_at"] = utcnow()
        return SessionRecord.from_row(row)

    def _snapshot_row(self, context_json: str, updated_at: int) -> Row:
        """The ``sessions`` row (schema order, JSON encoded); ``updated_at`` in epoch microseconds."""
        if self._record is not None:
            self._fix()
        agent_id, agent_type, shard, desired_status, config_json, conversation_id, created_at, version = self._fixed
        return (
            self.session_id,
            agent_id,
            agent_type,
            shard,
            self.status,
            desired_status,
            config_json,
            context_json,
            self.iteration,
            self.last_seq,
            self.last_result,
            conversation_id,
            created_at,
            updated_at,
            version,
            self.epoch,
        )

    def _encode_context(self) -> str:
        context = self.context
        context["paused"] = self.status == "paused"
        return encode_json(context)

    async def _persist(
        self,
        kind: str,
        *,
        text: str | None = None,
        status: StepStatus = "info",
        data: dict[str, Any] | None = None,
        guidance: dict[str, Any] | None = None,
        notes: str | None = None,
        error: str | None = None,
        latency_ms: float | None = None,
        action_id: str | None = None,
    ) -> int:
        """Append a step with the current state and submit the snapshot; returns the generation.

        The rows are what ``StepRecord``/``SessionRecord.to_values()`` would give, built directly:
        the context is encoded once and shared by the step's ``state`` and the session row.
        """
        self.last_seq += 1
        context_json = self._encode_context()
        now = time.time_ns() // 1000
        snapshot = self._snapshot_row(context_json, now)
        # == encode_json({"status", "iteration", "context", "last_result"}), without re-encoding the context.
        state = (
            f'{{"status":{encode_json(self.status)},"iteration":{self.iteration},'
            f'"context":{context_json},"last_result":{encode_json(self.last_result)}}}'
        )
        step = (
            self.session_id,
            snapshot[1],  # agent_id
            snapshot[3],  # shard
            self.last_seq,
            now,
            status,
            kind,
            text,
            None if data is None else encode_json(data),
            state,
            None if guidance is None else encode_json(guidance),
            notes,
            latency_ms,
            error,
            self.epoch,
            action_id,
        )
        return await self.writer.submit_values([step], snapshot)

    def _result(self, **extra: Any) -> dict[str, Any]:
        # ``seq``: the step at which the state now reflects the action (a receipt).
        return {"session_id": self.session_id, "status": self.status, "seq": self.last_seq, **extra}
