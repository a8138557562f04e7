"""Pure helpers of agentctl: relative times, tables, guidance parsing, health verdicts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click
import pytest

from agentctl import output
from agentctl.daemon import health_problems
from agentctl.params import parse_guidance, slug

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(milliseconds=300), "just now"),
        (timedelta(seconds=3), "3s ago"),
        (timedelta(minutes=3, seconds=2), "3m 2s ago"),
        (timedelta(hours=5), "5h ago"),
        (timedelta(days=2, hours=4, minutes=1), "2d 4h ago"),
        (-timedelta(seconds=90), "in 1m 30s"),
    ],
)
def test_relative_time(delta: timedelta, text: str) -> None:
    assert output.relative_time(NOW - delta, NOW) == text
    assert output.relative_time(None, NOW) == "-"


def test_table_aligns_on_plain_text_even_with_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "colour_enabled", lambda: True)
    rows = [["s-1", "running", "7", "a joke\nover two lines"], ["session-two", "error", "12", "x"]]
    lines = output.table_lines(["ID", "STATUS", "N", "TEXT"], rows, colours={1: output.STATUS_COLOURS}, right=(2,))
    assert "\x1b[" in lines[1], "statuses are coloured on a terminal"
    plain = [click.unstyle(line) for line in lines]
    assert plain[0] == "ID           STATUS    N  TEXT"
    assert plain[1] == "s-1          running   7  a joke / over two lines"
    assert plain[2] == "session-two  error    12  x"
    assert all(re.sub(r"\x1b\[[0-9;]*m", "", line) == p for line, p in zip(lines, plain, strict=True))


def test_guidance_parsing() -> None:
    assert parse_guidance('  {"subject": "cats"} ') == {"subject": "cats"}
    assert parse_guidance("about cats") == "about cats"
    assert parse_guidance('[{"op": "set", "subject": "cats"}]') == [{"op": "set", "subject": "cats"}]
    assert parse_guidance("(1, 2)") == "(1, 2)", "only text starting with '{' or '[' is taken as JSON"
    for bad in ('{"subject": ', "{not json}", '{"a": 1} trailing'):
        with pytest.raises(click.BadParameter, match="not a valid JSON object"):
            parse_guidance(bad)
    with pytest.raises(click.BadParameter, match="empty"):
        parse_guidance(" \n ")


def test_persona_agent_id_slug() -> None:
    assert slug("Ada Lovelace") == "ada-lovelace"
    assert slug("  R2-D2!! ") == "r2-d2"
    assert slug("🙂") == ""


def test_health_verdict() -> None:
    """The daemon judges its health (its `problems`); agentctl adds "not ready" while it starts."""
    healthy = {"ready": True, "problems": []}
    assert health_problems(healthy) == []
    stale = {**healthy, "problems": ["worker-0 is late with its heartbeat (12.5s)"]}
    assert health_problems(stale) == ["worker-0 is late with its heartbeat (12.5s)"]
    starting = {"ready": False, "problems": ["worker-0 is not ready"]}
    assert health_problems(starting) == ["not ready (workers still starting)", "worker-0 is not ready"]


def test_status_choices_match_the_store() -> None:
    from agentctl.inspect import SESSION_STATUSES
    from agentd.store.sessions import SESSION_STATUSES as STORED

    assert SESSION_STATUSES == STORED


def test_maintenance_line_shows_what_retention_deleted() -> None:
    """`daemon status` prints the last maintenance pass from the MaintenanceReport the daemon keeps."""
    from agentctl.daemon import maintenance_summary
    from agentd.store.maintenance import MaintenanceReport, TableReport
    from agentd.store.retention import RetentionReport

    report = MaintenanceReport(
        seconds=0.25,
        actions_purged=4,
        tables=[TableReport("steps", skipped="preempted")],
        retention=RetentionReport(steps_deleted=120, sessions_purged=2, messages_deleted=7),
    )
    line = maintenance_summary({"at": "2025-01-31T12:00:00+00:00", **report.as_dict()})
    assert line == (
        "last pass 2025-01-31T12:00:00+00:00 took 0.25s; actions purged 4; steps deleted 120, sessions purged 2, "
        "messages deleted 7; compaction skipped for steps (retried next pass)"
    )
    assert "steps deleted" not in maintenance_summary(MaintenanceReport().as_dict())


def test_durations() -> None:
    from agentctl.params import parse_duration

    assert [parse_duration(None, None, v) for v in ("90", "90s", "15m", "1h30m", "7d", "2w", "0.5h")] == [
        90,
        90,
        900,
        5400,
        604_800,
        1_209_600,
        1800,
    ]
    for bad in ("", "h", "5 parsecs", "-1d"):
        with pytest.raises(click.BadParameter):
            parse_duration(None, None, bad)


def test_tables_fit_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an 80-column terminal a session list does not wrap: the agent id gives way first."""
    import os
    import shutil
    import sys

    from agentctl.output import table_lines

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a, **k: os.terminal_size((80, 24)))
    monkeypatch.setenv("NO_COLOR", "1")
    sid = "s-0189f3c2a1b4-3f9a2c1d"
    row = [sid, sid, "joke", "running", "12", "12", "3m 2s ago", "subject: a long subject about many things"]
    headers = ["SESSION", "AGENT", "TYPE", "STATUS", "TICKS", "SEQ", "UPDATED", "ABOUT"]
    lines = table_lines(headers, [row, row], right=(4, 5), shrink=(1, 2, 6))
    assert all(len(line) <= 80 for line in lines), [len(line) for line in lines]
    assert lines[1].startswith(sid + "  "), "the session id stays whole"
    assert "…" in lines[1]
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a, **k: os.terminal_size((200, 24)))
    wide = table_lines(headers, [row], right=(4, 5), shrink=(1, 2, 6))
    assert "…" not in wide[1] and row[-1] in wide[1]
