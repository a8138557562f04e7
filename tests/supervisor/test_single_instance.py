"""One supervisor per database (issue 11, finding 6): a lock that lives with the database.

The control socket used to be the only guard, and its path differs between the systemd unit
and a manual `agentd run`; two supervisors on one database then fenced out each other's
workers. These start two real daemons on one database with different socket paths.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from agentd.store import Store
from agentd.supervision.dblock import LOCK_NAME, DatabaseInUse, SupervisorLease, SupervisorLock
from agentd.supervision.supervisor import EXIT_LOCKED

from .daemon import Daemon, running, write_config


def _second_config(tmp_path: Path, config: Path) -> Path:
    """The same database, another control socket: what a manual run beside the unit looks like."""
    other = tmp_path / "manual.toml"
    other.write_text(config.read_text().replace("[daemon]\n", f'[daemon]\ncontrol_socket = "{tmp_path / "m.sock"}"\n'))
    return other


def test_second_supervisor_on_the_same_database_exits_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with running(config, tmp_path / "first.log") as first:
        before = {i: (w["pid"], w["epoch"]) for i, w in first.workers().items()}
        lock = tmp_path / "db" / LOCK_NAME
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert json.loads(lock.read_text())["pid"] == first.proc.pid
        second = Daemon(_second_config(tmp_path, config), tmp_path / "second.log")
        try:
            started = time.monotonic()
            code = second.wait(timeout=30)
            took = time.monotonic() - started
        finally:
            second.kill_all()
        assert code == EXIT_LOCKED, second.tail()
        assert took < 15, f"the second supervisor took {took:.1f}s to give up"
        assert f"pid {first.proc.pid}" in second.tail(), second.tail()
        assert "started worker" not in second.tail(), "the second supervisor must start no child"
        time.sleep(1.0)
        after = {i: (w["pid"], w["epoch"]) for i, w in first.workers().items()}
        assert after == before, "the first supervisor's workers were not disturbed"
        assert first.status() is not None and first.proc.poll() is None


def test_lock_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    """flock dies with its process: a supervisor killed with SIGKILL never blocks its successor."""
    config = write_config(tmp_path, warm_spare="false")
    with running(config, tmp_path / "daemon.log") as first:
        first.kill_all()
    with running(config, tmp_path / "daemon.log") as again:
        assert again.status() is not None


def test_lock_in_process(tmp_path: Path) -> None:
    first = SupervisorLock(tmp_path / "db")
    first.acquire()
    try:
        with pytest.raises(DatabaseInUse, match=f"pid {os.getpid()}"):
            SupervisorLock(tmp_path / "db").acquire()
    finally:
        first.release()
    again = SupervisorLock(tmp_path / "db")
    again.acquire()
    again.release()
    again.release()  # idempotent


def test_object_store_lease_in_the_meta_table(tmp_path: Path) -> None:
    """The lease logic an object-store database uses, run against a real (local) LanceDB."""

    async def go() -> None:
        store = await Store.open(str(tmp_path / "db"), 16)
        first = SupervisorLease(store.meta, duration=1.0)
        await first.acquire()
        with pytest.raises(DatabaseInUse, match="holds the lease"):
            await SupervisorLease(store.meta, duration=1.0).acquire()
        assert await first.renew()
        await asyncio.sleep(1.3)  # first stops renewing: its lease expires
        second = SupervisorLease(store.meta, duration=5.0)
        await second.acquire()
        assert not await first.renew(), "a supervisor whose lease was taken must learn it"
        lost: list[bool] = []
        keeper = asyncio.create_task(first.keep(on_lost=lambda: lost.append(True)))
        await asyncio.wait_for(keeper, 5)
        assert lost == [True]
        await second.release()
        third = SupervisorLease(store.meta)
        await third.acquire()  # released: taken at once
        rows = (await store.meta.query().where("key = 'supervisor_lease'").to_arrow()).num_rows
        assert rows == 1

    asyncio.run(go())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def test_a_new_supervisor_starts_no_worker_while_the_old_ones_still_run(tmp_path: Path) -> None:
    """SIGKILL the supervisor, start a new one at once: its workers come up only after the orphans exit."""
    config = write_config(tmp_path, warm_spare="false")
    first = Daemon(config, tmp_path / "first.log")
    orphans: list[int] = []
    try:
        first.wait_ready()
        orphans = [w["pid"] for w in first.workers().values()]
        for pid in orphans:
            os.kill(pid, signal.SIGSTOP)  # they cannot notice their supervisor's death for a while
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        with running(config, tmp_path / "second.log", wait=False) as second:
            # Until it says so (its start imports LanceDB: seconds on a loaded machine), then a
            # moment more: all that time the old workers are stopped, and no new one may start.
            deadline = time.monotonic() + 60
            while "waiting for the workers of a previous supervisor" not in second.tail():
                assert time.monotonic() < deadline, "the new supervisor never said it waits for the old workers"
                time.sleep(0.1)
            time.sleep(1.0)
            assert all(_alive(pid) for pid in orphans)
            status = second.status()
            assert status is None or not [c for c in status["children"] if c["role"] == "worker"], (
                "no worker may start while the previous workers still run"
            )
            for pid in orphans:
                os.kill(pid, signal.SIGCONT)  # now they see EOF and stop (quickly: orphaned)
            started = time.monotonic()
            second.wait_ready(timeout=60)
            assert not any(_alive(pid) for pid in orphans), "the new workers started after the old ones exited"
            assert time.monotonic() - started < 20
    finally:
        for pid in orphans:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        first.kill_all()
