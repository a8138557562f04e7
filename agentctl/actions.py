"""Action commands on existing sessions: pause, resume, interrupt, destroy.

Each takes one session id (output and JSON exactly as before), several ids, or a selector
(``--agent-id``, ``--type``, ``--status``, ``--all``): several become one batch with a summary
(``agentctl.fleet``). Every action is queued through ``agentctl.submit`` (the daemon when it
answers, LanceDB directly otherwise) and, unless ``--no-wait``, waits for the worker's
acknowledgement. Two invocations are always two actions (no implicit idempotency key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from agentctl.context import Obj, json_option, pass_obj
from agentctl.errors import EXIT_FAILED, EXIT_NOT_FOUND
from agentctl.fleet import Selector, run_many, run_single
from agentctl.inspect import SESSION_STATUSES
from agentctl.output import STATUS_COLOURS, emit_json, style
from agentctl.params import TEXT, check_id, ids_callback, optional_id_callback, parse_guidance
from agentctl.submit import withdraw
from agentctl.views import compact

__all__ = ["cancel", "destroy", "interrupt", "no_wait_option", "pause", "resume"]

F = Callable[..., Any]

no_wait_option = click.option(
    "--no-wait",
    is_flag=True,
    help="Queue and print the action id (create: the session id) without waiting for the acknowledgement.",
)


def _fleet_options(func: F) -> F:
    """The selector and its confirmation, shared by pause, resume, interrupt and destroy."""
    for decorator in reversed(
        [
            click.option(
                "--agent-id",
                "sel_agent_id",
                metavar="ID",
                callback=optional_id_callback("agent id"),
                help="Every session of this agent.",
            ),
            click.option("--type", "sel_type", metavar="TYPE", help="Every session of this agent type."),
            click.option(
                "--status",
                "sel_statuses",
                multiple=True,
                type=click.Choice(SESSION_STATUSES),
                help="Every session in this status (repeatable).",
            ),
            click.option("--all", "sel_all", is_flag=True, help="Every session."),
            click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation on a terminal."),
            no_wait_option,
            json_option,
        ]
    ):
        func = decorator(func)
    return func


def _status_line(result: dict[str, Any]) -> None:
    status = str(result.get("status", "?"))
    click.echo(f"{result.get('session_id')}  {style(status, STATUS_COLOURS.get(status))}")


def _dispatch(
    obj: Obj,
    kind: str,
    session_ids: tuple[str, ...],
    payload: dict[str, Any],
    options: dict[str, Any],
    human: Callable[[dict[str, Any]], None],
) -> None:
    selector = Selector(
        agent_id=options["sel_agent_id"],
        agent_type=options["sel_type"],
        statuses=tuple(options["sel_statuses"]),
        every=options["sel_all"],
    )
    if len(session_ids) == 1 and not selector.given:
        run_single(obj, kind, session_ids[0], payload, no_wait=options["no_wait"], human=human)
        return
    run_many(
        obj,
        kind,
        list(session_ids),
        payload,
        selector=selector,
        no_wait=options["no_wait"],
        assume_yes=options["assume_yes"],
    )


session_ids_arg = click.argument(
    "session_ids", nargs=-1, metavar="[SESSION_ID]...", callback=ids_callback("session id")
)


@click.command("pause")
@session_ids_arg
@_fleet_options
@pass_obj
def pause(obj: Obj, /, session_ids: tuple[str, ...], **options: Any) -> None:
    """Pause sessions: no more ticks; guidance is still applied to their context.

    Pausing a paused session is a no-op that succeeds. With several ids or a selector it
    prints a summary (applied, failed, skipped: already paused or finished); exit 1 if any failed.

    \b
    Examples:
      agentctl pause s-0189f3c2a1b4-3f9a2c1d
      agentctl pause --agent-id ada --yes
    """
    _dispatch(obj, "pause", session_ids, {}, options, _status_line)


@click.command("resume")
@session_ids_arg
@_fleet_options
@pass_obj
def resume(obj: Obj, /, session_ids: tuple[str, ...], **options: Any) -> None:
    """Resume paused sessions; the next tick starts at once.

    \b
    Examples:
      agentctl resume s-0189f3c2a1b4-3f9a2c1d
      agentctl resume --status paused --yes
    """
    _dispatch(obj, "resume", session_ids, {}, options, _status_line)


def _interrupt_human(result: dict[str, Any]) -> None:
    status = str(result.get("status", "?"))
    applied = compact(result.get("applied"))
    seq = f"  at seq {result['seq']}" if result.get("seq") is not None else ""
    click.echo(f"{result.get('session_id')}  {style(status, STATUS_COLOURS.get(status))}  applied {applied}{seq}")
    context = result.get("context") or {}
    width = max((len(str(k)) for k in context), default=0)
    for key, value in context.items():
        click.echo(f"  {str(key).ljust(width)}  {compact(value)}")


class _InterruptCommand(click.Command):
    """``interrupt --help`` lists each agent type's guidance operations, read from the types
    themselves (``agentd.agents.catalog``, pydantic only) when help is asked for, never before."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        from agentd.agents.catalog import guidance_help_text

        with formatter.section("Guidance operations by agent type (one example each, JSON or text)"):
            for line in guidance_help_text().splitlines():
                formatter.write(" " * formatter.current_indent + line + "\n")


