"""The console's read path: JSON views of sessions, conversations and the daemon.

Served by the gateway itself (``GET /api/...``, ``web.py``) from LanceDB, like its snapshots, so
the console needs nothing but the gateway's port. Why these shapes:

- **Fleet** (``/api/sessions``): 10,000+ sessions must page without turning every row into a
  Python object. The listing columns are read once (Arrow, no JSON columns but ``config``) and
  cached for ``LIST_TTL`` (every open console polls it); filter, counts per status, sort and the
  page slice are Arrow compute, and only the page's rows become dicts.
- **Lateness** as seen from storage: a running session's ``late_s`` is how far its last step is
  older than its tick interval (``config.interval`` or ``[runtime] heartbeat_interval``); it
  includes the writer's flush delay, so a few tens of ms are normal.
- **Daemon** (``/api/daemon``): the supervisor's ``status`` over the control socket (what
  ``agentctl daemon status`` shows) plus this gateway's own health report.

All reads are the async LanceDB API; Arrow compute on a page-sized table stays on the loop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agentd.control import DaemonUnreachable, request
from agentd.gateway.health import HealthReport
from agentd.ids import validate_id
from agentd.store.conversations import ConversationRecord, get_conversation, list_participants
from agentd.store.sessions import SESSION_STATUSES, SessionRecord, get_session
from agentd.store.sql import sql_str

__all__ = ["LIST_TTL", "MAX_PAGE", "ApiError", "ReadApi"]

LIST_TTL = 1.0
MAX_PAGE = 500
LIST_COLUMNS = [
    "session_id",
    "agent_id",
    "agent_type",
    "status",
    "desired_status",
    "iteration",
    "last_seq",
    "updated_at",
    "config",
    "conversation_id",
]
SORTABLE = ("session_id", "agent_id", "agent_type", "status", "iteration", "updated_at")
MAX_CONVERSATIONS = 1000


class ApiError(Exception):
    """A request the API refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class _Cached:
    at: float
    table: pa.Table


