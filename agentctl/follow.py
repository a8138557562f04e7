"""``tail -f`` for steps and messages: poll LanceDB, print what is new, stop on Ctrl-C.

Followers only read the tables, so they survive the daemon restarting (or not running at
all). Steps are exact by ``seq`` (strictly increasing per session, no gaps). Messages have no
sequence, so they are tailed by LanceDB's ``_row_created_at_version`` (the table has stable
row ids; LANCEDB.md "Tailing a table exactly once"), which also catches a message committed
late with an older ``created_at``.

Ctrl-C: the first SIGINT ends the loop after the read in flight (exit 130, no traceback); a
second one restores the default handler and re-raises the signal, so a stuck read still dies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from agentctl.stopper import Stopper
from agentd.store import Store
from agentd.store.conversations import MessageRecord
from agentd.store.sql import sql_str
from agentd.store.steps import StepRecord, read_steps

__all__ = ["POLL_INTERVAL", "Stopper", "follow_messages", "follow_steps"]

log = logging.getLogger(__name__)

T = TypeVar("T")

POLL_INTERVAL = 0.2
# A read failing this many times in a row is reported (at warning) but following goes on.
_QUIET_FAILURES = 3


async def _guarded(what: str, failures: list[int], read: Awaitable[T]) -> T | None:
    """Await one poll read; a failure (storage hiccup, maintenance) is logged and retried later."""
    try:
        result = await read
    except Exception as exc:
        failures[0] += 1
        level = logging.WARNING if failures[0] == _QUIET_FAILURES else logging.DEBUG
        log.log(level, "reading %s failed %d times in a row (still following): %s", what, failures[0], exc)
        return None
    failures[0] = 0
    return result


async def follow_steps(
    store: Store,
    session_id: str,
    since: int,
    emit: Callable[[list[StepRecord]], None],
    stopper: Stopper,
    *,
    interval: float = POLL_INTERVAL,
) -> None:
    """Print steps with ``seq > since`` as they are committed, until the stopper fires."""
    last = since
    failures = [0]
    while not await stopper.sleep(interval):
        steps = await _guarded("steps", failures, read_steps(store.steps, session_id, since=last))
        if steps:
            emit(steps)
            last = steps[-1].seq


async def follow_messages(
    store: Store,
    conversation_id: str,
    since: datetime | None,
    version: int,
    seen: set[str],
    emit: Callable[[list[MessageRecord]], None],
    stopper: Stopper,
    *,
    interval: float = POLL_INTERVAL,
) -> None:
    """Print messages committed after table ``version`` (already-printed ids in ``seen`` skipped)."""
    table = store.messages
    failures = [0]
    where = f"conversation_id = {sql_str(conversation_id)}"

    async def read_new(after: int) -> tuple[int, list[MessageRecord]] | None:
        upto = int(await table.version())
        if upto <= after:
            return upto, []
        clause = f"_row_created_at_version > {after} AND _row_created_at_version <= {upto} AND {where}"
        return upto, MessageRecord.from_arrow(await table.query().where(clause).to_arrow())

    while not await stopper.sleep(interval):
        got = await _guarded("messages", failures, read_new(version))
        if got is None:
            continue
        version, records = got
        fresh = [m for m in records if m.message_id not in seen and (since is None or m.created_at > since)]
        # The first read may repeat rows the initial listing already printed; after it, none can.
        seen.clear()
        if fresh:
            fresh.sort(key=lambda m: (m.created_at, m.message_id))
            emit(fresh)
