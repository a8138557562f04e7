"""Read-only commands: list, status, steps (with ``--follow``), actions, types.

They ask the daemon (a ``read`` on the control socket, no LanceDB import) and, when no daemon
answers, run the same view here on LanceDB (``agentctl.reads``), so they work while it is
stopped or restarting and print the same thing either way. A session is "not found" (exit 3)
when it has neither a session row nor steps. ``steps --follow`` streams from the gateway when
it is reachable and tails the table itself otherwise (``agentctl.stream``).
"""

from __future__ import annotations

from typing import Any

import click

from agentctl.context import Obj, json_option, pass_obj
from agentctl.errors import EXIT_INTERRUPTED
from agentctl.params import id_callback, optional_id_callback
from agentctl.reads import read
from agentctl.views import print_actions, print_session, print_sessions, print_steps, print_types

__all__ = ["actions_command", "list_command", "status", "steps", "types_command"]

# agentd.store.sessions.SESSION_STATUSES, repeated so that --help and completion need not import
# LanceDB (a test keeps the two equal).
SESSION_STATUSES = ("starting", "running", "paused", "stopping", "stopped", "error")
ACTION_STATES = ("pending", "claimed", "done", "failed")


@click.command("list")
@click.option("--agent-id", metavar="ID", callback=optional_id_callback("agent id"), help="Only this agent's sessions.")
@click.option("--type", "agent_type", metavar="TYPE", help="Only sessions of this agent type.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(SESSION_STATUSES),
    help="Only sessions in this status (repeatable).",
)
@json_option
@pass_obj
def list_command(obj: Obj, agent_id: str | None, agent_type: str | None, statuses: tuple[str, ...]) -> None:
    """List sessions, oldest first (JSON: one session object per line).

    On a terminal the table fits its width (long ids are cut with an ellipsis; use --json for
    whole values).

    \b
    Examples:
      agentctl list --status running --status paused
      agentctl --json list --agent-id ada | jq -r .session_id
    """
    params = {"agent_id": agent_id, "statuses": list(statuses), "agent_type": agent_type}
    print_sessions(read(obj, "list", params), obj.json)


@click.command("status")
@click.argument("session_id", metavar="SESSION_ID", callback=id_callback("session id"))
@json_option
@pass_obj
def status(obj: Obj, session_id: str) -> None:
    """Show one session: status, counters, its current context and its queued actions.

    JSON: {session_id, agent_id, agent_type, status, context, iteration, last_seq,
    conversation_id, created_at, updated_at, ..., queued_actions: [...]}. queued_actions are
    the session's actions that no worker has applied yet. Unknown session: exit 3.

    \b
    Example:
      agentctl --json status s-0189f3c2a1b4-3f9a2c1d | jq .context
    """
    row = read(obj, "status", {"session_id": session_id}, session_id=session_id)
    print_session(row, obj.json)


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

    Following streams from the gateway when it is reachable (resuming after a disconnect) and
    tails the database directly otherwise; either way each step is printed once, in seq order,
    and it keeps going while the daemon restarts. Ctrl-C ends it cleanly (exit 130).

    \b
    Examples:
      agentctl steps s-0189f3c2a1b4-3f9a2c1d --limit 20
      agentctl --json steps s-0189f3c2a1b4-3f9a2c1d --since 100 --follow | jq -r .text
    """
    as_json = obj.json
    try:
        params: dict[str, Any] | None = {"session_id": session_id, "since": since, "limit": limit}
        last: int | None = None
        agent_id: str | None = None
        while params is not None:
            page = read(obj, "steps", params, session_id=session_id)
            agent_id = page.get("agent_id")
            if page["steps"]:
                print_steps(page["steps"], as_json, streaming=follow, header=last is None)
                last = int(page["steps"][-1]["seq"])
            params = None if page.get("next") is None else {"session_id": session_id, **page["next"]}
        if last is None and not follow and not as_json:
            click.echo("no steps", err=True)
        if not follow:
            return
        _follow_steps(obj, session_id, agent_id, (since or 0) if last is None else last, header=last is None)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _follow_steps(obj: Obj, session_id: str, agent_id: str | None, last: int, *, header: bool) -> None:
    """Stream new steps from the gateway, else (or once it is gone) tail the table here."""
    from agentctl.stream import GatewayUnavailable, RoomStream, step_row

    as_json = obj.json
    light = obj.light()
    state = {"header": header}

    def emit(batch: list[dict[str, Any]]) -> None:
        print_steps(batch, as_json, streaming=True, header=state["header"])
        state["header"] = False

    position = last
    if agent_id is not None:
        stream: RoomStream | None = None
        try:
            stream = RoomStream(light, f"run::{agent_id}::{session_id}", last, "steps")
            stream.run(lambda rows: emit([step_row(r, light.num_shards) for r in rows]))
        except GatewayUnavailable as exc:
            if stream is not None:
                position = stream.position
                if stream.connected:
                    click.echo(f"agentctl: {exc}; following the database directly", err=True)
    _tail_steps(obj, session_id, position, emit)


def _tail_steps(obj: Obj, session_id: str, last: int, emit: Any) -> None:
    settings = obj.settings()

    async def go() -> bool:
        from agentctl.direct import open_store
        from agentctl.follow import follow_steps
        from agentctl.stopper import Stopper

        stopper = Stopper()
        with stopper.installed():
            store = await open_store(settings)
            await follow_steps(
                store, session_id, last, lambda batch: emit([s.model_dump(mode="json") for s in batch]), stopper
            )
        return stopper.interrupted

    if obj.run(go()):
        raise click.exceptions.Exit(EXIT_INTERRUPTED)


def _as_rows(emit: Any) -> Any:
    return lambda batch: emit([step.model_dump(mode="json") for step in batch])


@click.command("actions")
@click.option("--session-id", metavar="ID", callback=optional_id_callback("session id"), help="Only this session's.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(ACTION_STATES),
    help="Only actions in this state (repeatable; default: pending and claimed, i.e. not applied yet).",
)
@click.option("--all", "show_all", is_flag=True, help="Every state, finished actions too (kept [queue] retention).")
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=1000, show_default=True, metavar="N")
@json_option
@pass_obj
def actions_command(obj: Obj, session_id: str | None, statuses: tuple[str, ...], show_all: bool, limit: int) -> None:
    """List queued actions and their state, oldest first (JSON: one action object per line).

    An action is pending until a worker claims it, claimed while it is applied, then done or
    failed (a withdrawn one is failed with error_code "cancelled"). `agentctl cancel
    ACTION_ID` withdraws a pending one.

    \b
    Examples:
      agentctl actions
      agentctl --json actions --all --session-id s-0189f3c2a1b4-3f9a2c1d
    """
    chosen = list(ACTION_STATES) if show_all else list(statuses) or ["pending", "claimed"]
    params = {"session_id": session_id, "statuses": chosen, "limit": limit}
    print_actions(read(obj, "actions", params), obj.json)


@click.command("types")
@json_option
@pass_obj
def types_command(obj: Obj) -> None:
    """List the agent types `agentctl create TYPE` can create, with their config fields.

    JSON: one {"type", "class", "description", "config": [{"name", "type", "required",
    "default", "description"}]} per line. Types come from the daemon's registry (built-ins and
    the `agentd.agents` entry points installed where it runs).

    \b
    Example:
      agentctl types
    """
    print_types(read(obj, "types", {}), obj.json)