class ReadApi:
    """Read views for one gateway; ``health`` gives the gateway's own report for the daemon view."""

    def __init__(self, store: Any, *, heartbeat_interval: float, socket: Path | None, health: Any) -> None:
        self.store = store
        self.heartbeat_interval = heartbeat_interval
        self.socket = socket
        self.health = health
        self._cache: _Cached | None = None

    async def _listing(self) -> pa.Table:
        now = time.monotonic()
        if self._cache is None or now - self._cache.at > LIST_TTL:
            table = await self.store.sessions.query().select(LIST_COLUMNS).to_arrow()
            self._cache = _Cached(now, table)
        return self._cache.table

    async def sessions(self, params: dict[str, str]) -> dict[str, Any]:
        """One page of sessions with filters (agent substring, type, status), counts per status."""
        try:
            offset = max(0, int(params.get("offset", "0")))
            limit = min(MAX_PAGE, max(1, int(params.get("limit", "50"))))
        except ValueError as exc:
            raise ApiError(400, f"offset and limit are integers: {exc}") from exc
        sort = params.get("sort", "session_id")
        if sort not in SORTABLE:
            raise ApiError(400, f"sort must be one of {', '.join(SORTABLE)}")
        table = await self._listing()
        types = sorted(str(t) for t in pc.unique(table.column("agent_type")).to_pylist() if t)
        agent = params.get("agent", "").strip()
        if agent:
            table = table.filter(pc.match_substring(table.column("agent_id"), agent))
        kind = params.get("type", "").strip()
        if kind:
            table = table.filter(pc.equal(table.column("agent_type"), kind))
        counts = {status: 0 for status in SESSION_STATUSES}
        if table.num_rows:
            for item in pc.value_counts(table.column("status")).to_pylist():
                counts[str(item["values"])] = int(item["counts"])
        status = params.get("status", "").strip()
        if status:
            table = table.filter(pc.equal(table.column("status"), status))
        order = "descending" if params.get("desc") in ("1", "true") else "ascending"
        keys = [(sort, order)] + ([("session_id", "ascending")] if sort != "session_id" else [])
        page = table.sort_by(keys).slice(offset, limit) if table.num_rows else table
        return {
            "total": table.num_rows,
            "offset": offset,
            "limit": limit,
            "counts": counts,
            "types": types,
            "statuses": list(SESSION_STATUSES),
            "items": [self._row(row) for row in page.to_pylist()],
        }

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        updated: datetime | None = row.get("updated_at")
        age = None
        if updated is not None:
            if updated.tzinfo is None:
                updated = updated.replace(tzinfo=UTC)
            age = max(0.0, (datetime.now(UTC) - updated).total_seconds())
        interval = self.heartbeat_interval
        try:
            configured = json.loads(row.get("config") or "{}").get("interval")
            if isinstance(configured, int | float) and configured > 0:
                interval = float(configured)
        except (ValueError, AttributeError):
            pass
        late = max(0.0, age - interval) if age is not None and row.get("status") == "running" else None
        return {
            "session_id": row["session_id"],
            "agent_id": row["agent_id"],
            "agent_type": row["agent_type"],
            "status": row["status"],
            "desired_status": row.get("desired_status"),
            "iteration": row.get("iteration") or 0,
            "last_seq": row.get("last_seq") or 0,
            "updated_at": updated.isoformat() if updated else None,
            "age_s": None if age is None else round(age, 3),
            "late_s": None if late is None else round(late, 3),
            "interval_s": interval,
            "conversation_id": row.get("conversation_id"),
        }

    async def session(self, session_id: str) -> dict[str, Any]:
        """A session's row (context included) and its actions not yet applied."""
        _check(session_id, "session id")
        record: SessionRecord | None = await get_session(self.store.sessions, session_id)
        if record is None:
            raise ApiError(404, f"unknown session {session_id}")
        clause = f"session_id = {sql_str(session_id)} AND status IN ('pending', 'claimed')"
        rows = (
            await self.store.actions.query()
            .where(clause)
            .select(["action_id", "kind", "status", "payload", "created_at", "claimed_by"])
            .to_arrow()
        )
        pending = sorted(rows.to_pylist(), key=lambda r: r["created_at"])
        for item in pending:
            item["created_at"] = item["created_at"].isoformat()
            try:
                item["payload"] = json.loads(item["payload"] or "{}")
            except ValueError:
                pass
        return {"session": json.loads(record.model_dump_json()), "pending": pending}

    async def conversations(self) -> dict[str, Any]:
        rows = await self.store.conversations.query().limit(MAX_CONVERSATIONS).to_arrow()
        records = sorted(ConversationRecord.from_arrow(rows), key=lambda c: c.created_at, reverse=True)
        return {"items": [c.model_dump(mode="json") for c in records]}

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        _check(conversation_id, "conversation id")
        conversation = await get_conversation(self.store.conversations, conversation_id)
        if conversation is None:
            raise ApiError(404, f"unknown conversation {conversation_id}")
        participants = await list_participants(self.store.participants, conversation_id)
        return {
            "conversation": conversation.model_dump(mode="json"),
            "participants": [p.model_dump(mode="json") for p in participants],
        }

    async def daemon(self) -> dict[str, Any]:
        """The supervisor's status (or why it cannot be had) and this gateway's health."""
        report: HealthReport = self.health()
        supervisor: dict[str, Any] | None = None
        error: str | None = None
        if self.socket is None:
            error = "no control socket configured"
        else:
            try:
                reply = await request(self.socket, {"op": "status"}, timeout=3.0)
                if reply.get("ok"):
                    supervisor = reply.get("status")
                else:
                    error = str(reply.get("error"))
            except DaemonUnreachable as exc:
                error = str(exc)
        return {"supervisor": supervisor, "error": error, "gateway": json.loads(report.model_dump_json())}


def _check(value: str, what: str) -> None:
    try:
        validate_id(value, what)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
