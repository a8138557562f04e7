"""``agentctl pause`` waiting for its acknowledgement while the daemon is killed and restarted.

Issue: "Supervisor restarted while clients wait: they fall back or time out with exit 4; no
action lost or applied twice." The only worker is stopped (SIGSTOP) so that the pause is queued
but not applied while agentctl waits; then the whole daemon is killed (SIGKILL, its process
group) and a new one started on the same database. agentctl, a real process, must either report
success because the action really was applied (it falls back to reading the action's row), or
exit 4 saying the action stays queued; and the new daemon applies the pause exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from ctlkit import Ctl, spawn_agentctl, start_daemon, stop_process, write_config

from agentd.config import load_settings
from agentd.store import Store
from agentd.store.actions import ActionRecord
from tests.supervisor.daemon import all_steps

pytestmark = pytest.mark.timeout(180)


def _pause_actions(config: Path, session_id: str) -> list[ActionRecord]:
    settings = load_settings(config)

    async def go() -> list[ActionRecord]:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards)
        rows = await store.actions.query().where(f"session_id = '{session_id}' AND kind = 'pause'").to_arrow()
        return ActionRecord.from_arrow(rows)

    return asyncio.run(go())


@pytest.mark.parametrize("restart_before_timeout", [True, False], ids=["restart-first", "timeout-first"])
def test_agentctl_waiting_through_a_daemon_restart_never_reports_a_false_success(
    tmp_path: Path, restart_before_timeout: bool
) -> None:
    config = write_config(tmp_path / "restart")
    daemon = start_daemon(config)
    proc = None
    try:
        sid = Ctl(config).create_joke()
        for worker in daemon.workers().values():  # nothing applies the pause while agentctl waits
            os.kill(worker["pid"], signal.SIGSTOP)
        timeout = "25" if restart_before_timeout else "4"
        proc = spawn_agentctl(config, "--json", "--timeout", timeout, "pause", sid)
        deadline = time.monotonic() + 20
        while not _pause_actions(config, sid):
            assert time.monotonic() < deadline, "the pause was never queued"
            time.sleep(0.1)
        time.sleep(0.5)  # agentctl is now waiting for the push
        daemon.kill()  # SIGKILL to the whole group, stopped workers included
        if not restart_before_timeout:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 4, (proc.returncode, out, err)
        daemon = start_daemon(config)
        if restart_before_timeout:
            out, err = proc.communicate(timeout=60)

        [action] = _pause_actions(config, sid)
        deadline = time.monotonic() + 30
        while not (steps := [s for s in all_steps(daemon.settings) if s.action_id == action.action_id]):
            assert time.monotonic() < deadline, "the restarted daemon never applied the queued pause"
            time.sleep(0.2)
        time.sleep(1.0)  # a second application would come right after the first
        steps = [s for s in all_steps(daemon.settings) if s.action_id == action.action_id]
        assert len(steps) == 1 and steps[0].text == "paused", steps

        if proc.returncode == 0:  # it fell back to the row and saw the pause applied
            acked = json.loads(out.strip().splitlines()[-1])
            assert acked == {"session_id": sid, "status": "paused", "seq": steps[0].seq}, (acked, err)
            assert "reading the actions' rows instead" in err, err
        else:
            assert proc.returncode == 4, (proc.returncode, out, err)
            assert "queued" in err, err
    finally:
        if proc is not None:
            stop_process(proc)
        daemon.kill()
