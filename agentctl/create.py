"""``agentctl create TYPE``: create one session, or ``--count N`` as one batch, of any registered type.

``joke`` and ``persona`` keep their own options; any other name is a type registered with the
daemon (``agentctl types`` lists them) and takes its config as ``--config JSON``. agentctl does
not import the agent registry for this: the worker validates the type and its config and
rejects an unknown one with the reason, exactly as it does for the built-ins.

``--count N`` is one submit request: N creates queued together (one group commit), their
acknowledgements streamed back. It prints the N new session ids in order (JSON lines
``{"session_id", "agent_id", "status"}``), shows a progress bar on stderr when stderr is a
terminal, and reports each failed item (exit 1 if any failed, 4 if any is still queued).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from agentctl.actions import no_wait_option
from agentctl.context import Obj, json_option, pass_obj
from agentctl.errors import EXIT_FAILED, EXIT_TIMEOUT, UsageProblem
from agentctl.fleet import Progress, create_error, queued_json, run_single
from agentctl.output import emit_json
from agentctl.params import TEXT, check_text, optional_id_callback, slug
from agentctl.submit import outcome_error, submit
from agentd.ids import new_id

__all__ = ["create"]

F = Callable[..., Any]
BUILTIN = ("joke", "persona")


def _parse_config(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    check_text(value, "--config")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg}, column {exc.colno})") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter('must be a JSON object such as \'{"subject": "cats"}\'')
    return parsed


def _create_options(func: F) -> F:
    for decorator in reversed(
        [
            click.option("--agent-id", metavar="ID", callback=optional_id_callback("agent id"), help="Owning agent."),
            click.option(
                "--session-id",
                metavar="ID",
                callback=optional_id_callback("session id"),
                help="Session id (default: a new unique id; not with --count above 1).",
            ),
            click.option(
                "--interval",
                type=click.FloatRange(min=0, min_open=True, max=86_400),
                metavar="SECONDS",
                help="Seconds between ticks (default: [runtime] heartbeat_interval).",
            ),
            click.option(
                "--config",
                "config_json",
                metavar="JSON",
                callback=_parse_config,
                help="The type's creation config as a JSON object (options given too win).",
            ),
            click.option(
                "--count",
                type=click.IntRange(min=1, max=100_000),
                default=1,
                metavar="N",
                help="Create N sessions as one batch (--agent-id applies to all of them).",
            ),
            no_wait_option,
            click.option(
                "--idempotency-key",
                type=TEXT,
                metavar="KEY",
                help="Retry-safe create: the same key again is the same action(s) (and the same sessions).",
            ),
            json_option,
        ]
    ):
        func = decorator(func)
    return func


def _run_create(
    obj: Obj,
    agent_type: str,
    config: dict[str, Any],
    options: dict[str, Any],
    default_agent_id: Callable[[str], str],
) -> None:
    """One create exactly as before, or ``--count`` creates as one batch."""
    count: int = options["count"]
    key: str | None = options["idempotency_key"]
    if options["interval"] is not None:
        config = {**config, "interval": options["interval"]}
    if count > 1 and options["session_id"]:
        raise UsageProblem("--session-id names one session; leave it out with --count above 1")

    def payload(sid: str) -> dict[str, Any]:
        return {"agent_type": agent_type, "agent_id": options["agent_id"] or default_agent_id(sid), "config": config}

    if count == 1:
        sid = options["session_id"] or new_id("s")
        run_single(
            obj,
            "create",
            sid,
            payload(sid),
            no_wait=options["no_wait"],
            idempotency_key=key,
            human=lambda r: click.echo(r.get("session_id", sid)),
        )
        return
    items = []
    for index in range(count):
        sid = new_id("s")
        item: dict[str, Any] = {"kind": "create", "session_id": sid, "payload": payload(sid)}
        if key is not None:
            item["idempotency_key"] = f"{key}#{index}"
        items.append(item)
    progress = Progress(count, "creating")
    try:
        batch = submit(obj, items, wait=not options["no_wait"], on_ack=progress.step)
    finally:
        progress.close()
    failed = pending = 0
    for item_outcome in batch.items:
        if options["no_wait"] and item_outcome.state == "pending":
            emit_json(queued_json(obj, item_outcome)) if obj.json else click.echo(item_outcome.session_id)
            continue
        error = outcome_error(item_outcome, batch) or create_error(item_outcome)
        if error is None:
            result = item_outcome.result or {}
            if obj.json:
                emit_json({key: result.get(key) for key in ("session_id", "agent_id", "status")})
            else:
                click.echo(result.get("session_id", item_outcome.session_id))
            continue
        if item_outcome.state == "pending":
            pending += 1
        else:
            failed += 1
        if obj.json:
            emit_json({"index": item_outcome.index, **error.as_json()})
        click.echo(f"agentctl: item {item_outcome.index} ({item_outcome.session_id}): {error.message}", err=True)
    if failed or pending:
        click.echo(
            f"agentctl: {count - failed - pending} of {count} created, {failed} failed, {pending} pending", err=True
        )
    if failed:
        raise click.exceptions.Exit(EXIT_FAILED)
    if pending:
        raise click.exceptions.Exit(EXIT_TIMEOUT)


class CreateGroup(click.Group):
    """``create joke|persona`` with their own options; any other TYPE gets the generic command."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None or cmd_name.startswith("-"):
            return found
        return _generic_command(cmd_name)


