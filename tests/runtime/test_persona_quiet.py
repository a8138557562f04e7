"""Finding 11 (persona part): an idle persona's ticks are quiet and change nothing.

The runtime appends no step for a quiet tick whose context delta changes nothing (unless the
agent type sets ``record_quiet_ticks``). The first tests drive a real PersonaAgent on a real
LanceDB directory tick by tick and check its outcomes; the last runs a hosted session and checks
the stored steps.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from helpers import run

from agentd.agents.base import AgentServices, StepOutcome, Tick
from agentd.agents.persona import PersonaAgent, PersonaConfig
from agentd.llm.offline import OfflineLLM
from agentd.store import Store
from agentd.store.conversations import ConversationRecord, MessageRecord, insert_conversation, insert_messages
from agentd.timeutil import utcnow

from .harness import fast_settings, hosted


class Driver:
    """Runs a PersonaAgent's ticks the way the runtime does: context updated by each delta."""

    def __init__(self, store: Store, **config: Any) -> None:
        cfg = PersonaConfig(conversation_id="c1", name="Ann", **config)
        self.agent = PersonaAgent(
            cfg, AgentServices(llm=OfflineLLM(seed=1), store=store, session_id="ann", agent_id="ann")
        )
        self.context: dict[str, Any] = {**self.agent.initial_context(), "paused": False}
        self.seq = 0

    async def tick(self, *, after: float = 0.0) -> StepOutcome:
        self.seq += 1
        now = utcnow() + timedelta(seconds=after)
        outcome = await self.agent.do_tick(Tick(seq=self.seq, iteration=self.seq, now=now, context=dict(self.context)))
        self.context.update(outcome.context_delta)
        return outcome

    def changes(self, outcome: StepOutcome, before: dict[str, Any]) -> dict[str, Any]:
        """The delta without the keys whose value the context already had (the runtime's rule)."""
        return {k: v for k, v in outcome.context_delta.items() if k not in before or before[k] != v}


async def _setup(db_uri: str) -> Store:
    store = await Store.open(db_uri, 4)
    await insert_conversation(store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow()))
    return store


async def _post(store: Store, message_id: str) -> None:
    record = MessageRecord(
        message_id=message_id, conversation_id="c1", author_id="user", role="user", text="hi", created_at=utcnow()
    )
    await insert_messages(store.messages, [record])


def test_idle_ticks_are_quiet_with_an_empty_delta(db_uri: str) -> None:
    async def scenario() -> None:
        store = await _setup(db_uri)
        ann = Driver(store, cooldown=0)
        for _ in range(3):
            outcome = await ann.tick()
            assert outcome.quiet and outcome.context_delta == {}, outcome
            assert outcome.notes == "silent: no new messages"
        await _post(store, "u-1")
        spoke = await ann.tick()
        assert not spoke.quiet and spoke.text and spoke.data and spoke.data["replayed"] is False
        assert ann.context["replies"] == 1 and ann.context["last_seen_id"] == "u-1"
        # Its own reply is the only new message: nothing to say, nothing changed, no step.
        for _ in range(3):
            outcome = await ann.tick()
            assert outcome.quiet and outcome.context_delta == {}, outcome
        # speak_now already False is not written again.
        assert "speak_now" not in outcome.context_delta

    run(scenario())


def test_a_cooldown_wait_leaves_one_step(db_uri: str) -> None:
    async def scenario() -> None:
        store = await _setup(db_uri)
        ann = Driver(store, cooldown=60)
        await _post(store, "u-1")
        assert (await ann.tick()).text
        await _post(store, "u-2")
        before = dict(ann.context)
        first = await ann.tick()
        assert first.quiet and first.notes == "silent: cooldown" and ann.changes(first, before)
        for _ in range(3):
            before = dict(ann.context)
            outcome = await ann.tick()
            assert outcome.quiet and outcome.notes == "silent: cooldown"
            assert ann.changes(outcome, before) == {}, "the same wait changes nothing"
        answered = await ann.tick(after=61)
        assert answered.text and ann.context["last_seen_id"] == "u-2" and ann.context["cooldown_until"] is None

    run(scenario())


def test_a_context_from_before_the_version_marker_converts_once(db_uri: str) -> None:
    async def scenario() -> None:
        store = await _setup(db_uri)
        ann = Driver(store, cooldown=0)
        await _post(store, "u-1")
        assert (await ann.tick()).text
        # What an older agentd stored: a stamp marker, no version marker.
        ann.context.pop("last_seen_version")
        ann.context["last_seen"] = utcnow().isoformat()
        converted = await ann.tick()
        assert converted.quiet and set(converted.context_delta) == {"last_seen_version"}
        assert ann.context["last_seen_version"] > 0
        outcome = await ann.tick()
        assert outcome.quiet and outcome.context_delta == {}
        await _post(store, "u-2")
        assert (await ann.tick()).text, "new messages are still read after the conversion"

    run(scenario())


# End to end: the runtime (agentd/runtime/session.py) skips quiet ticks whose delta changes
# nothing, unless Agent.record_quiet_ticks.
def test_an_idle_persona_appends_no_steps(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await insert_conversation(
                h.store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow())
            )
            await h.create("ann", agent_type="persona", conversation_id="c1", name="Ann", cooldown=0)
            await asyncio.sleep(1.5)  # ~7 heartbeats
            ticks = await h.steps("ann", "tick")
            assert ticks == [], [s.notes for s in ticks]
            await _post(h.store, "u-1")
            await h.wait_steps("ann", 1)
            await asyncio.sleep(1.0)
            ticks = await h.steps("ann", "tick")
            assert [bool(s.data and s.data.get("message_id")) for s in ticks] == [True], [s.notes for s in ticks]

    run(scenario())
