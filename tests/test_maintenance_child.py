"""Maintenance passes run in a child process, so their memory leaves with it (issue 11).

The supervisor's RSS grew by ~250 MB at maintenance passes (212 MB -> 1.37 GB in 30 minutes);
``bench/maintenance_rss.py`` measures it. These tests check the mechanism with real processes:
the pass runs in another process on the same database, the child is reused, replaced past its
memory cap or when it died, and it never outlives the process that started it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run
from test_retention import NOW, _populate

from agentd.config import RetentionConfig
from agentd.store import Store
from agentd.store.maintenance import MaintenanceReport, maintenance_loop
from agentd.store.maintenance_child import MAINTENANCE_NICE, MaintenanceChild

pytestmark = pytest.mark.timeout(180)

LIMITS = RetentionConfig(steps_per_session=10, stopped_session_max_age=3600)


def test_pass_runs_in_a_reused_child_and_deletes_there(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 16)
        await _populate(store)
        child = MaintenanceChild(db_uri, 16)
        try:
            report = await child.run(cleanup_older_than=600, action_retention=None, retention=LIMITS)
            assert child.proc is not None and child.proc.pid != os.getpid()
            first = child.proc.pid
            # busy: 20 over its 10; gone: purged with its 3 steps
            assert report.retention is not None and report.retention.steps_deleted == 20 + 3
            assert report.retention.sessions_purged == 1
            assert {t.table for t in report.tables} >= {"steps", "sessions", "actions"}
            assert await store.steps.count_rows("session_id = 'busy'") == 10  # seen by this process
            again = await child.run(cleanup_older_than=600, action_retention=None, retention=LIMITS)
            assert again.retention is not None and again.retention.steps_deleted == 0
            assert child.proc is not None and child.proc.pid == first and child.started == 1
            # Background work: the child and every thread it started (LanceDB's) run below our
            # priority, so control actions and ticks are not kept waiting behind a pass.
            ours = os.getpriority(os.PRIO_PROCESS, 0)
            tids = [int(t) for t in os.listdir(f"/proc/{first}/task")]
            assert len(tids) > 1, "LanceDB's runtime threads are running"
            assert {os.getpriority(os.PRIO_PROCESS, tid) for tid in tids} == {min(19, ours + MAINTENANCE_NICE)}
        finally:
            await child.close()
        assert child.proc is None

    run(scenario())


def test_child_over_its_memory_cap_or_killed_is_replaced(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 16)
        await _populate(store)
        capped = MaintenanceChild(db_uri, 16, max_rss=1)  # every child is "too big" after a pass
        await capped.run(cleanup_older_than=600, action_retention=None, retention=None)
        assert capped.proc is None  # replaced before the next pass
        await capped.run(cleanup_older_than=600, action_retention=None, retention=None)
        assert capped.started == 2

        child = MaintenanceChild(db_uri, 16)
        try:
            await child.run(cleanup_older_than=600, action_retention=None, retention=None)
            assert child.proc is not None
            child.proc.kill()  # the fault between passes (OOM killer, kill -9): replaced at the next
            await child.proc.wait()
            await child.run(cleanup_older_than=600, action_retention=None, retention=None)
            assert child.started == 2 and child.proc is not None
            child.proc.kill()  # and during a pass (not reaped yet: the request goes to a dying child)
            with pytest.raises(RuntimeError, match="maintenance child"):
                await child.run(cleanup_older_than=600, action_retention=None, retention=None)
            report = await child.run(cleanup_older_than=600, action_retention=None, retention=LIMITS)
            assert report.retention is not None and child.started == 3
        finally:
            await child.close()

    run(scenario())


def test_loop_reports_passes_from_the_child_and_closes_it(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 16)
        await _populate(store)
        stop = asyncio.Event()
        reports: list[MaintenanceReport] = []

        def on_report(report: MaintenanceReport) -> None:
            reports.append(report)
            if len(reports) == 2:
                stop.set()

        await asyncio.wait_for(
            maintenance_loop(
                store,
                interval=0.05,
                cleanup_older_than=600,
                action_retention=None,
                stop=stop,
                on_report=on_report,
                retention=LIMITS,
            ),
            120,
        )
        first, second = (r.retention for r in reports)
        assert first is not None and first.steps_deleted == 23
        assert second is not None and second.steps_deleted == 0
        assert _maintenance_children() == []  # closed on the way out

    run(scenario())


def _maintenance_children() -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "agentd.store.maintenance_child"], capture_output=True)
    return [int(pid) for pid in out.stdout.split()]


PARENT = """
import asyncio, sys
from agentd.store.maintenance_child import MaintenanceChild
async def main():
    child = MaintenanceChild(sys.argv[1], 16)
    await child.run(cleanup_older_than=600, action_retention=None, retention=None)
    print(child.proc.pid, flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


def test_child_dies_with_a_parent_killed_by_sigkill(db_uri: str, tmp_path: Path) -> None:
    async def create() -> None:
        await Store.open(db_uri, 16)

    run(create())
    parent = subprocess.Popen([sys.executable, "-c", PARENT, db_uri], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        os.kill(child_pid, 0)  # alive while its parent is
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(child_pid):
            time.sleep(0.1)
        assert not _alive(child_pid), "the maintenance child outlived its parent"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


_ = NOW  # the populated data is stamped relative to test_retention.NOW
