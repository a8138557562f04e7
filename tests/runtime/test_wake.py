"""A wake that arrives while the host's claim loop is busy is not lost.

The fault: the claim loop is in the middle of a slow claim scan (slowed by wrapping
``ActionQueue.claim``) when the daemon hands over a new action with its wake. With a 30 s poll
interval, the action must still be claimed at once after the scan, not at the next poll (the
wake used to be cleared after the scan, and control actions then waited up to a whole poll).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agentd.queue import ActionQueue
from agentd.runtime import host as host_module
from tests.gateway.gwtools import until
from tests.runtime.harness import fast_settings, hosted

pytestmark = pytest.mark.timeout(60)


def test_a_wake_during_a_slow_claim_scan_is_not_lost(db_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scanning = asyncio.Event()
    slow = {"on": False}
    real_claim = ActionQueue.claim

    async def slow_claim(self: ActionQueue, *args: Any, **kwargs: Any) -> Any:
        found = await real_claim(self, *args, **kwargs)
        if slow["on"]:  # the scan has read the table; its commit is slow
            scanning.set()
            await asyncio.sleep(0.5)
        return found

    monkeypatch.setattr(ActionQueue, "claim", slow_claim)

    async def scenario() -> None:
        settings = fast_settings(db_uri, queue={"poll_interval": 30.0})
        async with hosted(settings) as h:
            await h.create("j1")
            slow["on"] = True
            h.host.hint()  # start a (slow) scan
            await asyncio.wait_for(scanning.wait(), 10)
            action = await h.queue.enqueue("pause", "j1", {})
            h.host.hint([action])  # the daemon's wake, with the row, while the scan runs
            slow["on"] = False
            started = time.monotonic()
            done = await h.queue.wait(action.action_id, timeout=20)
            assert done is not None and done.status == "done"
            assert time.monotonic() - started < 5, "the wake was lost: claimed only at the next poll"
            await until(lambda: h.host.runners["j1"].status == "paused", 5, "paused")

    asyncio.run(scenario())


def test_a_wake_carrying_only_some_rows_makes_the_host_look_for_the_rest(db_uri: str) -> None:
    """A wake with ``look`` (the worker sets it when some offered rows did not parse) makes the
    host scan for the rows it was not handed: claimed at once, not at the next poll (30 s here).
    Without ``look`` an offered claim is not followed by a scan (it slowed the commit of the
    claimed action's step)."""

    async def scenario() -> None:
        settings = fast_settings(db_uri, queue={"poll_interval": 30.0})
        async with hosted(settings) as h:
            await h.create("j1")
            await h.create("j2")
            await asyncio.sleep(0.2)  # let the turn after the creates end: the next waits 30 s
            first = await h.queue.enqueue("pause", "j1", {})
            second = await h.queue.enqueue("pause", "j2", {})
            h.host.hint([first])  # offered alone, no look: the second stays for the poll
            done = await h.queue.wait(first.action_id, timeout=10)
            assert done is not None and done.status == "done"
            await asyncio.sleep(0.5)
            waiting = await h.queue.get(second.action_id)
            assert waiting is not None and waiting.status == "pending", "an offered claim was followed by a scan"
            third = await h.queue.enqueue("resume", "j1", {})
            h.host.hint([third], look=True)  # offered with look: the second is found too
            for action in (second, third):
                done = await h.queue.wait(action.action_id, timeout=5)
                assert done is not None and done.status == "done", f"{action.kind} not claimed before the poll"

    asyncio.run(scenario())


def test_more_offered_rows_than_one_claim_takes_are_claimed_in_turns_without_a_scan(
    db_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big batch is handed over in full (``create --count 10000``): the host claims it a part
    per turn (one update's WHERE clause grows with its rows), each turn right after the last, and
    never falls back to the claim scan, which took 200 rows a round."""
    monkeypatch.setattr(host_module, "OFFERED_PER_CLAIM", 2)
    scans = {"count": 0}
    real_claim = ActionQueue.claim

    async def counted_claim(self: ActionQueue, *args: Any, **kwargs: Any) -> Any:
        scans["count"] += 1
        return await real_claim(self, *args, **kwargs)

    async def scenario() -> None:
        settings = fast_settings(db_uri, queue={"poll_interval": 30.0})
        async with hosted(settings) as h:
            names = [f"j{i}" for i in range(5)]
            for name in names:
                await h.create(name)
            await asyncio.sleep(0.2)  # let the turn after the creates end: the next waits 30 s
            monkeypatch.setattr(ActionQueue, "claim", counted_claim)
            pauses = [await h.queue.enqueue("pause", name, {}) for name in names]
            h.host.hint(pauses)  # five rows, two per claim: three turns
            for action in pauses:
                done = await h.queue.wait(action.action_id, timeout=10)
                assert done is not None and done.status == "done", "an offered row waited for the poll"
            assert scans["count"] == 0, "the host scanned the table for rows it had been handed"
            rows = await h.queue.get_many([p.action_id for p in pauses])
            assert len({row.claim_token for row in rows.values()}) == 3, "not claimed two rows per turn"

    asyncio.run(scenario())
