"""Conversation commands: create, post, show (with ``--follow``).

They write and read the ``conversations``/``messages`` tables directly: no action is needed,
because personas notice new messages by watching the table (and tick at once when one lands).
A message's id is chosen here, and ``insert_messages`` is keyed on it, so a retried insert
never duplicates a message.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from agentctl.context import Obj, json_option, pass_obj
from agentctl.errors import EXIT_INTERRUPTED, NotFound
from agentctl.output import emit_json
from agentctl.params import TEXT, id_callback, parse_since_time
from agentctl.reads import read
from agentctl.views import parse_time, print_conversations, print_messages
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
        from agentctl.direct import open_store
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
        from agentctl.direct import open_store
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
    persona replies, until Ctrl-C (exit 130): from the gateway when it is reachable, else by
    tailing the database directly; each message once either way.

    \b
    Examples:
      agentctl conversation show c-0189f3c2a1b4-3f9a2c1d --since 2025-01-31T12:00:00
      agentctl --json conversation show c-0189f3c2a1b4-3f9a2c1d --follow
    """
    as_json = obj.json
    params = {"conversation_id": conversation_id, "since": None if since is None else since.isoformat()}
    try:
        data = read(obj, "conversation_show", params, conversation_id=conversation_id)
        initial = data["messages"]
        if initial:
            print_messages(initial, as_json, streaming=follow)
        elif not follow and not as_json:
            click.echo("no messages", err=True)
        if follow:
            seen = {m["message_id"] for m in initial}
            _follow_messages(obj, conversation_id, since, int(data["version"]), seen, header=not initial)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _follow_messages(
    obj: Obj, conversation_id: str, since: datetime | None, version: int, seen: set[str], *, header: bool
) -> None:
    """Stream new messages from the gateway, else (or once it is gone) tail the table here.

    The gateway's snapshot repeats the conversation from its start; messages already printed
    (by id) or older than --since are dropped, so each message is printed once.
    """
    from agentctl.stream import GatewayUnavailable, RoomStream, message_row

    as_json = obj.json
    state = {"header": header}

    def emit(batch: list[dict[str, Any]]) -> None:
        fresh = [m for m in batch if m["message_id"] not in seen and _after(m, since)]
        seen.update(m["message_id"] for m in fresh)
        if fresh:
            print_messages(fresh, as_json, streaming=True, header=state["header"])
            state["header"] = False

    stream: RoomStream | None = None
    try:
        stream = RoomStream(obj.light(), f"conv::{conversation_id}", 0, "messages")
        stream.run(lambda rows: emit([message_row(r) for r in rows]))
    except GatewayUnavailable as exc:
        if stream is not None and stream.connected:
            click.echo(f"agentctl: {exc}; following the database directly", err=True)
    _tail_messages(obj, conversation_id, since, version, seen, emit)


def _after(message: dict[str, Any], since: datetime | None) -> bool:
    created = parse_time(message.get("created_at"))
    return since is None or created is None or created > since


def _tail_messages(
    obj: Obj,
    conversation_id: str,
    since: datetime | None,
    version: int,
    seen: set[str],
    emit: Callable[[list[dict[str, Any]]], None],
) -> None:
    """Tail the messages table from ``version``, catching up on what the stream had not printed."""
    settings = obj.settings()

    async def go() -> bool:
        from agentctl.direct import open_store
        from agentctl.follow import follow_messages
        from agentctl.stopper import Stopper

        stopper = Stopper()
        with stopper.installed():
            store = await open_store(settings)
            await follow_messages(
                store,
                conversation_id,
                since,
                version,
                set(seen),
                lambda batch: emit([m.model_dump(mode="json") for m in batch]),
                stopper,
            )
        return stopper.interrupted

    if obj.run(go()):
        raise click.exceptions.Exit(EXIT_INTERRUPTED)


@conversation.command("list")
@json_option
@pass_obj
def conversation_list(obj: Obj) -> None:
    """List conversations, oldest first, with their message and persona counts.

    JSON: one {"conversation_id", "title", "meta", "created_at", "messages": N,
    "participants": [session ids]} per line.

    \b
    Example:
      agentctl conversation list
    """
    print_conversations(read(obj, "conversation_list", {}), obj.json)
