"""JokeAgent: tells one joke per tick about a subject that guidance changes.

Context contract (tools read it by key): ``{"subject": str, "style": str | None, "paused": bool,
"jokes": int}``. ``jokes`` counts the jokes told; it is also the index the offline generator uses
so that a session does not repeat a joke within its last 50 (agentd.llm.offline).
Guidance (agentd.agents.operations): ``{"type": "set_subject", "subject": "cats"}``,
``{"type": "set_style", "style": "deadpan"}``, an array of them, the older ``{"subject": "cats"}``,
or free text such as "tell me about cats" or "can you switch to penguins?".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agentd.agents.base import Agent, AgentConfig, GuidanceEffect, Operations, StepOutcome, Tick
from agentd.agents.operations import JOKE_GUIDANCE, SetStyle, SetSubject, Style, Subject

__all__ = ["JokeAgent", "JokeConfig"]


class JokeConfig(AgentConfig):
    subject: Subject | None = None
    style: Style | None = None


class JokeAgent(Agent):
    type_name = "joke"
    config_model = JokeConfig
    guidance_model = Operations
    guidance_spec = JOKE_GUIDANCE

    def initial_context(self) -> dict[str, Any]:
        config = self.config
        assert isinstance(config, JokeConfig)
        subject = config.subject or str(self.services.extras.get("default_subject", "programming"))
        return {"subject": subject, "style": config.style, "jokes": 0}

    async def do_tick(self, tick: Tick) -> StepOutcome:
        subject = str(tick.context.get("subject") or "programming")
        told = int(tick.context.get("jokes", 0))
        joke = await self.services.llm.tell_joke(
            subject, tick.context.get("style"), index=told, key=self.services.session_id
        )
        return StepOutcome(
            text=joke.text,
            data={"subject": subject, "source": joke.source},
            notes="offline generator" if joke.source == "offline" else None,
            context_delta={"jokes": told + 1},
        )

    def apply_guidance(self, guidance: BaseModel, context: dict[str, Any]) -> GuidanceEffect:
        assert isinstance(guidance, Operations)
        delta: dict[str, Any] = {}
        for op in guidance.root:
            if isinstance(op, SetSubject):
                delta["subject"] = op.subject
            elif isinstance(op, SetStyle):
                delta["style"] = op.style
        return GuidanceEffect(delta=delta)
