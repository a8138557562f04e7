"""Literals for LanceDB (DataFusion) filter strings, and deleting by a filter.

LanceDB filters are SQL text; every value that reaches one goes through these helpers so that
an id containing a quote can neither break a query nor widen it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["delete_where", "sql_in", "sql_str", "sql_ts"]


def sql_str(value: str) -> str:
    """A quoted string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_ts(value: datetime) -> str:
    """A timestamp literal comparable with ``timestamp[us, UTC]`` columns."""
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return f"TIMESTAMP '{value.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"


def sql_in(column: str, values: Iterable[str | int]) -> str:
    """``column IN (...)``; an empty set matches nothing."""
    items = [sql_str(v) if isinstance(v, str) else str(int(v)) for v in values]
    if not items:
        return "FALSE"
    return f"{column} IN ({', '.join(items)})"


async def delete_where(table: Any, where: str) -> int:
    """Delete the rows matching ``where``; returns how many.

    Counts first: a LanceDB delete commits a new table version even when nothing matches, and
    maintenance runs these every pass.
    """
    matching = int(await table.count_rows(where))
    if matching:
        await table.delete(where)
    return matching
