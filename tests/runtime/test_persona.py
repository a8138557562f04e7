"""PersonaAgent in a real conversation: activation, cooldown, speak_now, no endless ping-pong."""

from __future__ import annotations

import asyncio
import itertools
import time

from helpers import run

from agentd.store.conversations import (
    ConversationRecord,
    MessageRecord,
    insert_conversation,
    list_participants,
    read_messages,
)
from agentd.timeutil import utcnow

from .harness import Harness, assert_contiguous, fast_settings, hosted


async def _conversation(h: Harness, cid: str = "c1") -> None:
    await insert_conversation(h.store.conversations, ConversationRecord(conversation_id=cid, created_at=utcnow()))


async def _post(h: Harness, text: str, cid: str = "c1", n: int = 0) -> None:
    from agentd.store.conversations import insert_messages

    await insert_messages(
        h.store.messages,
        [
            MessageRecord(
                message_id=f"u-{time.time_ns()}-{n}",
                conversation_id=cid,
                author_id="user",
                role="user",
                text=text,
                created_at=utcnow(),
            )
        ],
    )


async def _agent_messages(h: Harness, cid: str = "c1") -> list[MessageRecord]:
    return [m for m in await read_messages(h.store.messages, cid) if m.role == "agent"]


def test_two_personas_and_a_user(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await _conversation(h)
            await h.create("ann", agent_type="persona", conversation_id="c1", name="Ann", tone="noir", cooldown=0)
            await h.create("bob", agent_type="persona", conversation_id="c1", name="Bob", tone="cheerful", cooldown=0)
            participants = await list_participants(h.store.participants, "c1")
            assert {p.session_id for p in participants} == {"ann", "bob"}
            session = await h.session("ann")
            assert session.conversation_id == "c1"
            for key in ("conversation_id", "name", "tone", "cooldown", "last_seen", "paused"):
                assert key in session.context
            await asyncio.sleep(0.6)
            assert await _agent_messages(h) == [], "nobody speaks before anyone else has"
            await _post(h, "What happened to the stolen diamonds?")
            await asyncio.sleep(2.5)  # ~12 heartbeats: plenty of room for ping-pong
            replies = await _agent_messages(h)
            assert 2 <= len(replies) <= 3, [m.text for m in replies]  # the agent-streak rule (3) ends it
            authors = [m.meta["session_id"] for m in replies if m.meta]
            assert {"ann", "bob"} <= set(authors)
            assert all(a != b for a, b in itertools.pairwise(authors)), "nobody answers itself"
            # A user message re-opens the conversation.
            await _post(h, "Anyone?", n=1)
            await asyncio.sleep(1.0)
            assert len(await _agent_messages(h)) > len(replies)
            for sid in ("ann", "bob"):
                assert_contiguous(await h.steps(sid))
                assert len({m.message_id for m in await _agent_messages(h)}) == len(await _agent_messages(h))

    run(scenario())


def test_cooldown_delays_the_reply(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await _conversation(h)
            await h.create("ann", agent_type="persona", conversation_id="c1", name="Ann", cooldown=1.5)
            await _post(h, "hello")
            await asyncio.sleep(0.6)
            assert len(await _agent_messages(h)) == 1
            await _post(h, "again?", n=1)
            await asyncio.sleep(0.5)
            assert len(await _agent_messages(h)) == 1, "still cooling down"
            silent = [s for s in await h.steps("ann", "tick") if s.notes == "silent: cooldown"]
            assert silent
            await asyncio.sleep(1.5)
            assert len(await _agent_messages(h)) == 2, "answers once the cooldown is over"

    run(scenario())


def test_speak_now_wakes_well_before_the_heartbeat(db_uri: str) -> None:
    async def scenario() -> None:
        settings = fast_settings(db_uri, runtime={"heartbeat_interval": 30.0})
        async with hosted(settings) as h:
            await _conversation(h)
            await h.create("ann", agent_type="persona", conversation_id="c1", name="Ann")
            await asyncio.sleep(0.3)
            started = time.monotonic()
            done = await h.act("interrupt", "ann", {"guidance": "speak now"})
            assert done.status == "done", done.error
            while not await _agent_messages(h):
                assert time.monotonic() - started < 10, "speak_now did not wake the session"
                await asyncio.sleep(0.05)
            tick = (await h.steps("ann", "tick"))[-1]
            assert tick.text and tick.data and tick.data["message_id"]

    run(scenario())


def test_new_message_wakes_a_persona(db_uri: str) -> None:
    async def scenario() -> None:
        settings = fast_settings(db_uri, runtime={"heartbeat_interval": 30.0})
        async with hosted(settings) as h:
            await _conversation(h)
            await h.create("ann", agent_type="persona", conversation_id="c1", name="Ann", cooldown=0)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await _post(h, "Is anyone there?")
            while not await _agent_messages(h):
                assert time.monotonic() - started < 10, "a new message did not wake the persona"
                await asyncio.sleep(0.05)

    run(scenario())


def test_persona_guidance(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await _conversation(h)
            await h.create("ann", agent_type="persona", conversation_id="c1", name="Ann")
            done = await h.act("interrupt", "ann", {"guidance": "be noir, cooldown 0.5"})
            assert done.status == "done", done.error
            context = (await h.session("ann")).context
            assert context["tone"] == "noir" and context["cooldown"] == 0.5
            done = await h.act("interrupt", "ann", {"guidance": {"set_tone": "grumpy"}})
            assert (await h.session("ann")).context["tone"] == "grumpy"
            bad = await h.act("interrupt", "ann", {"guidance": {"set_cooldown": -3}})
            assert bad.status == "failed" and "invalid persona guidance" in (bad.error or "")
            bad = await h.act("interrupt", "ann", {"guidance": "dance"})
            assert bad.status == "failed" and "cannot understand guidance 'dance'" in (bad.error or "")
            assert '{"type": "set_tone", "tone": "noir"}' in (bad.error or ""), "the rejection teaches"
            done = await h.act("interrupt", "ann", {"guidance": {"type": "set_tone", "tone": "noir"}})
            assert done.status == "done", done.error
            assert done.result is not None and done.result["operations"] == [{"type": "set_tone", "tone": "noir"}]
            assert done.result["applied"] == {"tone": "noir"}

    run(scenario())
