"""Each action applied exactly once and in order, under the faults of issue 11 (findings 1-3, 12).

Every test injects its fault (a tick slower than the lease, kill -9 between an effect's commit
and its acknowledgement, a stop while actions wait behind a slow tick, an unresumable session)
and then checks the stored steps and actions.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import reaped, run, spawn_module

from agentd.agents.base import StepOutcome, Tick
from agentd.agents.joke import JokeAgent
from agentd.agents.registry import register
from agentd.queue import ActionQueue
from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.conversations import ConversationRecord, MessageRecord, insert_conversation, insert_messages
from agentd.store.sessions import get_session, upsert_sessions
from agentd.store.steps import StepRecord, read_steps
from agentd.timeutil import utcnow
from tests.runtime.harness import assert_contiguous, fast_settings, hosted


class SluggishJoke(JokeAgent):
    """A joke agent whose ticks take 1.2 s: longer than the short leases below."""

    type_name = "sluggish-joke"

    async def do_tick(self, tick: Tick) -> StepOutcome:
        await asyncio.sleep(1.2)
        return await super().do_tick(tick)


class FlakyCreate(JokeAgent):
    """Its create fails like a storage error while ``FAIL`` is set."""

    type_name = "flaky-create"
    FAIL = True

    async def validate_create(self) -> None:
        if FlakyCreate.FAIL:
            raise OSError("storage unavailable")


class SurrogateJoke(JokeAgent):
    """A plug-in whose output the storage cannot hold: a lone surrogate in its text and context."""

    type_name = "surrogate-joke"

    async def do_tick(self, tick: Tick) -> StepOutcome:
        return StepOutcome(text="bad \udc80 joke", context_delta={"mood": "\udc80"})


register(SluggishJoke)
register(FlakyCreate)
register(SurrogateJoke)


def _guidance_steps(steps: list[StepRecord], action_id: str) -> list[StepRecord]:
    return [s for s in steps if s.action_id == action_id]


def test_lease_shorter_than_a_slow_tick_applies_the_action_once(db_uri: str) -> None:
    """Finding 1: the lease is renewed while an action waits; its claimer never re-claims it."""

    async def scenario() -> None:
        settings = fast_settings(db_uri, queue={"lease": 0.4, "poll_interval": 0.05}, runtime={"tick_timeout": 5})
        async with hosted(settings) as h:
            await h.create("s1", agent_type="sluggish-joke")
            await asyncio.sleep(0.1)  # the first tick (1.2 s) is in flight
            done = await h.act("interrupt", "s1", {"guidance": "about cats"})
            assert done.status == "done", done.error
            await asyncio.sleep(1.5)  # had the claim expired, a re-claim would apply it again now
            steps = await h.steps("s1")
            assert len(_guidance_steps(steps, done.action_id)) == 1
            assert len([s for s in steps if s.kind == "guidance"]) == 1
            assert done.attempts == 1, "claimed once"
            assert done.result is not None and done.result["seq"] == _guidance_steps(steps, done.action_id)[0].seq
            assert_contiguous(steps)

    run(scenario())


WORKER_ENV = {
    "AGENTD_STORAGE__NUM_SHARDS": "4",
    "AGENTD_WRITER__FLUSH_INTERVAL": "0.05",
    "AGENTD_QUEUE__POLL_INTERVAL": "0.05",
    # A replay that waited for the lease would time the test out: the waits below are half of
    # it, long enough for a replacement booting on a loaded machine (14 s seen beside a suite).
    "AGENTD_QUEUE__LEASE": "120",
    "AGENTD_RUNTIME__HEARTBEAT_INTERVAL": "0.2",
}


def _worker(db_uri: str, log: Path, **env: str) -> Any:
    return spawn_module(
        "agentd.worker",
        "--db",
        db_uri,
        "--index",
        "0",
        "--workers",
        "1",
        env={**WORKER_ENV, **env},
        stderr=log.open("ab"),
    )


async def _wait(queue: ActionQueue, action_id: str, timeout: float) -> ActionRecord:
    done = await queue.wait(action_id, timeout=timeout)
    assert done is not None, f"action {action_id} not acknowledged within {timeout}s"
    return done


def test_kill_between_effect_and_ack_neither_repeats_nor_reorders(db_uri: str, tmp_path: Path) -> None:
    """Finding 2: the replacement recognises the applied action at once; a later action wins."""
    log = tmp_path / "worker.log"

    async def create() -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        action = await queue.enqueue("create", "j1", {"agent_type": "joke", "config": {"subject": "owls"}})
        assert (await _wait(queue, action.action_id, 30)).status == "done"

    async def first_guidance() -> str:
        queue = ActionQueue((await Store.open(db_uri, 4)).actions, 4)
        return (await queue.enqueue("interrupt", "j1", {"guidance": "about cats"})).action_id

    async def after_restart(cats: str) -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        birds = (await queue.enqueue("interrupt", "j1", {"guidance": "about birds"})).action_id
        started = time.monotonic()
        cats_done = await _wait(queue, cats, 60)
        birds_done = await _wait(queue, birds, 60)
        assert time.monotonic() - started < 60, "the replacement waited for the lease instead of taking the claim over"
        assert cats_done.status == "done" and birds_done.status == "done"
        assert cats_done.result is not None and cats_done.result.get("replayed") is True
        steps = await read_steps(store.steps, "j1")
        assert [s.guidance["normalized"][0]["subject"] for s in steps if s.kind == "guidance" and s.guidance] == [
            "cats",
            "birds",
        ]
        assert len(_guidance_steps(steps, cats)) == 1 and len(_guidance_steps(steps, birds)) == 1
        await asyncio.sleep(0.5)
        session = await get_session(store.sessions, "j1")
        assert session is not None and session.context["subject"] == "birds"
        assert_contiguous(await read_steps(store.steps, "j1"))

    with reaped() as procs:
        procs.append(_worker(db_uri, log))
        run(create())
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(timeout=30) == 0
        # This worker kills itself (SIGKILL) once the interrupt is durable, before acknowledging it.
        procs.append(_worker(db_uri, log, AGENTD_FAULTS="after-effect:interrupt"))
        cats = run(first_guidance())
        assert procs[1].wait(timeout=30) == -signal.SIGKILL, log.read_text()[-2000:]
        procs.append(_worker(db_uri, log))
        run(after_restart(cats))


def test_stop_hands_waiting_actions_back_instead_of_failing_them(db_uri: str) -> None:
    """Finding 3: actions queued behind a slow tick at a stop go back to the queue, then apply once."""

    async def scenario() -> None:
        settings = fast_settings(db_uri, runtime={"tick_timeout": 5})
        async with hosted(settings) as h:
            await h.create("s1", agent_type="sluggish-joke")
            await asyncio.sleep(0.3)
            action = await h.queue.enqueue("interrupt", "s1", {"guidance": "about moths"})
            h.host.hint()
            await asyncio.sleep(0.3)  # claimed, waiting behind the 1.2 s tick
            await h.host.stop(timeout=0.1)  # the tick outlasts the stop: the session is cancelled
        queue = h.queue
        stored = await queue.get(action.action_id)
        assert stored is not None and stored.status == "pending", (stored.status if stored else None, stored)
        async with hosted(settings) as again:
            done = await again.queue.wait(action.action_id, timeout=15)
            assert done is not None and done.status == "done", done
            steps = await again.steps("s1")
            assert len(_guidance_steps(steps, action.action_id)) == 1
            assert (await again.session("s1")).context["subject"] == "moths"
            assert_contiguous(steps)

    run(scenario())


def test_unresumable_sessions_are_quarantined_and_destroy_always_works(db_uri: str) -> None:
    """Finding 12: an uninstalled type or an invalid stored config does not block the others; destroy works."""

    async def scenario() -> None:
        settings = fast_settings(db_uri)
        async with hosted(settings) as h:
            await h.create("ok1")
            await h.create("gone", subject="x")
            await h.create("badcfg", subject="y")
        store = await Store.open(db_uri, 4)
        now = utcnow()
        for sid, change in (("gone", {"agent_type": "uninstalled-type"}), ("badcfg", {"config": {"interval": "x"}})):
            record = await get_session(store.sessions, sid)
            assert record is not None
            await upsert_sessions(store.sessions, [record.model_copy(update={**change, "updated_at": now})])
        async with hosted(settings) as h:
            await h.wait_steps("ok1", 2)
            for sid in ("gone", "badcfg"):
                session = await h.session(sid)
                assert session.status == "error", session
                assert (session.last_result or "").startswith("quarantined: ")
                failed = await h.act("interrupt", sid, {"guidance": "about z"})
                assert failed.status == "failed" and "quarantined" in (failed.error or "")
                done = await h.act("destroy", sid)
                assert done.status == "done", done.error
                assert (await h.session(sid)).status == "stopped"
                steps = await h.steps(sid)
                assert_contiguous(steps)
                assert steps[-1].action_id == done.action_id and steps[-1].text == "destroyed"

    run(scenario())


def test_storage_error_during_create_stores_nothing_and_the_id_stays_usable(db_uri: str) -> None:
    """Finding 12: a failed create leaves no session behind; the same create succeeds later."""

    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            payload = {"agent_type": "flaky-create", "agent_id": "f1", "config": {}}
            failed = await h.act("create", "f1", payload)
            assert failed.status == "failed" and "storage unavailable" in (failed.error or "")
            assert await get_session(h.store.sessions, "f1") is None
            assert await read_steps(h.store.steps, "f1") == []
            FlakyCreate.FAIL = False
            try:
                done = await h.act("create", "f1", payload)
            finally:
                FlakyCreate.FAIL = True
            assert done.status == "done", done.error
            assert (await h.session("f1")).status == "running"

    run(scenario())


def test_an_unreadable_action_row_is_failed_alone(db_uri: str) -> None:
    """Finding 10: one poisoned action row does not wedge the claim batch it is in."""

    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("j1")
            good_before = await h.queue.enqueue("interrupt", "j1", {"guidance": "about figs"})
            poison = ActionRecord(
                action_id="a-poison", session_id="j1", shard=good_before.shard, kind="interrupt", created_at=utcnow()
            )
            data = ActionRecord.to_arrow([poison])
            data = data.set_column(data.schema.get_field_index("payload"), "payload", [["{not json"]])
            await h.store.actions.add(data)
            good_after = await h.queue.enqueue("interrupt", "j1", {"guidance": "about kiwis"})
            h.host.hint()
            for action in (good_before, good_after):
                done = await h.queue.wait(action.action_id, timeout=15)
                assert done is not None and done.status == "done", done
            bad = await h.store.actions.query().where("action_id = 'a-poison'").to_arrow()
            row = bad.to_pylist()[0]
            assert row["status"] == "failed" and "unreadable action row" in row["error"]
            assert (await h.session("j1")).context["subject"] == "kiwis"

    run(scenario())


def test_a_row_the_storage_cannot_hold_does_not_stall_the_writer(db_uri: str) -> None:
    """Finding 10: a lone surrogate in a step (and in an ack result) is repaired; everything else commits."""

    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("j1", agent_type="surrogate-joke")
            await h.create("j2")
            await h.wait_steps("j1", 3)
            clean = await h.act("interrupt", "j2", {"guidance": "about yaks"})
            assert clean.status == "done"
            before = len(await h.steps("j2", "tick"))
            await h.wait_steps("j2", before + 2)
            assert h.host.writer.buffered < 10, "the writer keeps committing"
            bad = await h.steps("j1", "tick")
            assert bad[0].text == "bad ? joke" and bad[0].state["context"]["mood"] == "?"
            assert_contiguous(await h.steps("j1"))
            guided = await h.act("interrupt", "j1", {"guidance": "about owls"})
            assert guided.status == "done", "the acknowledgement (its context holds the repaired value) is stored"

    run(scenario())


def test_a_create_whose_row_was_never_written_is_adopted_not_applied_again(db_uri: str) -> None:
    """Chaos finding: steps committed, the sessions row not (killed between a flush's two commits)."""

    async def scenario() -> None:
        settings = fast_settings(db_uri)
        async with hosted(settings) as h:
            created = await h.create("j1")
            guided = await h.act("interrupt", "j1", {"guidance": "about newts"})
            assert guided.status == "done"
            await h.wait_steps("j1", 2)
        store = await Store.open(db_uri, 4)
        await store.sessions.delete("session_id = 'j1'")  # the row of that flush never landed
        # The create was never acknowledged either: it is pending again for the next owner.
        await store.actions.update(
            updates_sql={"status": "'pending'", "version": "version + 1"}, where=f"action_id = '{created.action_id}'"
        )
        before = await read_steps(store.steps, "j1")
        async with hosted(settings) as h:
            done = await h.queue.wait(created.action_id, timeout=15)
            assert done is not None and done.status == "done", done
            assert done.result is not None and done.result["replayed"] is True
            session = await h.session("j1")
            assert session.context["subject"] == "newts", "acknowledged guidance survives"
            await h.wait_steps("j1", len([s for s in before if s.kind == "tick"]) + 2)
            steps = await h.steps("j1")
            assert [s.text for s in steps].count("created") == 1, "never created twice"
            assert_contiguous(steps)

    run(scenario())


@pytest.mark.timeout(60)
def test_a_paused_persona_woken_by_messages_does_not_starve_the_loop(db_uri: str) -> None:
    """Chaos finding: a wake while paused made the session loop spin without awaiting."""

    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await insert_conversation(
                h.store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow())
            )
            await h.create("p1", agent_type="persona", conversation_id="c1", name="Ann", cooldown=0)
            await h.create("j1")
            assert (await h.act("pause", "p1")).status == "done"
            await insert_messages(
                h.store.messages,
                [
                    MessageRecord(
                        message_id="u1",
                        conversation_id="c1",
                        author_id="user",
                        role="user",
                        text="hi",
                        created_at=utcnow(),
                    )
                ],
            )
            await asyncio.sleep(0.5)  # the watcher wakes the paused persona
            ticks = len(await h.steps("j1", "tick"))
            await h.wait_steps("j1", ticks + 3, timeout=10)  # the loop still turns
            assert (await h.act("resume", "p1")).status == "done"
            replies = [s for s in await h.steps("p1", "tick") if s.data and s.data.get("message_id")]
            deadline = asyncio.get_running_loop().time() + 10
            while not replies and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
                replies = [s for s in await h.steps("p1", "tick") if s.data and s.data.get("message_id")]
            assert replies, "answered once resumed"

    run(scenario())