def _generic_command(agent_type: str) -> click.Command:
    @click.command(agent_type)
    @_create_options
    @pass_obj
    def create_generic(obj: Obj, /, config_json: dict[str, Any], **options: Any) -> None:
        """Create a session of a registered type (`agentctl types` lists them and their config).

        The worker validates the config: an unknown type or a bad config is rejected with the
        reason (exit 1). --agent-id defaults to the session id.
        """
        _run_create(obj, agent_type, config_json, options, lambda sid: sid)

    return create_generic


@click.group("create", cls=CreateGroup)
def create() -> None:
    """Create sessions of any registered type and print their session ids.

    joke and persona have their own options; any other TYPE takes --config JSON (see
    `agentctl types`). --count N creates N sessions in one batch.

    \b
    Examples:
      agentctl create joke --subject cats --interval 2
      agentctl create joke --count 1000 --agent-id load-test
      SID=$(agentctl create persona --conversation "$CID" --name Ada --tone dry)
      agentctl create counter --config '{"start": 5}'
    """


@create.command("joke")
@click.option(
    "--subject", type=TEXT, metavar="TEXT", help="What the jokes are about (default: [runtime] default_subject)."
)
@click.option("--style", "joke_style", type=TEXT, metavar="TEXT", help="Optional style hint, e.g. 'pun'.")
@_create_options
@pass_obj
def create_joke(
    obj: Obj, /, subject: str | None, joke_style: str | None, config_json: dict[str, Any], **options: Any
) -> None:
    """Create a joke session: one joke per tick about a subject that guidance can change.

    Prints the new session id (JSON: {"session_id", "agent_id", "status"}). --agent-id
    defaults to the session id.

    \b
    Example:
      agentctl create joke --subject cats --interval 5 --session-id cats-1
    """
    given = {k: v for k, v in {"subject": subject, "style": joke_style}.items() if v is not None}
    _run_create(obj, "joke", {**config_json, **given}, options, lambda sid: sid)


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
    /,
    conversation_id: str,
    name: str,
    tone: str | None,
    cooldown: float | None,
    config_json: dict[str, Any],
    **options: Any,
) -> None:
    """Create a persona session that replies to new messages of a conversation.

    The conversation must exist (a missing one is rejected by the worker: exit 1). --agent-id
    defaults to the name as a slug ("Ada Lovelace" -> ada-lovelace).

    \b
    Example:
      agentctl create persona --conversation c-0189f3c2a1b4-3f9a2c1d --name Ada --tone dry --cooldown 2
    """
    values = {"conversation_id": conversation_id, "name": name, "tone": tone, "cooldown": cooldown}
    given = {k: v for k, v in values.items() if v is not None}
    _run_create(obj, "persona", {**config_json, **given}, options, lambda sid: slug(name) or sid)
