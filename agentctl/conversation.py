"""Conversation commands: create, post, show (with ``--follow``).

They write and read the ``conversations``/``messages`` tables directly: no action is needed,
because personas notice new messages by watching the table (and tick at once when one lands).
A message's id is chosen here, and ``insert_messages`` is keyed on it, so a retried insert
never duplicates a message.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from agentctl.context import Obj, json_option, pass_obj
from agentctl.errors import EXIT_INTERRUPTED, NotFound
from agentctl.output import emit_json
from agentctl.params import TEXT, id_callback, parse_since_time
from agentctl.views import print_messages
from agentd.ids import new_id

if TYPE_CHECKING:
    from agentd.store import Store
    from agentd.store.conversations import MessageRecord

__all__ = ["conversation"]


@click.group("conversation")
def conversation() -> None:
    """Create conversations, post to them and read them (personas take part in them).

    \b
    Example:
      CID=$(agentctl conversation create "tea time")
      agentctl conversation post "$CID" "Who wants tea?"
      agentctl conversation show "$CID" --follow
    """


async def _require(store: Store, conversation_id: str) -> None:
    from agentd.store.conversations import get_conversation

    if await get_conversation(store.conversations, conversation_id) is None:
        raise NotFound(f"unknown conversation {conversation_id}", conversation_id=conversation_id)


@conversation.command("create")
@click.argument("title", type=TEXT)
@json_option
@pass_obj
def conversation_create(obj: Obj, title: str) -> None:
    """Create a conversation and print its id (JSON: {"conversation_id", "title"}).

    \b
    Example:
      agentctl conversation create "tea time"
    """
    settings = obj.settings()

    async def go() -> str:
        from agentctl.client import open_store
        from agentd.store.conversations import ConversationRecord, insert_conversation
        from agentd.timeutil import utcnow

        store = await open_store(settings)
        record = ConversationRecord(conversation_id=new_id("c"), title=title, created_at=utcnow())
        await insert_conversation(store.conversations, record)
        return record.conversation_id

    conversation_id = obj.run(go())
    if obj.json:
        emit_json({"conversation_id": conversation_id, "title": title})
    else:
        click.echo(conversation_id)


@conversation.command("post")
@click.argument("conversation_id", metavar="CONVERSATION_ID", callback=id_callback("conversation id"))
@click.argument("text", type=TEXT)
@click.option(
    "--author",
    default="user",
    show_default=True,
    metavar="ID",
    callback=id_callback("author id"),
    help="Who says it (a user id).",
)
@json_option
@pass_obj
def conversation_post(obj: Obj, conversation_id: str, text: str, author: str) -> None:
    """Post a user message to a conversation; bound personas may reply.

    Prints the message id (JSON: the message object). Unknown conversation: exit 3.

    \b
    Example:
      agentctl conversation post c-0189f3c2a1b4-3f9a2c1d "What do you think of tea?" --author alice
    """
    if not text.strip():
        raise click.BadParameter("the message is empty", param_hint="'TEXT'")
    settings = obj.settings()

    async def go() -> MessageRecord:
        from agentctl.client import open_store
        from agentd.store.conversations import MessageRecord, insert_messages
        from agentd.timeutil import utcnow

        store = await open_store(settings)
        await _require(store, conversation_id)
        record = MessageRecord(
            message_id=new_id("m"),
            conversation_id=conversation_id,
            author_id=author,
            role="user",
            text=text,
            created_at=utcnow(),
        )
        await insert_messages(store.messages, [record])
        return record

    message = obj.run(go())
    if obj.json:
        emit_json(message.model_dump(mode="json"))
    else:
        click.echo(message.message_id)


@conversation.command("show")
@click.argument("conversation_id", metavar="CONVERSATION_ID", callback=id_callback("conversation id"))
@click.option(
    "--since",
    metavar="ISO",
    callback=parse_since_time,
    help="Only messages created after this ISO 8601 time (local time without an offset).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new messages (Ctrl-C ends).")
@json_option
@pass_obj
def conversation_show(obj: Obj, conversation_id: str, since: datetime | None, follow: bool) -> None:
    """Print a conversation's messages in order (JSON: one message object per line).

    Unknown conversation: exit 3. With --follow it keeps printing new messages, including
    persona replies, until Ctrl-C (exit 130).

    \b
    Examples:
      agentctl conversation show c-0189f3c2a1b4-3f9a2c1d --since 2025-01-31T12:00:00
      agentctl --json conversation show c-0189f3c2a1b4-3f9a2c1d --follow
    """
    settings = obj.settings()
    as_json = obj.json

    async def go() -> bool:
        from agentctl.client import open_store
        from agentctl.follow import Stopper, follow_messages
        from agentd.store.conversations import read_messages

        stopper = Stopper()
        # Installed before the first read when following, so that an early Ctrl-C is clean too.
        with stopper.installed() if follow else contextlib.nullcontext():
            store = await open_store(settings)
            await _require(store, conversation_id)
            # The version first: a message committed during the read below is printed once.
            version = int(await store.messages.version())
            initial = await read_messages(store.messages, conversation_id, since=since)
            if initial:
                print_messages(initial, as_json, streaming=follow)
            elif not follow and not as_json:
                click.echo("no messages", err=True)
            if not follow:
                return False
            state: dict[str, Any] = {"header": not initial}

            def emit(batch: list[MessageRecord]) -> None:
                print_messages(batch, as_json, streaming=True, header=state["header"])
                state["header"] = False

            seen = {m.message_id for m in initial}
            await follow_messages(store, conversation_id, since, version, seen, emit, stopper)
        return stopper.interrupted

    if obj.run(go()):
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
