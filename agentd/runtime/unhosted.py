"""Actions on sessions that have no runner in this process, and recognising replayed actions.

A session can exist in storage without a runner: stopped, in ``error``, or quarantined because
it could not be resumed (its agent type was uninstalled, its stored config no longer
validates, one of its rows is unreadable). ``destroy`` must work on every one of them, so the
host writes the final lifecycle step and snapshot itself, through the same batching writer.

An action claimed a second time (its first claimer died, or handed it back) may have been
applied already: every step records the ``action_id`` that caused it, so the host finds that
step and acknowledges the action again with the same result instead of applying it twice.
"""

from __future__ import annotations

import logging
from typing import Any

from agentd.runtime.commands import ActionRejected, CommandResult
from agentd.store.actions import ActionRecord
from agentd.store.sessions import SessionRecord, get_session
from agentd.store.steps import StepRecord, latest_seq
from agentd.store.writer import BatchingWriter
from agentd.timeutil import utcnow

__all__ = ["QUARANTINE_PREFIX", "act_unhosted", "replayed_result", "write_final_step"]

log = logging.getLogger(__name__)

# ``last_result`` of a quarantined session starts with this, followed by the reason.
QUARANTINE_PREFIX = "quarantined: "


def replayed_result(action: ActionRecord, step: StepRecord) -> dict[str, Any]:
    """The acknowledgement of an action that ``step`` shows was applied already."""
    state = step.state or {}
    result: dict[str, Any] = {
        "session_id": step.session_id,
        "status": state.get("status"),
        "seq": step.seq,
        "replayed": True,
    }
    if action.kind == "interrupt" and step.guidance:
        normalized = step.guidance.get("normalized")
        if isinstance(normalized, list):  # typed operations: the fields they set, as a live result shows
            result["operations"] = normalized
            result["applied"] = {
                k: v for op in normalized if isinstance(op, dict) for k, v in op.items() if k != "type"
            }
        else:  # a step stored before guidance became typed operations
            result["applied"] = normalized
        result["context"] = state.get("context")
    return result


async def write_final_step(
    writer: BatchingWriter,
    store: Any,
    record: SessionRecord,
    *,
    status: str,
    text: str,
    epoch: int,
    action_id: str | None = None,
    error: str | None = None,
) -> CommandResult:
    """Append a lifecycle step moving an unhosted session to ``status``, and its snapshot.

    The seq continues after the newest of the session row and its latest step (the row may
    lag the steps after a crash), so seqs stay contiguous.
    """
    seq = max(record.last_seq, await latest_seq(store.steps, record.session_id)) + 1
    now = utcnow()
    last_result = f"{QUARANTINE_PREFIX}{error}" if error and status == "error" else record.last_result
    state = {
        "status": status,
        "iteration": record.iteration,
        "context": record.context,
        "last_result": last_result,
    }
    step = StepRecord(
        session_id=record.session_id,
        agent_id=record.agent_id,
        shard=record.shard,
        seq=seq,
        ts=now,
        status="error" if error else "info",
        kind="lifecycle",
        text=text,
        state=state,
        error=error,
        epoch=epoch,
        action_id=action_id,
    )
    snapshot = record.model_copy(
        update={"status": status, "last_seq": seq, "updated_at": now, "last_result": last_result}
    )
    generation = await writer.submit([step], snapshot)
    return {"session_id": record.session_id, "status": status, "seq": seq}, generation


async def act_unhosted(writer: BatchingWriter, store: Any, action: ActionRecord, epoch: int) -> CommandResult:
    """An action for a session of ours that has no runner: destroy works, anything else is refused."""
    existing = await get_session(store.sessions, action.session_id)
    if existing is None:
        raise ActionRejected(f"unknown session {action.session_id}", code="not_found")
    if action.kind == "destroy":
        if existing.status == "stopped":
            return {"session_id": existing.session_id, "status": existing.status}, 0
        # Destroy always works: an error, quarantined or unresumable session is stopped here.
        return await write_final_step(
            writer, store, existing, status="stopped", text="destroyed", epoch=epoch, action_id=action.action_id
        )
    why = existing.last_result if (existing.last_result or "").startswith(QUARANTINE_PREFIX) else None
    raise ActionRejected(f"session {action.session_id} is {existing.status}" + (f" ({why})" if why else ""))
