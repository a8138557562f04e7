"""What the group options resolved to, shared by every command.

Settings load lazily so that ``--help`` and shell completion never read a config file or import
LanceDB (importing it costs about a second). Each command runs its coroutine with ``run()``: a
fresh event loop and a fresh LanceDB connection per invocation, as LanceDB connections must not
be shared across event loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from agentctl.errors import UsageProblem
from agentd.config import ConfigError, Settings, load_settings

__all__ = ["DEFAULT_ACTION_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "Obj", "json_option", "pass_obj"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# Seconds an action command waits for the worker's acknowledgement unless --timeout says otherwise.
DEFAULT_ACTION_TIMEOUT = 30.0
# Seconds `daemon status` waits for the control socket unless --timeout says otherwise.
DEFAULT_SOCKET_TIMEOUT = 5.0


class Obj:
    """The root context object: group options plus the settings they select."""

    def __init__(self, config: str | None, db: str | None, as_json: bool, timeout: float | None) -> None:
        self.config = config
        self.db = db
        self.json = as_json  # also set by a command's own --json
        self.timeout = timeout  # None: the command's default
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        """The merged settings; a bad config is a usage error (exit 2) naming file and key."""
        if self._settings is None:
            try:
                self._settings = load_settings(self.config, db=self.db)
            except ConfigError as exc:
                raise UsageProblem(str(exc)) from exc
        return self._settings

    def action_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_ACTION_TIMEOUT

    def socket_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_SOCKET_TIMEOUT

    @staticmethod
    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)


pass_obj = click.make_pass_decorator(Obj)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    obj = ctx.find_object(Obj)
    if value and obj is not None:
        obj.json = True


def json_option(func: F) -> F:
    """``--json`` after the command name too (``agentctl list --json``), same as the group's."""
    return click.option(
        "--json",
        "json_flag",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print JSON (JSON lines for lists and --follow); same as agentctl --json.",
    )(func)
