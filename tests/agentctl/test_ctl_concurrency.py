"""Many ``agentctl create`` processes at once: each creates its session exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from ctlkit import Daemon, spawn_agentctl, stop_process

from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.sessions import SessionRecord
from agentd.store.steps import StepRecord

PROCESSES = 50


# 52 interpreters each importing LanceDB (~1.3 CPU-s apiece) need ~35 s on two idle cores; allow
# for a busy machine.
@pytest.mark.timeout(300)
def test_fifty_concurrent_creates_and_a_duplicate_session_id(daemon: Daemon) -> None:
    args = ["--json", "--timeout", "240", "create", "joke", "--agent-id", "swarm", "--interval", "60"]
    procs = [spawn_agentctl(daemon.config, *args) for _ in range(PROCESSES)]
    dupes = [spawn_agentctl(daemon.config, *args, "--session-id", "dupe-1") for _ in range(2)]
    try:
        outcomes = [(p.communicate(timeout=280), p.returncode) for p in procs]
        dupe_outcomes = [(p.communicate(timeout=280), p.returncode) for p in dupes]
    finally:
        for proc in procs + dupes:
            stop_process(proc)

    assert [code for _, code in outcomes] == [0] * PROCESSES, [err for (_, err), code in outcomes if code]
    created = [json.loads(out) for (out, _), _ in outcomes]
    ids = {c["session_id"] for c in created}
    assert len(ids) == PROCESSES, "50 distinct sessions"
    assert all(c["status"] == "running" and c["agent_id"] == "swarm" for c in created)

    assert sorted(code for _, code in dupe_outcomes) == [0, 1], dupe_outcomes
    (_, loser_err), _ = next(o for o in dupe_outcomes if o[1] == 1)
    assert "session dupe-1 already exists" in loser_err

    settings = daemon.settings

    async def read() -> tuple[list[SessionRecord], list[ActionRecord], list[StepRecord]]:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards, create=False)
        sessions = SessionRecord.from_arrow(await store.sessions.query().where("agent_id = 'swarm'").to_arrow())
        actions = ActionRecord.from_arrow(await store.actions.query().where("kind = 'create'").to_arrow())
        steps = StepRecord.from_arrow(
            await store.steps.query().where("agent_id = 'swarm' AND kind = 'lifecycle'").to_arrow()
        )
        return sessions, actions, steps

    sessions, actions, steps = asyncio.run(read())
    assert {s.session_id for s in sessions} == ids | {"dupe-1"}
    per_session = Counter(a.session_id for a in actions if a.session_id in ids)
    assert per_session == Counter(dict.fromkeys(ids, 1)), "one create action per invocation"
    created_steps = Counter(s.session_id for s in steps if s.text == "created")
    assert created_steps == Counter(dict.fromkeys(ids | {"dupe-1"}, 1)), "each session created once"
