"""Finding 4: a persona's reply and the step that records it never diverge.

The reply id is bound to the reply index (``replies + 1``), not to the seq of the tick that
posts it, and every tick reconciles first. These tests post a reply and lose the step that
should record it, once by killing the worker process with SIGKILL right after the post commits
(a real process, fault point ``after-reply-post``), once by a tick timeout that fires after the
post committed, and check the stored data: one reply per reply step, each reply message
recorded by exactly one step.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from helpers import reaped, run, spawn_module

from agentd import faults
from agentd.agents.persona import reply_message_id
from agentd.queue import ActionQueue
from agentd.store import Store
from agentd.store.conversations import (
    ConversationRecord,
    MessageRecord,
    insert_conversation,
    insert_messages,
    read_messages,
)
from agentd.store.sessions import get_session
from agentd.store.steps import StepRecord, read_steps
from agentd.timeutil import utcnow

from .harness import assert_contiguous, fast_settings, hosted

SHARDS = 4
ENV = {
    "AGENTD_STORAGE__NUM_SHARDS": str(SHARDS),
    "AGENTD_WRITER__FLUSH_INTERVAL": "0.05",
    "AGENTD_QUEUE__POLL_INTERVAL": "0.05",
    "AGENTD_QUEUE__LEASE": "2",
    "AGENTD_RUNTIME__HEARTBEAT_INTERVAL": "0.2",
}
SID = "ann"


def _worker(db_uri: str, log: Path, faults: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(ENV)
    if faults:
        env["AGENTD_FAULTS"] = faults
    return spawn_module(
        "agentd.worker", "--db", db_uri, "--index", "0", "--workers", "1", env=env, stderr=log.open("ab")
    )


async def _open(db_uri: str) -> tuple[Store, ActionQueue]:
    store = await Store.open(db_uri, SHARDS)
    return store, ActionQueue(store.actions, SHARDS)


async def _act(queue: ActionQueue, kind: str, payload: dict[str, object], timeout: float = 60) -> None:
    action = await queue.enqueue(kind, SID, payload)
    done = await queue.wait(action.action_id, timeout=timeout)
    assert done is not None and done.status == "done", (kind, done)


async def _agent_messages(store: Store) -> list[MessageRecord]:
    return [m for m in await read_messages(store.messages, "c1") if m.role == "agent"]


def _reply_steps(steps: list[StepRecord]) -> list[StepRecord]:
    return [s for s in steps if s.kind == "tick" and s.data and "message_id" in s.data]


def _assert_one_step_per_reply(steps: list[StepRecord], messages: list[MessageRecord]) -> None:
    recorded = [s.data["message_id"] for s in _reply_steps(steps) if s.data]
    assert sorted(recorded) == sorted(m.message_id for m in messages), (recorded, [m.text for m in messages])
    assert len(set(recorded)) == len(recorded), "a reply recorded by two steps"


def test_killed_after_posting_a_speak_now_reply_records_it_once(db_uri: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"

    async def until_speak_now_is_durable() -> None:
        store, queue = await _open(db_uri)
        await insert_conversation(store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow()))
        config = {"conversation_id": "c1", "name": "Ann", "cooldown": 0}
        await _act(queue, "create", {"agent_type": "persona", "config": config})
        # Paused, speak_now is applied and acknowledged (so durable) without a tick; resuming
        # then runs the forced tick, which posts reply 1 and dies before its step is durable.
        await _act(queue, "pause", {})
        await _act(queue, "interrupt", {"guidance": "speak now"})
        session = await get_session(store.sessions, SID)
        assert session is not None and session.context["speak_now"] is True
        await queue.enqueue("resume", SID, {})

    async def after_the_crash() -> None:
        store, _ = await _open(db_uri)
        posted = await _agent_messages(store)
        assert [m.message_id for m in posted] == [reply_message_id(SID, 1)], "the reply was posted"
        assert not _reply_steps(await read_steps(store.steps, SID)), "and no step records it"

    async def after_restart() -> None:
        store, queue = await _open(db_uri)
        # The case of the finding: a guidance step takes the seq the dead tick had.
        await _act(queue, "interrupt", {"guidance": "be noir"})
        deadline = time.monotonic() + 60
        while not _reply_steps(await read_steps(store.steps, SID)):
            assert time.monotonic() < deadline, "the posted reply was never recorded"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # several more heartbeats: nothing more is posted

    with reaped() as procs:
        procs.append(_worker(db_uri, log, faults="after-reply-post"))
        run(until_speak_now_is_durable())
        assert procs[0].wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]
        run(after_the_crash())
        procs.append(_worker(db_uri, log))
        run(after_restart())
        procs[1].terminate()
        assert procs[1].wait(timeout=60) == 0, log.read_text()[-3000:]

    async def verify() -> None:
        store, _ = await _open(db_uri)
        steps = await read_steps(store.steps, SID)
        assert_contiguous(steps)
        messages = await _agent_messages(store)
        assert len(messages) == 1, [m.text for m in messages]
        _assert_one_step_per_reply(steps, messages)
        (step,) = _reply_steps(steps)
        assert step.data == {**(step.data or {}), "replayed": True, "reply": 1}
        session = await get_session(store.sessions, SID)
        assert session is not None
        assert session.context["replies"] == 1 and session.context["speak_now"] is False
        assert session.context["tone"] == "noir"

    run(verify())


def test_tick_timeout_after_the_post_committed_records_the_reply_once(db_uri: str) -> None:
    # The tick posts, then stalls until its timeout: the runtime records an error step and the
    # context stays as it was, so only the reconciliation of a later tick can record the reply.
    previous = faults.arm("after-reply-post=stall")

    async def scenario() -> None:
        async with hosted(fast_settings(db_uri, runtime={"tick_timeout": 1.0})) as h:
            await insert_conversation(
                h.store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow())
            )
            await h.create(SID, agent_type="persona", conversation_id="c1", name="Ann", cooldown=0)
            await insert_messages(
                h.store.messages,
                [
                    MessageRecord(
                        message_id="u-1",
                        conversation_id="c1",
                        author_id="user",
                        role="user",
                        text="Anyone seen my umbrella?",
                        created_at=utcnow(),
                    )
                ],
            )
            deadline = asyncio.get_running_loop().time() + 30
            while not _reply_steps(await h.steps(SID)):
                assert asyncio.get_running_loop().time() < deadline, "the reply was never recorded"
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # more heartbeats: no second reply, no second record
            steps = await h.steps(SID)
            assert_contiguous(steps)
            assert any(s.error and s.error.startswith("timeout") for s in steps), "the tick did time out"
            messages = await _agent_messages(h.store)
            assert len(messages) == 1, [m.text for m in messages]
            assert messages[0].reply_to == "u-1"
            _assert_one_step_per_reply(steps, messages)
            assert (await h.session(SID)).context["replies"] == 1

    try:
        run(scenario())
    finally:
        faults.arm(previous)


def test_a_reply_posted_by_a_killed_tick_is_recorded_before_a_pause(db_uri: str, tmp_path: Path) -> None:
    """Chaos finding: the reply of a killed tick stayed unrecorded when a pause came first after
    the restart (a paused session runs no tick, and the tick is where replies were reconciled)."""
    log = tmp_path / "worker.log"

    async def post_and_die() -> None:
        store, queue = await _open(db_uri)
        await insert_conversation(store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow()))
        config = {"conversation_id": "c1", "name": "Ann", "cooldown": 0}
        await _act(queue, "create", {"agent_type": "persona", "config": config})
        await insert_messages(
            store.messages,
            [
                MessageRecord(
                    message_id="u1", conversation_id="c1", author_id="u", role="user", text="Hi?", created_at=utcnow()
                )
            ],
        )

    async def queue_a_pause() -> str:
        store, queue = await _open(db_uri)
        posted = await _agent_messages(store)
        assert [m.message_id for m in posted] == [reply_message_id(SID, 1)]
        assert not _reply_steps(await read_steps(store.steps, SID))
        return (await queue.enqueue("pause", SID, {})).action_id  # waiting when the worker restarts

    async def verify(pause: str) -> None:
        store, queue = await _open(db_uri)
        done = await queue.wait(pause, timeout=60)
        assert done is not None and done.status == "done"
        posted = await _agent_messages(store)
        steps = await read_steps(store.steps, SID)
        _assert_one_step_per_reply(steps, posted)
        (reply,) = _reply_steps(steps)
        assert reply.seq < steps[-1].seq and steps[-1].text == "paused", "recorded before the pause"
        assert_contiguous(steps)

    with reaped() as procs:
        procs.append(_worker(db_uri, log, faults="after-reply-post"))
        run(post_and_die())
        assert procs[0].wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]
        pause = run(queue_a_pause())
        procs.append(_worker(db_uri, log))
        run(verify(pause))
