"""The read views of the control plane: what ``agentctl list/status/steps/actions/...`` print.

One async function per view, each taking a ``Store`` and a pydantic parameter model and
returning plain JSON data. The daemon answers a control-socket ``read`` request with
``read_view`` (agentd.supervision.control_api), and agentctl without a daemon calls the same
function on its own connection, so the output is the same either way: the JSON shapes are a
contract (README "Output"); keys are only ever added.

Errors: an unknown session or conversation raises ``LookupError`` (the daemon answers
``not_found``); bad parameters raise ``ValueError`` (pydantic's ValidationError is one; the
daemon answers ``bad_request``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentd.ids import validate_id
from agentd.runtime.resume import from_step
from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.conversations import ConversationRecord, list_participants, read_messages
from agentd.store.sessions import SessionRecord, get_session, list_sessions
from agentd.store.sql import sql_in, sql_str
from agentd.store.steps import StepRecord, steps_of_actions

__all__ = [
    "ACTION_STATES",
    "QUEUED_STATES",
    "SESSION_KEYS",
    "STEPS_PAGE",
    "ActionsParams",
    "ConversationListParams",
    "ConversationShowParams",
    "ListParams",
    "StatusParams",
    "StepsParams",
    "TypesParams",
    "action_json",
    "read_view",
    "session_json",
    "types_data",
]

# Steps per ``steps`` answer: bounds memory (and the reply line) whatever a history's length.
STEPS_PAGE = 1000
ActionState = Literal["pending", "claimed", "done", "failed"]
ACTION_STATES: tuple[ActionState, ...] = ("pending", "claimed", "done", "failed")
# Queued but not applied yet: what `status` lists and what `actions` shows by default.
QUEUED_STATES: tuple[ActionState, ...] = ("pending", "claimed")
SESSION_KEYS = (
    "session_id",
    "agent_id",
    "agent_type",
    "status",
    "context",
    "iteration",
    "last_seq",
    "conversation_id",
    "created_at",
    "updated_at",
    "shard",
    "last_result",
)
ACTION_KEYS = (
    "action_id",
    "kind",
    "session_id",
    "shard",
    "status",
    "created_at",
    "claimed_by",
    "attempts",
    "done_at",
    "error",
    "error_code",
    "idempotency_key",
    "payload",
    "result",
)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _session_id(value: str) -> str:
    return validate_id(value, "session id")


class ListParams(_Params):
    agent_id: str | None = None
    statuses: list[str] = Field(default_factory=list)  # empty: every status
    agent_type: str | None = None
    # Only these keys of each session (a selector needs three, not every context).
    fields: list[str] | None = None


class StatusParams(_Params):
    session_id: str


class StepsParams(_Params):
    """``since``: the first ``limit`` steps after it; no ``since``: the latest ``limit`` (all without it)."""

    session_id: str
    since: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=1)
    page: int = Field(default=STEPS_PAGE, ge=1, le=STEPS_PAGE)


class ConversationShowParams(_Params):
    conversation_id: str
    since: datetime | None = None


class ConversationListParams(_Params):
    pass


class ActionsParams(_Params):
    session_id: str | None = None
    statuses: list[ActionState] = Field(default_factory=lambda: list(QUEUED_STATES))
    limit: int = Field(default=1000, ge=1, le=100_000)


class TypesParams(_Params):
    pass


def session_json(record: SessionRecord) -> dict[str, Any]:
    """A session as every command prints it (``status``, each line of ``list``)."""
    data = record.model_dump(mode="json")
    shaped = {key: data.get(key) for key in SESSION_KEYS}
    # The creation config without the runtime's private keys (``_create_action``).
    shaped["config"] = {k: v for k, v in (data.get("config") or {}).items() if not k.startswith("_")}
    return shaped


def action_json(record: ActionRecord) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    return {key: data.get(key) for key in ACTION_KEYS}


async def list_view(store: Store, params: ListParams) -> list[dict[str, Any]]:
    """Sessions, oldest first."""
    records = await list_sessions(store.sessions, agent_id=params.agent_id, statuses=params.statuses or None)
    if params.agent_type is not None:
        records = [r for r in records if r.agent_type == params.agent_type]
    records.sort(key=lambda r: (r.created_at, r.session_id))
    rows = [session_json(r) for r in records]
    if params.fields is not None:
        rows = [{key: row.get(key) for key in params.fields} for row in rows]
    return rows


async def _actions(store: Store, where: str, limit: int) -> list[dict[str, Any]]:
    rows = await store.actions.query().where(where).to_arrow()
    records, _unreadable = ActionRecord.from_arrow_tolerant(rows)
    records.sort(key=lambda r: (r.created_at, r.action_id))
    return [action_json(r) for r in records[:limit]]


async def status_view(store: Store, params: StatusParams) -> dict[str, Any]:
    """One session plus its actions queued but not applied yet (``queued_actions``)."""
    session_id = _session_id(params.session_id)
    record = await get_session(store.sessions, session_id)
    if record is None:
        raise LookupError(f"unknown session {session_id}")
    # Steps the row does not show yet: an action is acknowledged once its step commits, one
    # commit before the row (DESIGN.md §4: the newer of row and step is the session's state).
    newer = (
        await store.steps.query()
        .where(f"session_id = {sql_str(session_id)} AND seq > {int(record.last_seq)}")
        .select(["seq", "state"])
        .to_arrow()
    )
    if newer.num_rows:
        latest = max(newer.to_pylist(), key=lambda row: row["seq"])
        try:
            state = json.loads(latest["state"] or "{}")
        except ValueError:  # an unreadable step: show the row (the host quarantines the session)
            state = None
        if isinstance(state, dict):
            record = from_step(record, latest["seq"], state)
    data = session_json(record)
    where = f"session_id = {sql_str(session_id)} AND {sql_in('status', QUEUED_STATES)}"
    queued = await _actions(store, where, 1000)
    # A claimed action whose step committed is applied, though its row is not marked yet.
    claimed = [(session_id, a["action_id"]) for a in queued if a["status"] == "claimed"]
    applied = await steps_of_actions(store.steps, claimed)
    data["queued_actions"] = [a for a in queued if a["action_id"] not in applied]
    return data


async def steps_view(store: Store, params: StepsParams) -> dict[str, Any]:
    """One page of steps: ``{"session_id", "agent_id", "steps": [...], "next": {"since", "limit"} | None}``.

    Only the seq column of the steps to come is read whole (8 bytes a step); rows, with their
    state snapshots, are read one seq range (at most ``page`` steps) at a time, so a long
    history streams page by page. ``next`` is the request for the following page. A session
    with neither a session row nor steps is unknown (LookupError).
    """
    session_id = _session_id(params.session_id)
    where = f"session_id = {sql_str(session_id)}"
    since, limit = params.since, params.limit
    if since is None and limit is not None:  # the latest `limit`: turn it into "after floor"
        top = await store.steps.query().where(where).select(["seq"]).to_arrow()
        seqs_all = top.column("seq").to_pylist()
        since = max(0, max(seqs_all) - limit) if seqs_all else 0
    since = since or 0
    rows = await store.steps.query().where(f"{where} AND seq > {since}").select(["seq"]).to_arrow()
    seqs = sorted(rows.column("seq").to_pylist())
    if limit is not None:
        seqs = seqs[:limit]
    page = seqs[: params.page]
    steps: list[StepRecord] = []
    if page:
        query = store.steps.query().where(f"{where} AND seq >= {page[0]} AND seq <= {page[-1]}")
        steps = sorted(StepRecord.from_arrow(await query.to_arrow()), key=lambda r: r.seq)
    session = await get_session(store.sessions, session_id)
    if session is None and not page:
        any_step = await store.steps.query().where(where).select(["seq"]).limit(1).to_arrow()
        if any_step.num_rows == 0:
            raise LookupError(f"unknown session {session_id}")
    agent_id = session.agent_id if session is not None else (steps[0].agent_id if steps else None)
    more = len(seqs) > len(page)
    following = {"since": page[-1], "limit": None if limit is None else limit - len(page)} if more else None
    return {
        "session_id": session_id,
        "agent_id": agent_id,
        "steps": [s.model_dump(mode="json") for s in steps],
        "next": following,
    }


async def conversation_show_view(store: Store, params: ConversationShowParams) -> dict[str, Any]:
    """A conversation's messages in commit order, and the table version read before them.

    ``version`` lets a follower tail from exactly there: a message committed during the read
    has a later version, so it is printed once.
    """
    conversation_id = validate_id(params.conversation_id, "conversation id")
    rows = await store.conversations.query().where(f"conversation_id = {sql_str(conversation_id)}").limit(1).to_arrow()
    found = ConversationRecord.from_arrow(rows)
    if not found:
        raise LookupError(f"unknown conversation {conversation_id}")
    version = int(await store.messages.version())
    messages = await read_messages(store.messages, conversation_id, since=params.since)
    return {
        "conversation": found[0].model_dump(mode="json"),
        "version": version,
        "messages": [m.model_dump(mode="json") for m in messages],
    }


async def conversation_list_view(store: Store, params: ConversationListParams) -> list[dict[str, Any]]:
    """Every conversation, oldest first, with its message count and participants' session ids."""
    conversations = ConversationRecord.from_arrow(await store.conversations.query().to_arrow())
    conversations.sort(key=lambda c: (c.created_at, c.conversation_id))
    counts: dict[str, int] = {}
    if conversations:
        ids = (await store.messages.query().select(["conversation_id"]).to_arrow()).column("conversation_id")
        for cid in ids.to_pylist():
            counts[cid] = counts.get(cid, 0) + 1
    result = []
    for record in conversations:
        participants = await list_participants(store.participants, record.conversation_id)
        result.append(
            {
                **record.model_dump(mode="json"),
                "messages": counts.get(record.conversation_id, 0),
                "participants": sorted(p.session_id for p in participants if p.session_id),
            }
        )
    return result


