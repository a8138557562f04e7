"""Session lifecycle on a real store: ticks, pause/resume, guidance, destroy, errors, resume."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from helpers import run
from pydantic import BaseModel

from agentd.agents.base import Agent, StepOutcome, Tick
from agentd.agents.registry import register
from agentd.runtime.commands import Command, SessionGone
from agentd.store.steps import read_steps
from agentd.timeutil import utcnow

from .harness import assert_contiguous, fast_settings, hosted


class CountdownAgent(Agent):
    """Stops itself on its third tick."""

    type_name = "test-countdown"

    async def do_tick(self, tick: Tick) -> StepOutcome:
        return StepOutcome(text=f"tick {tick.iteration}", stop=tick.iteration >= 2)


class FlakyAgent(Agent):
    """Raises on every odd tick."""

    type_name = "test-flaky"

    async def do_tick(self, tick: Tick) -> StepOutcome:
        if tick.iteration % 2 == 1:
            raise RuntimeError("the flaky agent failed")
        return StepOutcome(text="fine")


class DoomedAgent(Agent):
    """Always fails; its policy stops it after two consecutive errors."""

    type_name = "test-doomed"
    max_consecutive_errors = 2

    async def do_tick(self, tick: Tick) -> StepOutcome:
        raise ValueError("always broken")


class SlowAgent(Agent):
    type_name = "test-slow"

    async def do_tick(self, tick: Tick) -> StepOutcome:
        await asyncio.sleep(10)
        return StepOutcome(text="never")

    def normalize_guidance(self, raw: dict[str, Any] | str) -> BaseModel:
        raise AssertionError("unused")


for _cls in (CountdownAgent, FlakyAgent, DoomedAgent, SlowAgent):
    register(_cls)


def test_joke_session_ticks_and_persists_every_step(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            done = await h.create("j1", subject="penguins")
            assert done.result == {"session_id": "j1", "agent_id": "j1", "status": "running", "seq": 1}
            ticks = await h.wait_steps("j1", 3)
            assert all("penguin" in (s.text or "").lower() for s in ticks)
            assert all(s.data and s.data["source"] == "offline" for s in ticks)
            assert ticks[0].state["context"]["subject"] == "penguins"
            assert_contiguous(await h.steps("j1"))
            session = await h.session("j1")
            assert session.status == "running" and session.agent_type == "joke"
            assert session.context["subject"] == "penguins" and session.context["paused"] is False

    run(scenario())


def test_pause_stops_ticks_but_guidance_still_applies(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("j1", subject="cats")
            await h.wait_steps("j1", 1)
            paused = await h.act("pause", "j1")
            assert paused.status == "done" and paused.result is not None
            pause_seq = paused.result.pop("seq")
            assert paused.result == {"session_id": "j1", "status": "paused"}
            session = await h.session("j1")  # durable before the acknowledgement
            # The receipt names the step that applied it, and that step records the action.
            [pause_step] = [s for s in await h.steps("j1") if s.seq == pause_seq]
            assert pause_step.text == "paused" and pause_step.action_id == paused.action_id
            assert session.status == "paused" and session.context["paused"] is True
            ticks_at_pause = len(await h.steps("j1", "tick"))
            guided = await h.act("interrupt", "j1", {"guidance": "about dogs"})
            assert guided.status == "done", guided.error
            assert (await h.session("j1")).context["subject"] == "dogs"
            await asyncio.sleep(0.8)  # four heartbeats
            assert len(await h.steps("j1", "tick")) == ticks_at_pause
            [guidance_step] = await h.steps("j1", "guidance")
            assert guidance_step.guidance == {
                "raw": "about dogs",
                "normalized": [{"type": "set_subject", "subject": "dogs"}],
            }
            assert guidance_step.state["context"]["paused"] is True
            resumed = await h.act("resume", "j1")
            assert resumed.result is not None and resumed.result.pop("seq") > pause_seq
            assert resumed.result == {"session_id": "j1", "status": "running"}
            ticks = await h.wait_steps("j1", ticks_at_pause + 2)
            assert "dog" in (ticks[-1].text or "").lower()
            assert_contiguous(await h.steps("j1"))

    run(scenario())


def test_guidance_forms_and_rejection(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("j1")
            assert (await h.session("j1")).context["subject"] == "programming"
            for guidance, subject in (
                ({"subject": "owls"}, "owls"),
                ("subject: llamas", "llamas"),
                ("tell jokes about the moon", "the moon"),
            ):
                done = await h.act("interrupt", "j1", {"guidance": guidance})
                assert done.status == "done", done.error
                assert (await h.session("j1")).context["subject"] == subject
            for bad, message in (
                ({"colour": "red"}, "invalid joke guidance"),
                ("make it better", "cannot understand guidance"),
                ({"subject": ""}, "invalid joke guidance"),
                (42, "guidance must be"),
            ):
                failed = await h.act("interrupt", "j1", {"guidance": bad})
                assert failed.status == "failed" and failed.error and message in failed.error
            before = len(await h.steps("j1", "tick"))
            await h.wait_steps("j1", before + 2)  # unaffected: still ticking
            assert (await h.session("j1")).context["subject"] == "the moon"

    run(scenario())


def test_interrupts_apply_in_arrival_order(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("j1")
            actions = [await h.queue.enqueue("interrupt", "j1", {"guidance": f"about topic{i}"}) for i in range(6)]
            h.host.hint()
            for action in actions:
                assert (await h.queue.wait(action.action_id, timeout=10)) is not None
            applied = [s.guidance["normalized"][0]["subject"] for s in await h.steps("j1", "guidance") if s.guidance]
            assert applied == [f"topic{i}" for i in range(6)]
            assert (await h.session("j1")).context["subject"] == "topic5"

    run(scenario())


def test_destroy_stops_and_persists_final_state(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("j1")
            await h.wait_steps("j1", 1)
            done = await h.act("destroy", "j1", {"reason": "test over"})
            assert done.result is not None
            stop_seq = done.result.pop("seq")
            assert done.result == {"session_id": "j1", "status": "stopped"}
            session = await h.session("j1")
            assert session.status == "stopped"
            last = (await h.steps("j1"))[-1]
            assert last.kind == "lifecycle" and last.text == "destroyed: test over" and last.seq == stop_seq
            assert last.action_id == done.action_id
            count = len(await h.steps("j1"))
            await asyncio.sleep(0.5)
            assert len(await h.steps("j1")) == count
            again = await h.act("destroy", "j1")
            assert again.status == "done" and again.result == {"session_id": "j1", "status": "stopped"}
            paused = await h.act("pause", "j1")
            assert paused.status == "failed" and paused.error == "session j1 is stopped"

    run(scenario())


def test_a_command_to_a_finished_session_fails_without_an_unretrieved_error(db_uri: str) -> None:
    """asyncio logged "Future exception was never retrieved" (SessionGone) at worker stops that met
    a session just stopped: the host's shutdown command to it failed, and nobody awaits those."""

    async def scenario() -> None:
        unretrieved: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context["message"]))
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("j1")
            runner = h.host.runners["j1"]
            await h.act("destroy", "j1")
            runner.submit(Command("shutdown"))  # what a host's stop sends; dropped unawaited
            with pytest.raises(SessionGone):
                await runner.submit(Command("pause"))
            gc.collect()
        assert unretrieved == []

    run(scenario())


