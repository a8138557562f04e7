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

__all__ = ["id_callback", "optional_id_callback", "parse_guidance", "parse_since_time", "slug"]


def _check(value: str, what: str) -> str:
    try:
        return validate_id(value, what)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def id_callback(what: str) -> Any:
    """A click callback validating a required id argument (session, conversation, ...)."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
        return _check(value, what)

    return callback


def optional_id_callback(what: str) -> Any:
    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        return None if value is None else _check(value, what)

    return callback


def parse_guidance(text: str) -> dict[str, Any] | str:
    """GUIDANCE is a JSON object or free text; text starting with ``{`` must be valid JSON.

    Why not fall back to free text: ``'{"subject": '`` is a broken object, not a sentence, and
    sending it as text would only get a confusing rejection from the worker later.
    """
    stripped = text.strip()
    if not stripped:
        raise click.BadParameter('guidance is empty; give a JSON object or free text such as "about cats"')
    if not stripped.startswith("{"):
        return stripped
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"starts with '{{' but is not a valid JSON object ({exc.msg}, column {exc.colno}); "
            'fix the JSON (e.g. \'{"subject": "cats"}\') or give free text such as "about cats"'
        ) from exc
    if not isinstance(value, dict):  # pragma: no cover - valid JSON starting with '{' is an object
        raise click.BadParameter("guidance JSON must be an object")
    return value


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
