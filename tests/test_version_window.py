"""Old table versions are kept by commit count on busy tables, not only by age.

Every operation pays for each version a table keeps (``agentd.store.version_window`` has the
figures), so a busy table must not keep ``cleanup_older_than`` (600 s) worth of them. Real
LanceDB tables and a real second process throughout: what must hold is that pruning that
short never fails an operation in flight and never loses a row.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import reaped, run, spawn

from agentd.queue import ActionQueue
from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.maintenance import MaintenanceReport, maintenance_loop, run_maintenance
from agentd.store.maintenance_child import MaintenanceChild
from agentd.store.version_window import VersionWindow

pytestmark = pytest.mark.timeout(120)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_follows_the_commit_rate_between_its_bounds() -> None:
    clock = _Clock()
    window = VersionWindow(keep_versions=1000, min_age=10, max_age=600, clock=clock)
    assert window.age("steps", 100) == 600, "no rate yet: the whole window"
    clock.now += 20
    assert window.age("steps", 100 + 20 * 50) == 20, "50 commits/s: 1,000 versions are 20 s"
    clock.now += 20
    assert window.age("steps", 1100 + 20 * 500) == 10, "500 commits/s: never below min_age"
    clock.now += 20
    assert window.age("steps", 11100 + 20) == 600, "1 commit/s: never above max_age"
    clock.now += 20
    assert window.age("steps", 11120) == 600, "no commit since: the whole window"
    assert window.age("actions", 5) == 600, "each table has its own rate"
    by_age = VersionWindow(keep_versions=0, min_age=10, max_age=600, clock=clock)
    by_age.age("steps", 1)
    clock.now += 1
    assert by_age.age("steps", 10_001) == 600, "keep_versions = 0: by age only"
    with pytest.raises(ValueError):
        VersionWindow(keep_versions=10, min_age=0, max_age=600)


def _manifests(db_uri: str, table: str) -> int:
    return len(os.listdir(Path(db_uri) / f"{table}.lance" / "_versions"))


def test_a_busy_table_is_pruned_to_about_keep_versions_and_keeps_every_row(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        rows = []
        for i in range(120):
            rows.append(queue.new_action("pause", f"s-{i % 9}"))
            await queue.append_many([rows[-1]])
        versions = VersionWindow(keep_versions=20, min_age=0.5, max_age=600)
        first = await run_maintenance(store, cleanup_older_than=600, versions=versions)
        assert {t.table: t.kept_seconds for t in first.tables}["actions"] == 600, "no rate yet"
        assert {t.table: t.versions_removed for t in first.tables}["actions"] == 0
        before = _manifests(db_uri, "actions")
        assert before > 120
        started = time.monotonic()
        for i in range(80):
            rows.append(queue.new_action("resume", f"s-{i % 9}"))
            await queue.append_many([rows[-1]])
        await asyncio.sleep(max(0.0, 0.6 - (time.monotonic() - started)))
        second = await run_maintenance(store, cleanup_older_than=600, versions=versions)
        actions = {t.table: t for t in second.tables}["actions"]
        assert 0.5 <= actions.kept_seconds < 600
        assert actions.versions_removed > 100, "the 120 versions before the burst are older than the window"
        assert _manifests(db_uri, "actions") < 80, "fewer than the burst alone: the old ones are gone"
        stored = await queue.get_many([r.action_id for r in rows])
        assert len(stored) == 200 and await store.actions.count_rows() == 200
        quiet = {t.table: t.kept_seconds for t in second.tables}["conversations"]
        assert quiet == 600, "a table that did not commit keeps the whole window"

    run(scenario())


def test_the_maintenance_child_keeps_the_rates_between_passes(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        window = {"keep_versions": 10, "min_age": 0.5, "max_age": 600.0}
        child = MaintenanceChild(db_uri, 4)
        try:
            for i in range(40):
                await queue.append_many([queue.new_action("pause", f"s-{i}")])
            await child.run(cleanup_older_than=600, action_retention=None, retention=None, versions=window)
            for i in range(40):
                await queue.append_many([queue.new_action("resume", f"s-{i}")])
            await asyncio.sleep(0.6)
            report = await child.run(cleanup_older_than=600, action_retention=None, retention=None, versions=window)
        finally:
            await child.close()
        actions = {t.table: t for t in report.tables}["actions"]
        assert actions.kept_seconds < 600 and actions.versions_removed > 30
        assert await store.actions.count_rows() == 80

    run(scenario())


def _stream_while_pruning(
    db_uri: str, tmp_path: Path, min_age: float, *, stops: int, seconds: float, until_error: bool = False
) -> tuple[dict[str, list[str]], int, float]:
    """Run the control stream in another process, prune continuously, and SIGSTOP it ``stops``
    times for about 2 s (an operation in flight on a version that gets older than ``min_age``);
    it runs for ``seconds``, and until every stop is done and it has run 6 s after the last one,
    however slow the machine. With ``until_error``, the stops end at the first error it reports.
    Returns what the stream did, how many versions were pruned, and the longest stop."""

    async def scenario() -> tuple[dict[str, list[str]], int, float]:
        store = await Store.open(db_uri, 4)
        await store.actions.count_rows()
        versions = VersionWindow(keep_versions=10, min_age=min_age, max_age=600)
        log = tmp_path / "stream.log"
        removed = 0
        with (
            log.open("wb") as stderr,
            reaped(
                spawn(
                    "control_stream.py",
                    db_uri,
                    str(seconds * 10),  # a cap only: we close its stdin after the stops and ``seconds``
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            ) as procs,
        ):
            stream = procs[0]
            assert stream.stdin is not None
            started = time.monotonic()
            stopped = 0
            planned = stops
            longest = 0.0
            resumed = started  # when it last ran again after a stop
            while stream.poll() is None:
                now = time.monotonic()
                if until_error and stopped and "stream error:" in log.read_text(errors="replace"):
                    planned = stopped  # what we wait for has shown: no more stops
                if stopped == planned and now - started > seconds and now - resumed > 6:
                    stream.stdin.close()  # every stop done, and it ran long enough: it prints and exits
                    stream.stdin = None  # (communicate() below reads what it prints; no stdin left to flush)
                    break
                if stopped < planned and time.monotonic() - started > 2 + 2.5 * stopped:
                    os.kill(stream.pid, signal.SIGSTOP)
                    stopped_at = time.monotonic()
                    for _ in range(4):  # commits (our compactions) and prunes while it is stopped
                        await store.actions.add(
                            ActionRecord.to_arrow([ActionQueue(store.actions, 4).new_action("pause", "x")])
                        )
                        report = await run_maintenance(store, cleanup_older_than=600, versions=versions)
                        removed += {t.table: t.versions_removed for t in report.tables}["actions"]
                        await asyncio.sleep(0.5)
                    os.kill(stream.pid, signal.SIGCONT)
                    resumed = time.monotonic()
                    longest = max(longest, resumed - stopped_at)
                    stopped += 1
                report = await run_maintenance(store, cleanup_older_than=600, versions=versions)
                removed += {t.table: t.versions_removed for t in report.tables}["actions"]
                await asyncio.sleep(0.1)
            out, _ = stream.communicate(timeout=30)
        assert stream.returncode == 0, log.read_text()[-2000:]
        result: dict[str, list[str]] = json.loads(out)
        assert len(result["done"]) > 50, "the stream ran"
        stored = await ActionQueue(store.actions, 4).get_many(result["done"])
        assert len(stored) == len(result["done"]) and all(r.status == "done" for r in stored.values())
        return result, removed, longest

    return run(scenario())


def test_pruning_at_the_minimum_age_fails_no_operation_of_another_process(db_uri: str, tmp_path: Path) -> None:
    result, removed, longest = _stream_while_pruning(db_uri, tmp_path, 10.0, stops=2, seconds=20.0)
    assert longest < 10.0, f"a stop of {longest:.1f}s is not below the minimum age: the premise does not hold"
    assert result["errors"] == []
    # versions of the stream's own operations were pruned while it ran (a handful per second of
    # it, once the first are older than the minimum age)
    assert removed > 20, f"only {removed} versions were pruned while it ran: the premise does not hold"


@pytest.mark.hazard  # not in the default suite: on a loaded machine the loss may not show (pyproject.toml)
def test_without_a_minimum_age_a_stopped_operation_would_fail(db_uri: str, tmp_path: Path) -> None:
    # A stop shows the loss when it catches an operation in flight: about two times in three on
    # an idle machine, less on a loaded one (more of the stream's time is spent outside LanceDB).
    # So it stops the stream again until the loss shows, at most twelve times.
    result, _, _ = _stream_while_pruning(db_uri, tmp_path, 0.001, stops=12, seconds=10.0, until_error=True)
    assert result["errors"], "the hazard min_age guards against did not show: this test proves nothing"


def test_the_maintenance_loop_prunes_busy_tables_by_their_rate(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        reports: list[MaintenanceReport] = []
        stop = asyncio.Event()
        loop = asyncio.create_task(
            maintenance_loop(
                store,
                interval=0.5,
                cleanup_older_than=600,
                action_retention=None,
                stop=stop,
                on_report=reports.append,
                keep_versions=10,
                min_version_age=0.5,
            )
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await queue.append_many([queue.new_action("pause", "s-1")])
                kept = [t for r in reports for t in r.tables if t.table == "actions" and t.versions_removed]
                if kept:
                    break
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await loop
        assert kept and kept[0].kept_seconds < 600, [r.as_dict() for r in reports]

    run(scenario())
