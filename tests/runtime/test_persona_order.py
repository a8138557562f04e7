"""Finding 5: a message that commits after a later-stamped one is still read and answered.

``created_at`` is stamped before the commit, so two writers can commit in the opposite order
of their stamps. Personas (and ``read_messages``) use the commit position
(``_row_created_at_version``) instead, so the late commit is simply newer.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from helpers import run

from agentd.store.conversations import (
    ConversationRecord,
    MessageRecord,
    insert_conversation,
    insert_messages,
    read_messages,
    read_messages_after_version,
)
from agentd.timeutil import utcnow

from .harness import Harness, assert_contiguous, fast_settings, hosted


def _user(message_id: str, text: str, stamp: datetime) -> MessageRecord:
    return MessageRecord(
        message_id=message_id, conversation_id="c1", author_id="user", role="user", text=text, created_at=stamp
    )


async def _replies(h: Harness, count: int, timeout: float = 30) -> list[MessageRecord]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        replies = [m for m in await read_messages(h.store.messages, "c1") if m.role == "agent"]
        if len(replies) >= count:
            return replies
        assert asyncio.get_running_loop().time() < deadline, f"{len(replies)} replies after {timeout}s, wanted {count}"
        await asyncio.sleep(0.05)


def test_a_message_committed_late_is_read_and_answered(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await insert_conversation(
                h.store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow())
            )
            await h.create("ann", agent_type="persona", conversation_id="c1", name="Ann", cooldown=0)
            early = utcnow()
            # Two writers: the one that stamped later commits first; Ann reads it and answers.
            await insert_messages(
                h.store.messages, [_user("u-late-stamp", "Who ate the cake?", early + timedelta(0, 1))]
            )
            (first,) = await _replies(h, 1)
            assert first.reply_to == "u-late-stamp"
            # The earlier-stamped message commits now: stamped before everything Ann has read.
            await insert_messages(h.store.messages, [_user("u-early-stamp", "It was not me!", early)])
            replies = await _replies(h, 2)
            assert replies[1].reply_to == "u-early-stamp", "the late commit was read and answered"
            await asyncio.sleep(0.6)
            assert len(await _replies(h, 2)) == 2, "and answered once"
            context = (await h.session("ann")).context
            assert context["replies"] == 2
            # The marker passed both user messages (commit order), whatever their stamps.
            committed = await read_messages_after_version(h.store.messages, "c1", 0)
            versions = {m.message_id: v for v, m in committed}
            assert context["last_seen_version"] >= versions["u-early-stamp"] > versions["u-late-stamp"]
            assert_contiguous(await h.steps("ann"))

    run(scenario())


def test_reads_are_in_commit_order(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await insert_conversation(
                h.store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow())
            )
            now = utcnow()
            await insert_messages(h.store.messages, [_user("b", "stamped later, committed first", now)])
            await insert_messages(
                h.store.messages, [_user("a", "stamped earlier, committed later", now - timedelta(0, 5))]
            )
            assert [m.message_id for m in await read_messages(h.store.messages, "c1")] == ["b", "a"]
            assert [m.message_id for m in await read_messages(h.store.messages, "c1", limit=1)] == ["a"]
            everything = await read_messages_after_version(h.store.messages, "c1", 0)
            assert [m.message_id for _, m in everything] == ["b", "a"]
            after_b = await read_messages_after_version(h.store.messages, "c1", everything[0][0])
            assert [m.message_id for _, m in after_b] == ["a"]
            assert await read_messages_after_version(h.store.messages, "c1", everything[1][0]) == []

    run(scenario())
