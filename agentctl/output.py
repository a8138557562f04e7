"""Human and JSON output: aligned tables, relative times, colour only on a terminal.

JSON output is one compact object per line so that ``--follow`` streams and lists both read as
JSON lines. Human output pads on the plain text first and colours afterwards, so ANSI codes
never skew the alignment; colour is off when stdout is not a terminal or ``NO_COLOR`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click

__all__ = [
    "STATUS_COLOURS",
    "clock",
    "colour_enabled",
    "emit_json",
    "human_duration",
    "one_line",
    "relative_time",
    "style",
    "table_lines",
]

# On a terminal: the narrowest the last column gets, and the narrowest a shrunk column gets.
LAST_MIN = 20
LAST_DROP = 4  # narrower than this, the last column is left out rather than wrap every row
SHRINK_MIN = 8

STATUS_COLOURS: Mapping[str, str] = {
    "running": "green",
    "ok": "green",
    "done": "green",
    "paused": "yellow",
    "starting": "cyan",
    "stopping": "cyan",
    "info": "blue",
    "stopped": "bright_black",
    "error": "red",
    "failed": "red",
}


def colour_enabled() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def style(text: str, colour: str | None = None, *, bold: bool = False) -> str:
    if not colour_enabled() or (colour is None and not bold):
        return text
    return click.style(text, fg=colour, bold=bold)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":")))


def human_duration(seconds: float) -> str:
    """``42s``, ``3m 2s``, ``5h 7m``, ``2d 4h``: two units at most, for people."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def relative_time(when: datetime | None, now: datetime | None = None) -> str:
    """``3s ago`` / ``in 2m`` / ``-``; sub-second differences read ``just now``."""
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    delta = (now - when).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"{human_duration(delta)} ago" if delta > 0 else f"in {human_duration(-delta)}"


def clock(when: datetime) -> str:
    """Local wall-clock time with milliseconds, for streams where "ago" would always read 0s."""
    return when.astimezone().strftime("%H:%M:%S.%f")[:-3]


def one_line(text: str | None, width: int | None = None) -> str:
    """Collapse newlines (jokes have several) and cut to ``width`` with an ellipsis."""
    flat = " / ".join(part.strip() for part in (text or "").splitlines() if part.strip())
    if width is not None and len(flat) > width:
        return flat[: max(0, width - 1)] + "…"
    return flat


def table_lines(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    colours: Mapping[int, Mapping[str, str]] | None = None,
    right: Sequence[int] = (),
    min_widths: Mapping[int, int] | None = None,
    header: bool = True,
    shrink: Sequence[int] = (),
) -> list[str]:
    """Aligned columns that fit the terminal when on a terminal (never wrapped rows).

    ``colours`` maps a column index to value -> colour (statuses); ``right`` right-aligns
    numeric columns; ``min_widths`` keeps a streamed table's columns steady between batches.
    On a terminal the last column is cut to what is left of its width; when even that would
    leave it less than ``LAST_MIN`` characters, the ``shrink`` columns (in that order) are cut
    first, each to at least ``SHRINK_MIN``, with an ellipsis; the last column gets what is left,
    and is left out when that is under ``LAST_DROP``. Off a terminal nothing is cut: scripts
    get whole values.
    """
    colours = colours or {}
    widths = [len(h) if header else 0 for h in headers]
    for index, minimum in (min_widths or {}).items():
        widths[index] = max(widths[index], minimum)
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell))
    last_width: int | None = None
    cut: dict[int, int] = {}
    if sys.stdout.isatty():
        columns = shutil.get_terminal_size().columns
        for index in shrink:
            excess = sum(w + 2 for w in widths[:-1]) + LAST_MIN - columns
            if excess <= 0:
                break
            if index < len(widths) - 1 and widths[index] > SHRINK_MIN:
                narrower = max(SHRINK_MIN, widths[index] - excess)
                cut[index] = widths[index] = narrower
        last_width = columns - sum(w + 2 for w in widths[:-1])

    def render(cells: Sequence[str], is_header: bool) -> str:
        parts = []
        for index, cell in enumerate(cells):
            if index == len(cells) - 1:
                if last_width is not None and last_width < LAST_DROP:  # no room at all: left out
                    continue
                shown = one_line(cell, last_width)
                parts.append(style(shown, bold=True) if is_header else shown)
                continue
            if index in cut and len(cell) > cut[index] and not is_header:
                cell = cell[: cut[index] - 1] + "…"
            elif index in cut and is_header:
                cell = cell[: cut[index]]
            padded = cell.rjust(widths[index]) if index in right else cell.ljust(widths[index])
            colour = None if is_header else colours.get(index, {}).get(cell)
            parts.append(style(padded, colour, bold=is_header))
        return "  ".join(parts).rstrip()

    lines = [render(headers, True)] if header else []
    lines.extend(render(row, False) for row in rows)
    return lines
