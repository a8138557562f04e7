"""LanceDB's own messages go through agentd's logging, without Rust source paths at default level.

LanceDB's Rust core logs through an env_logger it installs when ``lancedb`` is imported
(filtered by ``$LANCEDB_LOG``, default ``warn``), straight to stderr with ``.rs`` paths; its
Python layer uses ``warnings``. Real LanceDB in a fresh interpreter each time, since the Rust
logger is configured once per process, at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import asyncio, os, sys
from datetime import timedelta
from agentd.config import LoggingConfig
from agentd.logsetup import configure_logging
configure_logging(LoggingConfig(level=sys.argv[2]), role="supervisor")
assert "lancedb" not in sys.modules
import lancedb

async def main():
    db = await lancedb.connect_async(sys.argv[1])
    table = await db.create_table("t", data=[{"a": 0}])
    for i in range(4):
        await table.add([{"a": i}])
    # A compaction (Rust INFO lines) with a zero cleanup window (a Python UserWarning).
    await table.optimize(cleanup_older_than=timedelta(0))
    print("LANCEDB_LOG=" + os.environ["LANCEDB_LOG"])

asyncio.run(main())
"""


def _run(tmp_path: Path, level: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LANCEDB_", "_AGENTD_"))}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / f"db-{level}"), level],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_default_level_has_no_rust_paths_and_warnings_are_one_log_line(tmp_path: Path) -> None:
    done = _run(tmp_path, "INFO")
    assert done.returncode == 0, done.stderr
    assert "LANCEDB_LOG=error" in done.stdout  # Rust warnings (expected, retried conflicts) silenced
    assert ".rs:" not in done.stderr and "lance::" not in done.stderr and "\x1b[" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "cleanup_older_than" in line]
    assert len(lines) == 1, done.stderr
    assert " WARNING supervisor py.warnings: UserWarning: optimize(cleanup_older_than=0)" in lines[0]
    assert "await table.optimize" not in done.stderr  # the echoed source line is gone


def test_debug_level_shows_lancedb_messages(tmp_path: Path) -> None:
    """The filter really reaches LanceDB's logger: at DEBUG its compaction messages appear."""
    done = _run(tmp_path, "DEBUG")
    assert done.returncode == 0, done.stderr
    assert "LANCEDB_LOG=info" in done.stdout
    assert "lance::dataset::optimize" in done.stderr
    assert "\x1b[" not in done.stderr  # LANCEDB_LOG_STYLE=never: no colour codes in the journal


@pytest.mark.parametrize("value", ["info", "off"])
def test_operator_choice_of_lancedb_log_is_kept(tmp_path: Path, value: str) -> None:
    done = _run(tmp_path, "INFO", LANCEDB_LOG=value)
    assert done.returncode == 0, done.stderr
    assert f"LANCEDB_LOG={value}" in done.stdout
    assert ("lance::dataset::optimize" in done.stderr) == (value == "info")


def test_the_cli_imports_no_lancedb_before_logging_is_configured() -> None:
    """`agentd run` configures logging before importing the supervisor: the CLI module must not
    import lancedb itself, or $LANCEDB_LOG would be read before agentd sets it."""
    code = "import sys, agentd.cli, agentd.logsetup; print('lancedb' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