async def actions_view(store: Store, params: ActionsParams) -> list[dict[str, Any]]:
    """Actions in the given states (default: queued, i.e. pending or claimed), oldest first."""
    clauses = [sql_in("status", params.statuses or list(ACTION_STATES))]
    if params.session_id is not None:
        clauses.append(f"session_id = {sql_str(_session_id(params.session_id))}")
    return await _actions(store, " AND ".join(clauses), params.limit)


def _field_type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")


def types_data() -> list[dict[str, Any]]:
    """The registered agent types and the fields of their creation config (``agentctl types``).

    Read-only use of the registry: loading it imports the installed types' modules.
    """
    from pydantic_core import PydanticUndefined

    from agentd.agents.registry import agent_type, agent_types

    result = []
    for name in agent_types():
        cls = agent_type(name)
        fields = []
        for field_name, info in cls.config_model.model_fields.items():
            default = None if info.default is PydanticUndefined else info.default
            fields.append(
                {
                    "name": field_name,
                    "type": _field_type(info.annotation),
                    "required": info.is_required(),
                    "default": default if isinstance(default, str | int | float | bool | type(None)) else repr(default),
                    "description": info.description,
                }
            )
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")  # its own, not the base class's
        result.append(
            {
                "type": name,
                "class": f"{cls.__module__}:{cls.__qualname__}",
                "description": doc.splitlines()[0] if doc else "",
                "config": fields,
            }
        )
    return result


async def types_view(_store: Store | None, _params: TypesParams) -> list[dict[str, Any]]:
    return types_data()


_Views = dict[str, tuple[type[_Params], Callable[[Any, Any], Awaitable[Any]]]]
_VIEWS: _Views = {
    "list": (ListParams, list_view),
    "status": (StatusParams, status_view),
    "steps": (StepsParams, steps_view),
    "conversation_show": (ConversationShowParams, conversation_show_view),
    "conversation_list": (ConversationListParams, conversation_list_view),
    "actions": (ActionsParams, actions_view),
    "types": (TypesParams, types_view),
}


async def read_view(store: Store, view: str, params: dict[str, Any]) -> Any:
    """Answer one read view; LookupError (not found) and ValueError (bad parameters) propagate."""
    try:
        model, function = _VIEWS[view]
    except KeyError:
        raise ValueError(f"unknown view {view!r} (known: {', '.join(sorted(_VIEWS))})") from None
    return await function(store, model.model_validate(params))