def test_an_unreadable_latest_step_quarantines_its_session_not_the_boot(db_uri: str) -> None:
    """Finding 10: one invalid stored step used to crash-loop worker boot and halt the daemon."""

    async def scenario() -> None:
        settings = fast_settings(db_uri)
        async with hosted(settings) as h:
            await h.create("ok1")
            await h.create("hurt")
            await h.wait_steps("hurt", 2)
        store = await Store.open(db_uri, 4)
        [last] = (await read_steps(store.steps, "hurt"))[-1:]
        bad = StepRecord.to_arrow([last.model_copy(update={"seq": last.seq + 1, "ts": utcnow()})])
        bad = bad.set_column(bad.schema.get_field_index("state"), "state", [["{not json"]])
        await store.steps.add(bad)
        async with hosted(settings) as h:
            await h.wait_steps("ok1", len(await h.steps("ok1", "tick")) + 2)
            session = await h.session("hurt")
            assert session.status == "error" and "unreadable" in (session.last_result or ""), session
            seqs = (await store.steps.query().where("session_id = 'hurt'").select(["seq"]).to_arrow()).column("seq")
            assert sorted(seqs.to_pylist()) == list(range(1, last.seq + 3)), "the quarantine step follows the bad one"
            assert (await h.act("destroy", "hurt")).status == "done"

    run(scenario())


