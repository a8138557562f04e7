"""What the group options resolved to, shared by every command.

Two levels of settings, both lazy. ``light()`` reads only what a client needs to reach the
daemon and the gateway (``agentd.paths``: the standard library, no pydantic-settings), which
is all a command needs when the daemon answers. ``settings()`` loads and validates the full
settings (``agentd.config``, about 100 ms) for the no-daemon path, which opens LanceDB itself.
Each no-daemon coroutine runs with ``run()``: a fresh event loop and a fresh LanceDB
connection per invocation, as LanceDB connections must not be shared across event loops.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from agentctl.errors import UsageProblem
from agentd.paths import ConfigError, LightConfig, light_config

if TYPE_CHECKING:
    from agentd.config import Settings

__all__ = ["DEFAULT_ACTION_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "Obj", "json_option", "pass_obj"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# Seconds an action command waits for the worker's acknowledgement unless --timeout says otherwise.
DEFAULT_ACTION_TIMEOUT = 30.0
# Seconds `daemon status` and the read commands wait for the daemon unless --timeout says otherwise.
DEFAULT_SOCKET_TIMEOUT = 5.0


class Obj:
    """The root context object: group options plus the settings they select."""

    def __init__(self, config: str | None, db: str | None, as_json: bool, timeout: float | None) -> None:
        self.config = config
        self.db = db
        self.json = as_json  # also set by a command's own --json
        self.timeout = timeout  # None: the command's default; also set by a command's --timeout
        self._settings: Settings | None = None
        self._light: LightConfig | None = None

    def light(self) -> LightConfig:
        """The socket, gateway and storage location, without validating the whole config."""
        if self._light is None:
            try:
                self._light = light_config(self.config, db=self.db)
            except ConfigError as exc:
                raise UsageProblem(str(exc)) from exc
        return self._light

    def socket_path(self) -> Path:
        """The daemon's control socket; a usage error (exit 2) when there is no private place for it."""
        try:
            return self.light().socket_path()
        except ConfigError as exc:
            raise UsageProblem(str(exc)) from exc

    def settings(self) -> Settings:
        """The merged settings; a bad config is a usage error (exit 2) naming file and key."""
        if self._settings is None:
            from agentd.config import ConfigError as FullConfigError
            from agentd.config import load_settings

            try:
                self._settings = load_settings(self.config, db=self.db)
            except FullConfigError as exc:
                raise UsageProblem(str(exc)) from exc
        return self._settings

    def action_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_ACTION_TIMEOUT

    def socket_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_SOCKET_TIMEOUT

    @staticmethod
    def run(coro: Coroutine[Any, Any, T]) -> T:
        import asyncio

        return asyncio.run(coro)


pass_obj = click.make_pass_decorator(Obj)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    obj = ctx.find_object(Obj)
    if value and obj is not None:
        obj.json = True


def _set_timeout(ctx: click.Context, _param: click.Parameter, value: float | None) -> None:
    obj = ctx.find_object(Obj)
    if value is not None and obj is not None:
        obj.timeout = value


def json_option(func: F) -> F:
    """``--json`` and ``--timeout`` after the command name too (``agentctl list --json``), same as the group's."""
    func = click.option(
        "--timeout",
        "timeout_flag",
        type=click.FloatRange(min=0, min_open=True),
        metavar="SECONDS",
        expose_value=False,
        callback=_set_timeout,
        help="Same as agentctl --timeout SECONDS.",
    )(func)
    return click.option(
        "--json",
        "json_flag",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print JSON (JSON lines for lists and --follow); same as agentctl --json.",
    )(func)