def test_destroy_waits_for_the_tick_in_flight(db_uri: str) -> None:
    async def scenario() -> None:
        settings = fast_settings(db_uri, runtime={"heartbeat_interval": 0.05, "tick_timeout": 0.5})
        async with hosted(settings) as h:
            await h.create("slow", agent_type="test-slow")
            await asyncio.sleep(0.2)  # a tick is now in flight (it times out at 0.5 s)
            done = await h.act("destroy", "slow")
            assert done.status == "done"
            steps = await h.steps("slow")
            assert [s.kind for s in steps] == ["lifecycle", "tick", "lifecycle"]
            assert steps[1].status == "error" and "timeout" in (steps[1].error or "")
            assert_contiguous(steps)

    run(scenario())


def test_unknown_session_duplicate_create_and_bad_type(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            failed = await h.act("pause", "nobody")
            assert failed.status == "failed" and failed.error == "unknown session nobody"
            await h.create("j1")
            dup = await h.act("create", "j1", {"agent_type": "joke", "config": {}})
            assert dup.status == "failed" and dup.error == "session j1 already exists"
            bad = await h.act("create", "x1", {"agent_type": "nope", "config": {}})
            assert bad.status == "failed" and "unknown agent type 'nope'" in (bad.error or "")
            bad_cfg = await h.act("create", "x2", {"agent_type": "joke", "config": {"interval": -1}})
            assert bad_cfg.status == "failed" and "invalid joke config" in (bad_cfg.error or "")
            missing = await h.act(
                "create", "p1", {"agent_type": "persona", "config": {"conversation_id": "c-none", "name": "Ann"}}
            )
            assert missing.status == "failed" and missing.error == "conversation 'c-none' does not exist"
            assert (await h.steps("p1")) == []

    run(scenario())


def test_stop_from_inside_a_tick(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("c1", agent_type="test-countdown")
            for _ in range(100):
                if (await h.session("c1")).status == "stopped":
                    break
                await asyncio.sleep(0.05)
            steps = await h.steps("c1")
            assert [s.kind for s in steps] == ["lifecycle", "tick", "tick", "tick", "lifecycle"]
            assert steps[-1].text == "stopped by the agent"
            assert (await h.session("c1")).status == "stopped"

    run(scenario())


def test_error_steps_and_error_policy(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("f1", agent_type="test-flaky")
            await h.create("d1", agent_type="test-doomed")
            ticks = await h.wait_steps("f1", 4)
            assert [s.status for s in ticks[:4]] == ["ok", "error", "ok", "error"]
            assert ticks[1].error == "RuntimeError: the flaky agent failed"
            for _ in range(100):
                if (await h.session("d1")).status == "error":
                    break
                await asyncio.sleep(0.05)
            doomed = await h.steps("d1")
            assert [s.status for s in doomed] == ["info", "error", "error", "error"]
            assert doomed[-1].text == "stopped after 2 consecutive errors"
            assert (await h.session("f1")).status == "running"

    run(scenario())


def test_restarted_host_resumes_every_session_as_it_was(db_uri: str) -> None:
    async def scenario() -> None:
        settings = fast_settings(db_uri)
        async with hosted(settings) as h:
            await h.create("run1", subject="otters")
            await h.create("pause1", subject="bees")
            await h.create("stop1")
            await h.act("pause", "pause1")
            await h.act("interrupt", "pause1", {"guidance": "about wasps"})
            await h.act("destroy", "stop1")
            await h.wait_steps("run1", 2)
        store_steps: dict[str, int] = {}
        async with hosted(settings) as h:
            for sid in ("run1", "pause1", "stop1"):
                store_steps[sid] = len(await read_steps(h.store.steps, sid))
            assert set(h.host.runners) == {"run1", "pause1"}
            assert h.host.runners["pause1"].status == "paused"
            assert h.host.runners["pause1"].context["subject"] == "wasps"
            await h.wait_steps("run1", store_steps["run1"])  # keeps ticking
            await asyncio.sleep(0.5)
            for sid in ("run1", "pause1", "stop1"):
                assert_contiguous(await h.steps(sid))
            assert len(await h.steps("pause1")) == store_steps["pause1"]
            assert len(await h.steps("stop1")) == store_steps["stop1"]
            assert len(await h.steps("run1", "tick")) > 2

    run(scenario())


def test_resumed_sessions_tick_again_together_not_spread_over_their_heartbeat(db_uri: str) -> None:
    """A host resuming sessions spreads their first ticks over ``RESUME_TICK_COST`` per session
    (1 ms for these 10), not over their heartbeat (up to ``RESUME_SPREAD``, 5 s): with 1,000
    sessions that spread was a second of the 2 s recovery target (bench/recovery_bench.py)."""

    async def scenario() -> None:
        settings = fast_settings(db_uri, runtime={"heartbeat_interval": 30.0})
        ids = [f"r{i}" for i in range(10)]
        async with hosted(settings) as h:
            for sid in ids:
                await h.create(sid)
        stopped = utcnow()
        async with hosted(settings) as h:
            first: dict[str, float] = {}
            for sid in ids:
                ticks = [s.ts for s in await h.wait_steps(sid, 2) if s.ts > stopped]  # created, resumed
                assert ticks, f"{sid} did not tick after its resume"
                first[sid] = min(ticks).timestamp()
        spread = max(first.values()) - min(first.values())
        assert spread < 1.0, f"first ticks after the resume spread over {spread:.2f}s"

    run(scenario())
