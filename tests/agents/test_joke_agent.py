"""JokeAgent on the offline generator: a session's jokes do not repeat within 50, across restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from agentd.agents.base import AgentServices, Tick
from agentd.agents.joke import JokeAgent
from agentd.llm.offline import OfflineLLM


def _agent(session_id: str, llm: OfflineLLM) -> JokeAgent:
    return JokeAgent(
        JokeAgent.parse_config({"subject": "penguins"}),
        AgentServices(llm=llm, store=None, session_id=session_id, agent_id=session_id),
    )


async def _tell(agent: JokeAgent, context: dict[str, Any], count: int) -> list[str]:
    texts = []
    for i in range(count):
        outcome = await agent.do_tick(Tick(seq=i + 1, iteration=i, now=datetime.now(UTC), context=dict(context)))
        context.update(outcome.context_delta)
        texts.append(outcome.text or "")
    return texts


def test_no_repeat_within_50_jokes_even_across_a_restart_and_a_shared_generator() -> None:
    async def scenario() -> None:
        shared = OfflineLLM(seed=5)  # one generator per worker, shared by its sessions
        first, other = _agent("s-1", shared), _agent("s-2", shared)
        context = first.initial_context()
        texts = await _tell(first, context, 30)
        await _tell(other, other.initial_context(), 17)  # another session's jokes interleave
        # A restart: a fresh generator in a new process, the context as persisted.
        texts += await _tell(_agent("s-1", OfflineLLM(seed=5)), context, 30)
        assert context["jokes"] == 60
        for start in range(len(texts) - 50 + 1):
            window = texts[start : start + 50]
            assert len(set(window)) == 50, f"a joke repeated within 50 (from joke {start})"
        assert all("penguins" in t for t in texts)

    asyncio.run(scenario())
