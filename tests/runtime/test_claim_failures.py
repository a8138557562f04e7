"""A claim turn that fails after its claim landed: the actions are still applied, once and in order.

The long chaos run (seed 574970521) found it: with storage slow enough for the claim turn's
30 s timeout, a turn that had claimed actions failed before dispatching them. A claimer never
re-claims its own claims, so they stayed claimed (their leases renewed) until the worker ended,
while newer actions of the same sessions were claimed and applied before them: 1,681 actions
never applied, and "unknown session" for the actions behind a create that never ran.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import run

from agentd.queue import ActionQueue
from agentd.runtime.host import SessionHost

from .harness import fast_settings, hosted


@pytest.mark.parametrize("where", ["after-hold", "claim-unseen"])
def test_a_turn_failing_after_its_claim_still_applies_those_actions_in_order(
    db_uri: str, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """``after-hold``: the turn held the actions, then timed out looking for their earlier steps.
    ``claim-unseen``: the claim's update landed, then the turn timed out before seeing its rows."""
    failures = {"left": 0}
    applied_before = SessionHost._applied_before
    claim = ActionQueue.claim

    async def flaky_applied_before(self: SessionHost, actions: list[Any]) -> Any:
        if actions and failures["left"]:
            failures["left"] -= 1
            raise TimeoutError  # what the turn's CLAIM_TIMEOUT raises on slow storage
        return await applied_before(self, actions)

    async def flaky_claim(self: ActionQueue, shards: Any, **kwargs: Any) -> Any:
        won = await claim(self, shards, **kwargs)
        if won and failures["left"]:
            failures["left"] -= 1
            raise TimeoutError
        return won

    if where == "after-hold":
        monkeypatch.setattr(SessionHost, "_applied_before", flaky_applied_before)
    else:
        monkeypatch.setattr(ActionQueue, "claim", flaky_claim)

    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("j1")
            failures["left"] = 1
            cats = await h.queue.enqueue("interrupt", "j1", {"guidance": "about cats"})
            h.host.hint()
            for _ in range(200):  # the failing turn has taken "cats"
                if not failures["left"]:
                    break
                await asyncio.sleep(0.05)
            assert not failures["left"], "no turn claimed the action"
            dogs = await h.queue.enqueue("interrupt", "j1", {"guidance": "about dogs"})
            h.host.hint()
            done = [await h.queue.wait(a.action_id, timeout=15) for a in (cats, dogs)]
            assert [d.status if d else None for d in done] == ["done", "done"], "an action was never applied"
            guidance = [s for s in await h.steps("j1") if s.kind == "guidance"]
            assert [s.action_id for s in guidance] == [cats.action_id, dogs.action_id], "applied out of order"
            assert (await h.session("j1")).context["subject"] == "dogs"

    run(scenario())
