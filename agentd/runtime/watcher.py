"""Wakes persona sessions when a message arrives in a conversation they are bound to.

One watcher per host polls the ``messages`` table: a cheap version check each interval, and
only when the version moved, a read of the rows created since (``_row_created_at_version``,
exact because the table has stable row ids). Sessions then read the messages themselves; the
watcher only says "look now", so a missed wake costs one heartbeat, never a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from agentd.store import Store
from agentd.store.sql import sql_in

__all__ = ["ConversationWatcher"]

log = logging.getLogger(__name__)


class ConversationWatcher:
    def __init__(self, store: Store, wake: Callable[[set[str]], None], *, interval: float = 0.1) -> None:
        self.store = store
        self.wake = wake
        self.interval = interval
        self._watchers: dict[str, set[str]] = {}  # conversation_id -> session ids
        self._version = 0
        self._task: asyncio.Task[None] | None = None

    def watch(self, conversation_id: str, session_id: str) -> None:
        self._watchers.setdefault(conversation_id, set()).add(session_id)

    def unwatch(self, session_id: str) -> None:
        for sessions in self._watchers.values():
            sessions.discard(session_id)

    async def start(self) -> None:
        self._version = await self.store.messages.version()
        self._task = asyncio.create_task(self._run(), name="conversation-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except Exception as exc:
                log.debug("conversation watcher poll failed: %s", exc)

    async def poll(self) -> None:
        watched = [cid for cid, sessions in self._watchers.items() if sessions]
        table = self.store.messages
        version = await table.version()
        if version == self._version:
            return
        previous, self._version = self._version, version
        if not watched:
            return
        clause = (
            f"_row_created_at_version > {previous} AND _row_created_at_version <= {version} "
            f"AND {sql_in('conversation_id', watched)}"
        )
        rows = await table.query().where(clause).select(["conversation_id", "meta"]).to_arrow()
        if rows.num_rows == 0:
            return
        to_wake: set[str] = set()
        for cid, meta in zip(rows.column("conversation_id").to_pylist(), rows.column("meta").to_pylist(), strict=True):
            author = _author_session(meta)
            to_wake |= {sid for sid in self._watchers.get(cid, set()) if sid != author}
        self.wake(to_wake)


def _author_session(meta: str | None) -> str | None:
    """The session that wrote a message (agents' messages carry it in meta); it needs no wake."""
    if not meta:
        return None
    try:
        value = json.loads(meta).get("session_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
