"""Read-only commands: list, status, steps (with ``--follow``).

They read LanceDB directly and never need the daemon, so they work while it is stopped or
restarting. A session is "not found" (exit 3) when it has neither a session row nor steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import click

from agentctl.context import Obj, json_option, pass_obj
from agentctl.errors import EXIT_INTERRUPTED, NotFound
from agentctl.params import id_callback, optional_id_callback
from agentctl.views import print_session, print_sessions, print_steps

if TYPE_CHECKING:
    from agentd.store import Store
    from agentd.store.sessions import SessionRecord
    from agentd.store.steps import StepRecord

__all__ = ["list_command", "status", "steps"]

# agentd.store.sessions.SESSION_STATUSES, repeated so that --help and completion need not import
# LanceDB (a test keeps the two equal).
SESSION_STATUSES = ("starting", "running", "paused", "stopping", "stopped", "error")
# Steps read (and printed) per query by `steps`: bounds memory whatever the history's length.
STEPS_PAGE = 1000


@click.command("list")
@click.option("--agent-id", metavar="ID", callback=optional_id_callback("agent id"), help="Only this agent's sessions.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(SESSION_STATUSES),
    help="Only sessions in this status (repeatable).",
)
@json_option
@pass_obj
def list_command(obj: Obj, agent_id: str | None, statuses: tuple[str, ...]) -> None:
    """List sessions, oldest first (JSON: one session object per line).

    \b
    Examples:
      agentctl list --status running --status paused
      agentctl --json list --agent-id ada | jq -r .session_id
    """
    settings = obj.settings()

    async def go() -> list[SessionRecord]:
        from agentctl.client import open_store
        from agentd.store.sessions import list_sessions

        store = await open_store(settings)
        return await list_sessions(store.sessions, agent_id=agent_id, statuses=list(statuses) or None)

    records = obj.run(go())
    records.sort(key=lambda r: (r.created_at, r.session_id))
    print_sessions(records, obj.json)


async def _session_or_none(store: Store, session_id: str) -> SessionRecord | None:
    from agentd.store.sessions import get_session

    return await get_session(store.sessions, session_id)


@click.command("status")
@click.argument("session_id", metavar="SESSION_ID", callback=id_callback("session id"))
@json_option
@pass_obj
def status(obj: Obj, session_id: str) -> None:
    """Show one session: status, counters and its current context.

    JSON: {session_id, agent_id, agent_type, status, context, iteration, last_seq,
    conversation_id, created_at, updated_at, ...}. Unknown session: exit 3.

    \b
    Example:
      agentctl --json status s-0189f3c2a1b4-3f9a2c1d | jq .context
    """
    settings = obj.settings()

    async def go() -> SessionRecord | None:
        from agentctl.client import open_store

        return await _session_or_none(await open_store(settings), session_id)

    record = obj.run(go())
    if record is None:
        raise NotFound(f"unknown session {session_id}", session_id=session_id)
    print_session(record, obj.json)


async def _step_pages(
    store: Store, session_id: str, since: int | None, limit: int | None
) -> AsyncIterator[list[StepRecord]]:
    """The steps to print, in seq order, at most ``STEPS_PAGE`` rows per read.

    ``--since``: the first ``limit`` steps after it (all without ``limit``); no ``--since``: the
    latest ``limit`` (all without ``limit``). Only the seq column of the session is read whole
    (8 bytes a step); rows, with their state snapshots, are read one seq range at a time, so a
    long history streams instead of being loaded at once. Steps committed after the seqs were
    read are left to the follower (or the next call).
    """
    from agentd.store.sql import sql_str
    from agentd.store.steps import StepRecord

    where = f"session_id = {sql_str(session_id)}"
    rows = await store.steps.query().where(where).select(["seq"]).to_arrow()
    seqs = sorted(rows.column("seq").to_pylist())
    if since is not None:
        seqs = [seq for seq in seqs if seq > since]
        if limit is not None:
            seqs = seqs[:limit]
    elif limit is not None and seqs:
        floor = max(0, seqs[-1] - limit)
        seqs = [seq for seq in seqs if seq > floor]
    for start in range(0, len(seqs), STEPS_PAGE):
        page = seqs[start : start + STEPS_PAGE]
        query = store.steps.query().where(f"{where} AND seq >= {page[0]} AND seq <= {page[-1]}")
        records = StepRecord.from_arrow(await query.to_arrow())
        records.sort(key=lambda r: r.seq)
        yield records


@click.command("steps")
@click.argument("session_id", metavar="SESSION_ID", callback=id_callback("session id"))
@click.option("--since", type=click.IntRange(min=0), metavar="SEQ", help="Only steps with seq > SEQ.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="At most N steps: the first N after --since, else the latest N (default: all, read in pages).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new steps as they are committed (Ctrl-C ends).")
@json_option
@pass_obj
def steps(obj: Obj, session_id: str, since: int | None, limit: int | None, follow: bool) -> None:
    """Print a session's steps (JSON: one step object per line), like tail -f with --follow.

    Following only reads the database: it keeps going while the daemon restarts and ends
    cleanly on Ctrl-C (exit 130).

    \b
    Examples:
      agentctl steps s-0189f3c2a1b4-3f9a2c1d --limit 20
      agentctl --json steps s-0189f3c2a1b4-3f9a2c1d --since 100 --follow | jq -r .text
    """
    settings = obj.settings()
    as_json = obj.json

    async def go() -> bool:
        from agentctl.client import open_store
        from agentctl.follow import Stopper, follow_steps

        stopper = Stopper()
        # Installed before the first read when following, so that an early Ctrl-C is clean too.
        with stopper.installed() if follow else contextlib.nullcontext():
            store = await open_store(settings)
            last: int | None = None
            async for page in _step_pages(store, session_id, since, limit):
                if page:
                    print_steps(page, as_json, streaming=follow, header=last is None)
                    last = page[-1].seq
            if last is None and await _session_or_none(store, session_id) is None:
                raise NotFound(f"unknown session {session_id}", session_id=session_id)
            if last is None and not follow and not as_json:
                click.echo("no steps", err=True)
            if not follow:
                return False
            header = last is None
            last = (since or 0) if last is None else last

            def emit(batch: list[StepRecord]) -> None:
                nonlocal header
                print_steps(batch, as_json, streaming=True, header=header)
                header = False

            await follow_steps(store, session_id, last, emit, stopper)
        return stopper.interrupted

    if obj.run(go()):
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
