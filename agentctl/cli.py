"""The ``agentctl`` command: the control plane a person (or a script) uses.

Group options come before the command (``agentctl --config C --db URI --json --timeout S
COMMAND``), as for ``agentd``, so every command sees the same settings; ``--json`` and
``--timeout`` are also accepted after the command. Errors are raised as ``CtlError``
subclasses and turned into a message and an exit code here, in one place (see
``agentctl.errors`` for the codes).

Importing this module (what every command pays) imports click only; a command's module is
imported when that command runs (``COMMANDS``), and the daemon path of a command adds pydantic
and the protocol models: LanceDB and the rest of agentd load only on the no-daemon path.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

import click

from agentctl.context import Obj
from agentctl.errors import CtlError
from agentctl.output import emit_json
from agentd import __version__

__all__ = ["cli", "main"]

# Words people try that are not commands, and what they probably want (click would suggest
# the nearest spelling instead: `stop` -> `steps`).
SUGGESTIONS = {
    "stop": "pause (stop ticking, keep the session) or destroy (end it for good)",
    "kill": "destroy",
    "delete": "destroy (end a session) or purge (delete a finished one)",
    "remove": "destroy (end a session) or purge (delete a finished one)",
    "rm": "destroy (end a session) or purge (delete a finished one)",
    "start": "resume (a paused session) or create (a new one)",
    "run": "create (a new session); the daemon itself is `agentd run`",
    "guide": "interrupt",
    "show": "status",
    "ls": "list",
    "ps": "list",
    "logs": "steps (with --follow to tail them)",
    "tail": "steps --follow",
    "new": "create",
}


# Command name -> "module:attribute", in the order `agentctl --help` lists them. Imported on use:
# `agentctl pause` does not pay for the modules of `purge`, `conversation` or `create`.
COMMANDS = {
    "create": "agentctl.create:create",
    "pause": "agentctl.actions:pause",
    "resume": "agentctl.actions:resume",
    "interrupt": "agentctl.actions:interrupt",
    "destroy": "agentctl.actions:destroy",
    "cancel": "agentctl.actions:cancel",
    "list": "agentctl.inspect:list_command",
    "status": "agentctl.inspect:status",
    "steps": "agentctl.inspect:steps",
    "actions": "agentctl.inspect:actions_command",
    "types": "agentctl.inspect:types_command",
    "purge": "agentctl.purge:purge",
    "conversation": "agentctl.conversation:conversation",
    "daemon": "agentctl.daemon:daemon",
}


class AgentctlGroup(click.Group):
    """Maps ``CtlError`` to its message and exit code for every subcommand, nested ones too;
    loads each command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CtlError as exc:
            obj = ctx.find_object(Obj)
            if obj is not None and obj.json:
                emit_json(exc.as_json())
            click.echo(f"agentctl: {exc.message}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from exc

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if name in SUGGESTIONS and self.get_command(ctx, name) is None:
            ctx.fail(f"No such command '{name}'. Did you mean {SUGGESTIONS[name]}?")
        return super().resolve_command(ctx, args)


@click.group(cls=AgentctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="AGENTD_CONFIG",
    help="Config file (default: $AGENTD_CONFIG, ./config.toml, /etc/agentd/config.toml, else built-in defaults).",
)
@click.option("--db", "db", metavar="URI", help="LanceDB directory or URI; overrides [storage] uri.")
@click.option("--json", "as_json", is_flag=True, help="Machine output: one JSON object per result (JSON lines).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Wait this long for an action's acknowledgement (default 30) or the daemon's answer (default 5).",
)
@click.version_option(__version__, prog_name="agentctl")  # no package-metadata lookup
@click.pass_context
def cli(ctx: click.Context, config: str | None, db: str | None, as_json: bool, timeout: float | None) -> None:
    """agentctl: create, steer and watch agentd sessions.

    Action commands (create, pause, resume, interrupt, destroy) go to the daemon, which queues
    them and pushes back the worker's acknowledgement; without a daemon they are queued in the
    database directly (said at once) and wait up to --timeout for a worker. They take one
    session id, several, or a selector (--agent-id, --type, --status, --all). Exit codes: 0 ok,
    1 rejected or failed, 2 usage error, 3 session/conversation/database not found, 4 timed
    out (the action stays queued), 5 daemon not reachable, 130 Ctrl-C.

    \b
    Examples:
      SID=$(agentctl create joke --subject cats)
      agentctl create joke --count 100 --agent-id load
      agentctl interrupt "$SID" "about dogs" --now
      agentctl pause --agent-id load --yes
      agentctl steps "$SID" --follow
      agentctl status "$SID" --json
      agentctl actions; agentctl cancel ACTION_ID
      agentctl purge --stopped-before 7d --yes
      agentctl daemon status
    Shell completion (bash): eval "$(_AGENTCTL_COMPLETE=bash_source agentctl)"
    """
    ctx.obj = Obj(config, db, as_json, timeout)


def main() -> None:
    # LanceDB's Rust core prints its warnings to stderr with source paths unless told otherwise
    # before it is imported (only the no-daemon path imports it): errors only, as the daemon
    # does at its default level (agentd.logsetup); an operator's own $LANCEDB_LOG wins.
    os.environ.setdefault("LANCEDB_LOG", "error")
    os.environ.setdefault("LANCEDB_LOG_STYLE", "never")
    logging.basicConfig(level=logging.WARNING, format="agentctl: %(levelname)s %(name)s: %(message)s")
    cli(prog_name="agentctl")
