"""SIGKILL a worker hosting 200 sessions mid-run, start it again, and check nothing broke."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from helpers import reaped, run, spawn_module, wait_for

from agentd.queue import ActionQueue
from agentd.store import Store
from agentd.store.conversations import (
    ConversationRecord,
    MessageRecord,
    insert_conversation,
    insert_messages,
    read_messages,
)
from agentd.store.sessions import list_sessions
from agentd.store.steps import StepRecord
from agentd.timeutil import utcnow

SHARDS = 8
ENV = {
    "AGENTD_STORAGE__NUM_SHARDS": str(SHARDS),
    "AGENTD_WRITER__FLUSH_INTERVAL": "0.1",
    "AGENTD_QUEUE__POLL_INTERVAL": "0.05",
    "AGENTD_QUEUE__LEASE": "2",
    "AGENTD_RUNTIME__HEARTBEAT_INTERVAL": "0.2",
}
JOKES = [f"joke-{i:03d}" for i in range(180)]
PERSONAS = [f"persona-{i:02d}" for i in range(20)]
CONVERSATIONS = [f"conv-{i}" for i in range(4)]


def _worker(db_uri: str, log: Path):
    return spawn_module(
        "agentd.worker", "--db", db_uri, "--index", "0", "--workers", "1", env=ENV, stderr=log.open("ab")
    )


async def _open(db_uri: str) -> tuple[Store, ActionQueue]:
    store = await Store.open(db_uri, SHARDS)
    return store, ActionQueue(store.actions, SHARDS)


async def _wait_all(queue: ActionQueue, ids: list[str], timeout: float) -> dict[str, str]:
    statuses = {}
    for action_id in ids:
        done = await queue.wait(action_id, timeout=timeout)
        assert done is not None, f"action {action_id} not acknowledged"
        statuses[action_id] = done.status
    return statuses


async def _post(store: Store, cid: str, text: str) -> None:
    await insert_messages(
        store.messages,
        [
            MessageRecord(
                message_id=f"u-{time.time_ns()}",
                conversation_id=cid,
                author_id="user",
                role="user",
                text=text,
                created_at=utcnow(),
            )
        ],
    )


def test_sigkill_mid_run_loses_nothing_acknowledged(db_uri: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"

    async def setup() -> None:
        store, queue = await _open(db_uri)
        for cid in CONVERSATIONS:
            await insert_conversation(store.conversations, ConversationRecord(conversation_id=cid, created_at=utcnow()))
        ids = [(await queue.enqueue("create", sid, {"agent_type": "joke", "config": {}})).action_id for sid in JOKES]
        for i, sid in enumerate(PERSONAS):
            config = {"conversation_id": CONVERSATIONS[i % 4], "name": f"P{i}", "cooldown": 0}
            ids.append((await queue.enqueue("create", sid, {"agent_type": "persona", "config": config})).action_id)
        assert set((await _wait_all(queue, ids, 60)).values()) == {"done"}

    async def acknowledged_guidance() -> None:
        store, queue = await _open(db_uri)
        ids = [
            (await queue.enqueue("interrupt", sid, {"guidance": f"about acked {sid}"})).action_id for sid in JOKES[:60]
        ]
        assert set((await _wait_all(queue, ids, 30)).values()) == {"done"}
        for cid in CONVERSATIONS:
            await _post(store, cid, "Who took the last biscuit?")

    async def fire_and_forget() -> list[str]:
        _, queue = await _open(db_uri)
        return [
            (await queue.enqueue("interrupt", sid, {"guidance": f"about late {sid}"})).action_id
            for sid in JOKES[60:120]
        ]

    with reaped() as procs:
        procs.append(_worker(db_uri, log))
        run(setup())
        run(acknowledged_guidance())
        late = run(fire_and_forget())
        time.sleep(0.4)  # replies and ticks in flight
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(timeout=10)
        procs.append(_worker(db_uri, log))

        async def after_restart() -> None:
            _, queue = await _open(db_uri)
            assert set((await _wait_all(queue, late, 30)).values()) == {"done"}, "unacknowledged actions are retried"
            await asyncio.sleep(1.5)

        run(after_restart())
        # The late actions may all have been acknowledged before the kill: make sure the new
        # worker finished booting (its signal handlers are set) before asking it to stop.
        wait_for(lambda: log.read_text().count(" sessions of ") >= 2, 60, "the restarted worker to boot")
        os.kill(procs[1].pid, signal.SIGTERM)
        assert procs[1].wait(timeout=30) == 0, log.read_text()[-3000:]

    async def verify() -> None:
        store, _ = await _open(db_uri)
        sessions = {s.session_id: s for s in await list_sessions(store.sessions)}
        assert set(sessions) == set(JOKES) | set(PERSONAS)
        steps = StepRecord.from_arrow(await store.steps.query().to_arrow())
        by_session: dict[str, list[int]] = {}
        for step in steps:
            by_session.setdefault(step.session_id, []).append(step.seq)
        for sid, seqs in by_session.items():
            seqs.sort()
            assert seqs == list(range(1, len(seqs) + 1)), f"{sid}: gaps or duplicates"
            assert sessions[sid].last_seq == seqs[-1], f"{sid}: session row lags its steps after a clean stop"
        for sid in JOKES[:60]:
            assert sessions[sid].context["subject"] == f"acked {sid}"
        for sid in JOKES[60:120]:
            assert sessions[sid].context["subject"] == f"late {sid}"
        assert all(s.status == "running" for s in sessions.values())
        replies_in_steps = {
            s.data["message_id"]
            for s in steps
            if s.session_id in PERSONAS and s.kind == "tick" and s.data and "message_id" in s.data
        }
        for cid in CONVERSATIONS:
            agent_messages = [m for m in await read_messages(store.messages, cid) if m.role == "agent"]
            assert agent_messages, f"nobody replied in {cid}"
            ids = [m.message_id for m in agent_messages]
            assert len(ids) == len(set(ids))
            assert set(ids) <= replies_in_steps, "every posted reply is recorded by exactly one step"

    run(verify())
