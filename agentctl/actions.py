"""Action commands: create (joke|persona), pause, resume, interrupt, destroy.

Each enqueues one action row on the session's shard, sends the daemon a wake hint and, unless
``--no-wait``, waits for the worker's acknowledgement and prints the result. Two invocations
are always two actions (no implicit idempotency key): creating the same ``--session-id`` twice
is rejected by the worker ("session X already exists", exit 1). ``create --idempotency-key``
makes a retried create the same action instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from agentctl.context import Obj, json_option, pass_obj
from agentctl.errors import EXIT_INTERRUPTED, Rejected
from agentctl.output import STATUS_COLOURS, emit_json, style
from agentctl.params import TEXT, id_callback, optional_id_callback, parse_guidance, slug
from agentctl.views import compact
from agentd.ids import new_id

if TYPE_CHECKING:
    from agentctl.client import Submitted

__all__ = ["create", "destroy", "interrupt", "pause", "resume"]

F = Callable[..., Any]

no_wait_option = click.option(
    "--no-wait", is_flag=True, help="Enqueue and print the action id without waiting for the acknowledgement."
)
session_arg = click.argument("session_id", metavar="SESSION_ID", callback=id_callback("session id"))
interval_option = click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True, max=86_400),
    metavar="SECONDS",
    help="Seconds between ticks (default: [runtime] heartbeat_interval).",
)


def _create_options(func: F) -> F:
    for decorator in reversed(
        [
            click.option("--agent-id", metavar="ID", callback=optional_id_callback("agent id"), help="Owning agent."),
            click.option(
                "--session-id",
                metavar="ID",
                callback=optional_id_callback("session id"),
                help="Session id (default: a new unique id).",
            ),
            interval_option,
            no_wait_option,
            click.option(
                "--idempotency-key",
                type=TEXT,
                metavar="KEY",
                help="Retry-safe create: the same key again is the same action (and the same session).",
            ),
            json_option,
        ]
    ):
        func = decorator(func)
    return func


def _run_action(
    obj: Obj,
    kind: str,
    session_id: str,
    payload: dict[str, Any],
    *,
    no_wait: bool,
    human: Callable[[dict[str, Any]], None],
    idempotency_key: str | None = None,
) -> None:
    """Enqueue (+hint) and either print the action id or wait and print the worker's result."""
    settings = obj.settings()
    timeout = obj.action_timeout()

    async def go() -> tuple[Submitted, dict[str, Any] | None]:
        from agentctl.client import Control, outcome

        control = await Control.open(settings)
        submitted = await control.submit(kind, session_id, payload, idempotency_key=idempotency_key)
        if no_wait:
            return submitted, None
        return submitted, outcome(await control.wait(submitted, timeout))

    try:
        submitted, result = obj.run(go())
    except KeyboardInterrupt:
        click.echo(f"agentctl: interrupted; a {kind} already queued stays queued and will be applied", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    action = submitted.action
    if kind == "create" and result is not None and result.get("status") == "error":
        # A create acknowledged for a session that is in error (a replayed create of a session
        # quarantined while it was being created) did not give the user a working session.
        raise Rejected(
            f"session {session_id} exists but is in error (agentctl status {session_id} shows why); "
            f"`agentctl destroy {session_id}` then `agentctl purge {session_id}` frees the id",
            **result,
        )
    if result is None:
        if obj.json:
            emit_json(
                {
                    "action_id": action.action_id,
                    "session_id": action.session_id,
                    "kind": action.kind,
                    "shard": action.shard,
                    "status": action.status,
                }
            )
        else:
            click.echo(action.action_id)
            click.echo(f"queued {action.kind} for session {action.session_id}; not waiting", err=True)
        return
    if obj.json:
        emit_json(result)
    else:
        human(result)


def _status_line(result: dict[str, Any]) -> None:
    status = str(result.get("status", "?"))
    click.echo(f"{result.get('session_id')}  {style(status, STATUS_COLOURS.get(status))}")


@click.group("create")
def create() -> None:
    """Create a session (joke or persona) and print its session id.

    \b
    Examples:
      agentctl create joke --subject cats --interval 2
      SID=$(agentctl create persona --conversation "$CID" --name Ada --tone dry)
    """


@create.command("joke")
@click.option(
    "--subject", type=TEXT, metavar="TEXT", help="What the jokes are about (default: [runtime] default_subject)."
)
@click.option("--style", "joke_style", type=TEXT, metavar="TEXT", help="Optional style hint, e.g. 'pun'.")
@_create_options
@pass_obj
def create_joke(
    obj: Obj,
    subject: str | None,
    joke_style: str | None,
    agent_id: str | None,
    session_id: str | None,
    interval: float | None,
    no_wait: bool,
    idempotency_key: str | None,
) -> None:
    """Create a joke session: one joke per tick about a subject that guidance can change.

    Prints the new session id (JSON: {"session_id", "agent_id", "status"}). --agent-id
    defaults to the session id.

    \b
    Example:
      agentctl create joke --subject cats --interval 5 --session-id cats-1
    """
    sid = session_id or new_id("s")
    config = {k: v for k, v in {"subject": subject, "interval": interval, "style": joke_style}.items() if v is not None}
    payload = {"agent_type": "joke", "agent_id": agent_id or sid, "config": config}
    _run_action(
        obj,
        "create",
        sid,
        payload,
        no_wait=no_wait,
        idempotency_key=idempotency_key,
        human=lambda r: click.echo(r.get("session_id", sid)),
    )


@create.command("persona")
@click.option(
    "--conversation",
    "conversation_id",
    required=True,
    metavar="CID",
    callback=optional_id_callback("conversation id"),
    help="Conversation the persona joins (agentctl conversation create).",
)
@click.option("--name", required=True, type=TEXT, metavar="NAME", help="The persona's name.")
@click.option("--tone", type=TEXT, metavar="TONE", help="How it speaks (default: friendly).")
@click.option(
    "--cooldown",
    type=click.FloatRange(min=0, max=86_400),
    metavar="SECONDS",
    help="Least seconds between its replies (default: 5).",
)
@_create_options
@pass_obj
def create_persona(
    obj: Obj,
    conversation_id: str,
    name: str,
    tone: str | None,
    cooldown: float | None,
    agent_id: str | None,
    session_id: str | None,
    interval: float | None,
    no_wait: bool,
    idempotency_key: str | None,
) -> None:
    """Create a persona session that replies to new messages of a conversation.

    The conversation must exist (a missing one is rejected by the worker: exit 1). --agent-id
    defaults to the name as a slug ("Ada Lovelace" -> ada-lovelace).

    \b
    Example:
      agentctl create persona --conversation c-0189f3c2a1b4-3f9a2c1d --name Ada --tone dry --cooldown 2
    """
    sid = session_id or new_id("s")
    values = {"conversation_id": conversation_id, "name": name, "tone": tone, "cooldown": cooldown}
    config = {k: v for k, v in {**values, "interval": interval}.items() if v is not None}
    payload = {"agent_type": "persona", "agent_id": agent_id or slug(name) or sid, "config": config}
    _run_action(
        obj,
        "create",
        sid,
        payload,
        no_wait=no_wait,
        idempotency_key=idempotency_key,
        human=lambda r: click.echo(r.get("session_id", sid)),
    )


@click.command("pause")
@session_arg
@no_wait_option
@json_option
@pass_obj
def pause(obj: Obj, session_id: str, no_wait: bool) -> None:
    """Pause a session: no more ticks; guidance is still applied to its context.

    Pausing a paused session is a no-op that succeeds.

    \b
    Example:
      agentctl pause s-0189f3c2a1b4-3f9a2c1d
    """
    _run_action(obj, "pause", session_id, {}, no_wait=no_wait, human=_status_line)


@click.command("resume")
@session_arg
@no_wait_option
@json_option
@pass_obj
def resume(obj: Obj, session_id: str, no_wait: bool) -> None:
    """Resume a paused session; its next tick starts at once.

    \b
    Example:
      agentctl resume s-0189f3c2a1b4-3f9a2c1d
    """
    _run_action(obj, "resume", session_id, {}, no_wait=no_wait, human=_status_line)


def _interrupt_human(result: dict[str, Any]) -> None:
    status = str(result.get("status", "?"))
    applied = compact(result.get("applied"))
    click.echo(f"{result.get('session_id')}  {style(status, STATUS_COLOURS.get(status))}  applied {applied}")
    context = result.get("context") or {}
    width = max((len(str(k)) for k in context), default=0)
    for key, value in context.items():
        click.echo(f"  {str(key).ljust(width)}  {compact(value)}")


@click.command("interrupt")
@session_arg
@click.argument("guidance", metavar="GUIDANCE")
@click.option("--now", is_flag=True, help="Tick at once after applying the guidance.")
@no_wait_option
@json_option
@pass_obj
def interrupt(obj: Obj, session_id: str, guidance: str, now: bool, no_wait: bool) -> None:
    """Guide a session: GUIDANCE is a JSON object or free text.

    Guidance is applied to the session's context at once (also while paused); invalid guidance
    is rejected by the worker with the reason (exit 1). Text starting with '{' must be valid
    JSON (exit 2 otherwise). Prints the applied guidance and the new context.

    \b
    Examples:
      agentctl interrupt s-0189f3c2a1b4-3f9a2c1d '{"subject": "cats"}'
      agentctl interrupt s-0189f3c2a1b4-3f9a2c1d "about dogs" --now
      agentctl interrupt s-0189f3c2a1b4-3f9a2c1d '{"speak_now": true}'   # persona
    """
    try:
        parsed = parse_guidance(guidance)
    except click.BadParameter as exc:
        exc.param_hint = "'GUIDANCE'"
        raise
    _run_action(obj, "interrupt", session_id, {"guidance": parsed, "now": now}, no_wait=no_wait, human=_interrupt_human)


@click.command("destroy")
@session_arg
@click.option("--reason", type=TEXT, metavar="TEXT", help="Recorded in the session's final step.")
@no_wait_option
@json_option
@pass_obj
def destroy(obj: Obj, session_id: str, reason: str | None, no_wait: bool) -> None:
    """Stop a session for good: the tick in flight finishes and the final state is persisted.

    Destroying a stopped session again succeeds.

    \b
    Example:
      agentctl destroy s-0189f3c2a1b4-3f9a2c1d --reason "done testing"
    """
    _run_action(obj, "destroy", session_id, {"reason": reason}, no_wait=no_wait, human=_status_line)
