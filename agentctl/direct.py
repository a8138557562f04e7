"""The no-daemon path: open LanceDB here, queue actions, poll for acknowledgements, read views.

Used only when no daemon answers on the control socket (``agentctl.submit`` decides, and
classifies what comes back, for both paths). The actions table is the source of truth either
way: an action queued here is claimed by a worker exactly as one the daemon queued, at the
worker's next queue poll once a daemon runs. Importing this module imports LanceDB (about a
second), so it is imported lazily.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from agentctl.errors import NotFound, UsageProblem
from agentctl.stopper import Stopper
from agentd.cancel import cancel_actions
from agentd.config import Settings
from agentd.protocol import AckInfo, ActionItem
from agentd.queue import ActionQueue
from agentd.store import Store, StoreError
from agentd.store.actions import ActionRecord
from agentd.views import read_view

__all__ = ["DirectQueue", "open_store", "read_direct"]

# Polling the action rows: start fast, back off so that many waiting processes do not flood
# LanceDB with reads.
POLL_FIRST = 0.02
POLL_GROWTH = 1.25
POLL_MAX = 0.25

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


async def read_direct(settings: Settings, view: str, params: dict[str, Any]) -> Any:
    """A read view answered from this process's own connection (same function as the daemon's)."""
    store = await open_store(settings)
    return await read_view(store, view, params)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


class DirectQueue:
    """The actions table of one database, for one invocation without a daemon."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue = ActionQueue(store.actions, store.num_shards)

    @classmethod
    async def open(cls, settings: Settings) -> DirectQueue:
        return cls(await open_store(settings))

    async def enqueue(
        self, items: list[dict[str, Any]]
    ) -> tuple[list[ActionRecord | None], dict[int, str], list[AckInfo]]:
        """Queue the valid items in one append; returns (record per index or None, invalid reasons, already finished).

        Items are validated with the same model the daemon uses, so one bad item is reported by
        its index and the others are still queued. An item with an idempotency key is merged on
        its derived id (a key seen before yields the first action, which may be finished).
        """
        records: list[ActionRecord | None] = []
        invalid: dict[int, str] = {}
        fresh: list[ActionRecord] = []
        finished: list[AckInfo] = []
        for index, raw in enumerate(items):
            try:
                item = ActionItem.model_validate(raw)
            except ValidationError as exc:
                invalid[index] = _first_error(exc)
                records.append(None)
                continue
            if item.idempotency_key is not None:
                record = await self.queue.enqueue(
                    item.kind, item.session_id, item.payload, idempotency_key=item.idempotency_key
                )
                if record.finished:
                    finished.append(record.ack_info())
            else:
                record = self.queue.new_action(item.kind, item.session_id, item.payload)
                fresh.append(record)
            records.append(record)
        await self.queue.append_many(fresh)
        return records, invalid, finished

    async def wait(
        self,
        action_ids: list[str],
        deadline: float,
        on_ack: Callable[[AckInfo], None],
        stopper: Stopper | None = None,
    ) -> set[str]:
        """Poll until all are finished, ``deadline`` (monotonic) passes or Ctrl-C; returns the unfinished ids."""
        remaining = set(action_ids)
        delay = POLL_FIRST
        while remaining:
            rows = await self.queue.get_many(sorted(remaining))
            for action_id, record in rows.items():
                if record.finished:
                    remaining.discard(action_id)
                    on_ack(record.ack_info())
            left = deadline - time.monotonic()
            if not remaining or left <= 0:
                break
            pause = min(delay, left)
            if stopper is not None:
                if await stopper.sleep(pause):
                    break
            else:
                await asyncio.sleep(pause)
            delay = min(delay * POLL_GROWTH, POLL_MAX)
        return remaining

    async def cancel(self, action_ids: list[str]) -> dict[str, Any]:
        return await cancel_actions(self.store, action_ids)
