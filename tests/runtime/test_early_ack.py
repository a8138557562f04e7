"""An interrupt is acknowledged once its step commits, before the ``sessions`` row follows.

The fault: the ``sessions`` commit is held (a slow storage write, injected by wrapping the
writer's ``upsert_sessions``) while the steps commit goes through. The waiting client must still
hear the acknowledgement with the step's seq, and what it reads next (``status``) must already
show the new context and no longer list the action as queued, although the row is behind.
Once the row commit is let through, the acknowledgement's own row follows, pushed only once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import agentd.store.writer as writer_module
from agentd.llm.offline import OfflineLLM
from agentd.queue import ActionQueue
from agentd.runtime.host import SessionHost
from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.sessions import get_session
from agentd.views import StatusParams, status_view
from tests.gateway.gwtools import until
from tests.runtime.harness import fast_settings

pytestmark = pytest.mark.timeout(60)


def test_an_interrupt_is_acknowledged_when_its_step_commits(db_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    held = asyncio.Event()
    release: asyncio.Event | None = None
    real_upsert = writer_module.upsert_sessions

    async def slow_upsert(table: Any, rows: Any) -> Any:
        if release is not None and not release.is_set():
            held.set()
            await release.wait()
        return await real_upsert(table, rows)

    monkeypatch.setattr(writer_module, "upsert_sessions", slow_upsert)

    async def scenario() -> None:
        nonlocal release
        settings = fast_settings(db_uri)
        store = await Store.open(db_uri, settings.storage.num_shards)
        pushed: list[ActionRecord] = []
        early: list[str] = []

        def on_acked(records: list[ActionRecord], step_only: bool) -> None:
            pushed.extend(records)
            early.extend(r.action_id for r in records if step_only)

        host = SessionHost(
            store, settings, list(range(store.num_shards)), OfflineLLM(seed=1), name="t", on_acked=on_acked
        )
        await host.start()
        task = asyncio.create_task(host.run())
        queue = ActionQueue(store.actions, store.num_shards)
        try:
            create = await queue.enqueue("create", "j1", {"agent_type": "joke", "config": {"subject": "owls"}})
            host.hint()
            assert (await queue.wait(create.action_id, timeout=15)) is not None
            await queue.enqueue("pause", "j1", {})  # no ticks: the row would otherwise move on
            host.hint()
            await until(lambda: any(r.kind == "pause" for r in pushed), 15, "push")

            release = asyncio.Event()
            guide = await queue.enqueue("interrupt", "j1", {"guidance": {"type": "set_subject", "subject": "cats"}})
            host.hint()
            await until(lambda: any(r.action_id == guide.action_id for r in pushed), 15, "push")
            # The snapshot goes with the writer's next regular flush, not with the step's.
            await until(held.is_set, 15, "the sessions commit")
            [ack] = [r for r in pushed if r.action_id == guide.action_id]
            assert ack.status == "done" and ack.result is not None
            seq = ack.result["seq"]
            row = await get_session(store.sessions, "j1")
            assert row is not None and row.last_seq < seq and row.context["subject"] == "owls", "row not held back"
            stored = await queue.get(guide.action_id)
            assert stored is not None and stored.status == "claimed", "pushed before its row, as designed"
            # What a client reads next already shows the guidance.
            status = await status_view(store, StatusParams(session_id="j1"))
            assert status["context"]["subject"] == "cats" and status["last_seq"] == seq
            assert guide.action_id not in {a["action_id"] for a in status["queued_actions"]}

            release.set()
            done = await queue.wait(guide.action_id, timeout=15)
            assert done is not None and done.status == "done" and done.result is not None
            assert done.result["seq"] == seq
            await until(lambda: [r.action_id for r in pushed].count(guide.action_id) == 2, 15, "push")
            assert early.count(guide.action_id) == 1, "pushed early once, then once its row committed"
            row = await get_session(store.sessions, "j1")
            assert row is not None and row.context["subject"] == "cats"
        finally:
            if release is not None:
                release.set()
            await host.stop(timeout=5)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