@click.command("interrupt", cls=_InterruptCommand)
@click.argument("arguments", nargs=-1, required=True, metavar="[SESSION_ID]... GUIDANCE")
@click.option("--now", is_flag=True, help="Tick at once after applying the guidance.")
@_fleet_options
@pass_obj
def interrupt(obj: Obj, /, arguments: tuple[str, ...], now: bool, **options: Any) -> None:
    """Guide sessions: GUIDANCE is a JSON object, a JSON array of operations, or free text.

    Guidance is applied to the session's context at once (also while paused); invalid guidance
    is rejected by the worker with the reason (exit 1). Text starting with '{' or '[' must be
    valid JSON (exit 2 otherwise). Prints the applied guidance, the step it was applied at
    ("seq") and the new context. The last argument is the guidance; the ones before it are
    session ids (or use a selector).

    \b
    Examples:
      agentctl interrupt s-0189f3c2a1b4-3f9a2c1d '{"subject": "cats"}'
      agentctl interrupt s-0189f3c2a1b4-3f9a2c1d "about dogs" --now
      agentctl interrupt --agent-id ada --yes '{"type": "set_tone", "tone": "dry"}'
      agentctl interrupt p-1 '[{"type": "set_tone", "tone": "noir"}, {"type": "speak_now"}]'
    """
    *ids, guidance = arguments
    try:
        session_ids = tuple(dict.fromkeys(check_id(value, "session id") for value in ids))
    except click.BadParameter as exc:
        exc.param_hint = "'SESSION_ID'"
        raise
    try:
        parsed = parse_guidance(guidance)
    except click.BadParameter as exc:
        exc.param_hint = "'GUIDANCE'"
        raise
    _dispatch(obj, "interrupt", session_ids, {"guidance": parsed, "now": now}, options, _interrupt_human)


@click.command("destroy")
@session_ids_arg
@click.option("--reason", type=TEXT, metavar="TEXT", help="Recorded in the session's final step.")
@_fleet_options
@pass_obj
def destroy(obj: Obj, /, session_ids: tuple[str, ...], reason: str | None, **options: Any) -> None:
    """Stop sessions for good: the tick in flight finishes and the final state is persisted.

    Destroying a stopped session again succeeds (a selector skips it).

    \b
    Examples:
      agentctl destroy s-0189f3c2a1b4-3f9a2c1d --reason "done testing"
      agentctl destroy --type joke --status error --yes
    """
    _dispatch(obj, "destroy", session_ids, {"reason": reason}, options, _status_line)


@click.command("cancel")
@click.argument("action_ids", nargs=-1, required=True, metavar="ACTION_ID...", callback=ids_callback("action id"))
@json_option
@pass_obj
def cancel(obj: Obj, action_ids: tuple[str, ...]) -> None:
    """Withdraw queued actions that no worker has claimed yet (`agentctl actions` lists them).

    A withdrawn action is finished as failed with error_code "cancelled" and is never applied.
    One a worker already claimed is applied anyway (too late: exit 1), an unknown one is exit 3.
    JSON: one {"action_id", "outcome", "session_id", "kind", "status"} per line; outcome is
    cancelled, claimed, finished or not_found.

    \b
    Example:
      agentctl cancel a-0189f3c2a1b4-3f9a2c1d
    """
    results = withdraw(obj, list(action_ids))
    for entry in results:
        if obj.json:
            emit_json(entry)
        else:
            click.echo(f"{entry['action_id']}  {CANCEL_WORDS.get(entry['outcome'], entry['outcome'])}")
    outcomes = {entry["outcome"] for entry in results}
    if outcomes & {"claimed", "finished"}:
        raise click.exceptions.Exit(EXIT_FAILED)
    if "not_found" in outcomes:
        raise click.exceptions.Exit(EXIT_NOT_FOUND)


CANCEL_WORDS = {
    "cancelled": "cancelled",
    "claimed": "not cancelled: a worker already claimed it (it will be applied)",
    "finished": "not cancelled: already finished",
    "not_found": "not found",
}