def test_a_row_that_lags_a_final_step_is_repaired_at_resume(db_uri: str) -> None:
    """A session destroyed just before a crash: its row still says running, its last step says stopped."""

    async def scenario() -> None:
        settings = fast_settings(db_uri)
        async with hosted(settings) as h:
            await h.create("j1")
            await h.wait_steps("j1", 1)
            running = await h.session("j1")
            assert (await h.act("destroy", "j1")).status == "done"
        store = await Store.open(db_uri, 4)
        await upsert_sessions(store.sessions, [running])  # the sessions commit of that flush never landed
        async with hosted(settings) as h:
            refused = await h.act("interrupt", "j1", {"guidance": "about rain"})
            assert refused.status == "failed" and refused.error == "session j1 is stopped", refused.error
            assert (await h.session("j1")).status == "stopped"

    run(scenario())


def test_a_noop_pause_replayed_after_a_newer_resume_does_not_pause_again(db_uri: str, tmp_path: Path) -> None:
    """Long chaos finding: a pause of a paused session left no step, so after a crash its replay
    came after the newer resume that the same worker had applied, and paused the session."""
    log = tmp_path / "worker.log"

    async def setup() -> tuple[str, str]:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        create = await queue.enqueue("create", "j1", {"agent_type": "joke", "config": {}})
        assert (await _wait(queue, create.action_id, 30)).status == "done"
        first = await queue.enqueue("pause", "j1")
        assert (await _wait(queue, first.action_id, 30)).status == "done"
        return "", ""

    async def enqueue_pair() -> tuple[str, str]:
        queue = ActionQueue((await Store.open(db_uri, 4)).actions, 4)
        again = await queue.enqueue("pause", "j1")  # a no-op: j1 is paused
        resume = await queue.enqueue("resume", "j1")
        return again.action_id, resume.action_id

    async def verify(again: str, resume: str) -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        assert (await _wait(queue, again, 60)).status == "done"
        assert (await _wait(queue, resume, 60)).status == "done"
        await asyncio.sleep(0.5)
        session = await get_session(store.sessions, "j1")
        assert session is not None and session.status == "running", "the older pause must not win"
        steps = await read_steps(store.steps, "j1")
        [noop] = _guidance_steps(steps, again)
        [resumed] = _guidance_steps(steps, resume)
        assert noop.seq < resumed.seq and noop.text == "pause: already paused"
        assert_contiguous(steps)

    with reaped() as procs:
        procs.append(_worker(db_uri, log))
        run(setup())
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(timeout=30) == 0
        again, resume = run(enqueue_pair())  # claimed together by the next worker
        procs.append(_worker(db_uri, log, AGENTD_FAULTS="after-effect:resume"))
        assert procs[1].wait(timeout=30) == -signal.SIGKILL, log.read_text()[-2000:]
        procs.append(_worker(db_uri, log))
        run(verify(again, resume))
