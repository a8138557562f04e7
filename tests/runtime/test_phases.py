"""Sessions created together do not tick together.

A batch of creates (``agentctl create --count N``) is applied within a few milliseconds, and
each new session ticks at once. If every later tick followed exactly one heartbeat after the
first, the whole batch would tick in the same few milliseconds of every heartbeat, forever: a
burst that makes its own ticks late and holds up every control action arriving meanwhile
(bench/control_bench.py). A new session's second tick therefore picks a random phase.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.runtime.harness import fast_settings, hosted

pytestmark = pytest.mark.timeout(90)

SESSIONS = 24
HEARTBEAT = 1.0


def _occupied_arc(phases: list[float]) -> float:
    """The shortest arc of the heartbeat circle (as a fraction of it) that holds every phase."""
    ordered = sorted(phases)
    gaps = [b - a for a, b in itertools.pairwise(ordered)] + [ordered[0] + 1.0 - ordered[-1]]
    return 1.0 - max(gaps)


def test_a_batch_of_new_sessions_spreads_its_ticks_over_the_heartbeat(db_uri: str) -> None:
    async def scenario() -> None:
        settings = fast_settings(db_uri, runtime={"heartbeat_interval": HEARTBEAT})
        async with hosted(settings) as h:
            ids = [f"p{i:02d}" for i in range(SESSIONS)]
            rows = [
                h.queue.new_action("create", sid, {"agent_type": "joke", "agent_id": sid, "config": {}}) for sid in ids
            ]
            await h.queue.append_many(rows)  # one batch, as the daemon's group commit appends it
            h.host.hint(rows)
            for row in rows:
                done = await h.queue.wait(row.action_id, timeout=20)
                assert done is not None and done.status == "done", done
            ticks = {sid: await h.wait_steps(sid, 4, timeout=20) for sid in ids}

            firsts = [steps[0].ts.timestamp() for steps in ticks.values()]
            assert max(firsts) - min(firsts) < 0.5 * HEARTBEAT, "the batch was created together"
            base = min(firsts)
            later = [((steps[3].ts.timestamp() - base) / HEARTBEAT) % 1.0 for steps in ticks.values()]
            assert _occupied_arc(later) > 0.5, f"later ticks still bunched: phases {sorted(later)}"
            for steps in ticks.values():  # one heartbeat apart once the phase is chosen
                gap = steps[3].ts.timestamp() - steps[2].ts.timestamp()
                assert abs(gap - HEARTBEAT) < 0.3 * HEARTBEAT, gap

    asyncio.run(scenario())
