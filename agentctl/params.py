"""Argument parsing shared by the commands: ids, guidance, times.

Everything here fails as a click usage error (exit 2) before anything is enqueued or read, so
a typo never becomes a queued action that a worker then rejects.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import click

from agentd.ids import validate_id

__all__ = [
    "TEXT",
    "FreeText",
    "check_id",
    "check_text",
    "id_callback",
    "ids_callback",
    "optional_id_callback",
    "parse_duration",
    "parse_guidance",
    "parse_since_time",
    "slug",
]

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def check_text(value: str, what: str) -> str:
    """Refuse text that is not valid Unicode, before it reaches JSON, Arrow or a terminal.

    Python decodes argv bytes that are not valid UTF-8 (``$'\\xff'``) to lone surrogates
    (surrogateescape); such a string cannot be encoded as UTF-8, so storing or printing it
    would fail later with a traceback. The message names the position and escapes the value,
    so the error itself never prints the bad character.
    """
    for index, char in enumerate(value):
        if "\ud800" <= char <= "\udfff":
            shown = _escaped(value)
            raise click.BadParameter(
                f'{what} is not valid UTF-8 text (bad byte at character {index + 1}: "{shown[:80]}"); '
                "check the terminal's or the script's encoding"
            )
    return value


def _escaped(value: str) -> str:
    """The text with undecodable bytes as ``\\xff`` (argv) or other surrogates as ``\\ud800`` (JSON)."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


class FreeText(click.ParamType[str, Any]):
    """A ``str`` that must be valid Unicode text (see ``check_text``); a usage error (exit 2) otherwise."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = value if isinstance(value, str) else str(value)
        try:
            return check_text(text, "the value")
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


TEXT = FreeText()


def check_id(value: str, what: str) -> str:
    """An id (session, agent, ...) or a usage error naming what is wrong with it."""
    try:
        return validate_id(value, what)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


_check = check_id


def id_callback(what: str) -> Any:
    """A click callback validating a required id argument (session, conversation, ...)."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
        return _check(value, what)

    return callback


def ids_callback(what: str) -> Any:
    """A click callback validating every value of a ``nargs=-1`` id argument (duplicates dropped)."""

    def callback(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_check(value, what) for value in values))

    return callback


def optional_id_callback(what: str) -> Any:
    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        return None if value is None else _check(value, what)

    return callback


def parse_duration(_ctx: click.Context | None, _param: click.Parameter | None, value: str | None) -> float | None:
    """``90`` (seconds), ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or a sum such as ``1h30m``."""
    if value is None:
        return None
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if not text or _DURATION.sub("", text) != "":
        raise click.BadParameter(f"{value!r} is not a duration such as 90s, 15m, 12h, 7d or 1h30m")
    return float(sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION.findall(text)))


def parse_guidance(text: str) -> dict[str, Any] | list[Any] | str:
    """GUIDANCE is a JSON object, a JSON array (of operations), or free text.

    Text starting with ``{`` or ``[`` must be valid JSON. Why not fall back to free text:
    ``'{"subject": '`` is a broken object, not a sentence, and sending it as text would only
    get a confusing rejection from the worker later. What the operations mean is the
    worker's business: they are passed through as given.
    """
    check_text(text, "guidance")
    stripped = text.strip()
    if not stripped:
        raise click.BadParameter('guidance is empty; give a JSON object or free text such as "about cats"')
    if not stripped.startswith(("{", "[")):
        return stripped
    what = "object" if stripped.startswith("{") else "array"
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"starts with '{stripped[0]}' but is not a valid JSON {what} ({exc.msg}, column {exc.colno}); "
            'fix the JSON (e.g. \'{"subject": "cats"}\') or give free text such as "about cats"'
        ) from exc
    if not isinstance(value, dict | list):  # pragma: no cover - valid JSON starting with '{'/'[' is one
        raise click.BadParameter(f"guidance JSON must be an {what}")
    if isinstance(value, list) and not value:
        raise click.BadParameter("the guidance array is empty; give at least one operation")
    _check_json(value)  # JSON escapes such as "\\ud800" decode to lone surrogates too
    return value


def _check_json(value: Any) -> None:
    if isinstance(value, str):
        check_text(value, "a string in the guidance JSON")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key)
            _check_json(item)
    elif isinstance(value, list):
        for item in value:
            _check_json(item)


def parse_since_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """ISO 8601 date or time; without an offset it is local time (what a person types)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time such as 2025-01-31T12:00:00+00:00") from exc
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


def slug(name: str) -> str:
    """A persona name as an agent id: ``Ada Lovelace`` -> ``ada-lovelace`` ('' if nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64]
