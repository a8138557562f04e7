"""An in-process session host on a real LanceDB directory, driven through the real queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from agentd.config import Settings, load_settings
from agentd.llm.offline import OfflineLLM
from agentd.queue import ActionQueue
from agentd.runtime.host import SessionHost
from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.sessions import SessionRecord, get_session
from agentd.store.steps import StepRecord, read_steps

FAST = {
    "writer": {"flush_interval": 0.05},
    "queue": {"poll_interval": 0.05, "lease": 5.0},
    "runtime": {"heartbeat_interval": 0.2, "tick_timeout": 2.0},
    "storage": {"num_shards": 4},
}


def fast_settings(db_uri: str, **sections: dict[str, Any]) -> Settings:
    merged = {k: dict(v) for k, v in FAST.items()}
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return load_settings(db=db_uri, overrides=merged)


@dataclass
class Harness:
    store: Store
    host: SessionHost
    queue: ActionQueue

    async def act(self, kind: str, session_id: str, payload: dict[str, Any] | None = None) -> ActionRecord:
        """Enqueue an action, hint the host, and wait for its acknowledgement."""
        action = await self.queue.enqueue(kind, session_id, payload or {})
        self.host.hint()
        done = await self.queue.wait(action.action_id, timeout=15)
        assert done is not None, f"{kind} on {session_id} was not acknowledged"
        return done

    async def create(self, session_id: str, agent_type: str = "joke", **config: Any) -> ActionRecord:
        payload = {"agent_type": agent_type, "agent_id": config.pop("agent_id", session_id), "config": config}
        done = await self.act("create", session_id, payload)
        assert done.status == "done", done.error
        return done

    async def session(self, session_id: str) -> SessionRecord:
        record = await get_session(self.store.sessions, session_id)
        assert record is not None
        return record

    async def steps(self, session_id: str, kind: str | None = None) -> list[StepRecord]:
        await self.host.writer.flush()
        steps = await read_steps(self.store.steps, session_id)
        return [s for s in steps if kind is None or s.kind == kind]

    async def wait_steps(
        self, session_id: str, count: int, kind: str = "tick", timeout: float = 10
    ) -> list[StepRecord]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            steps = await self.steps(session_id, kind)
            if len(steps) >= count:
                return steps
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{session_id}: {len(steps)} {kind} steps after {timeout}s, wanted {count}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def hosted(settings: Settings, llm: Any = None) -> AsyncIterator[Harness]:
    store = await Store.open(settings.storage.uri, settings.storage.num_shards)
    host = SessionHost(store, settings, list(range(store.num_shards)), llm or OfflineLLM(seed=1), name="test-host")
    await host.start()
    task = asyncio.create_task(host.run())
    try:
        yield Harness(store, host, ActionQueue(store.actions, store.num_shards))
    finally:
        await host.stop(timeout=5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def assert_contiguous(steps: list[StepRecord]) -> None:
    seqs = [s.seq for s in steps]
    assert seqs == list(range(1, len(seqs) + 1)), f"seq gaps or duplicates: {seqs}"
