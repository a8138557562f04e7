"""JokeAgent: tells one joke per tick about a subject that guidance changes.

Context contract (tools read it by key): ``{"subject": str, "paused": bool, "jokes": int}``.
Guidance: ``{"subject": "cats"}`` or free text such as "about cats", "subject: cats",
"tell jokes about cats".
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.agents.base import (
    Agent,
    AgentConfig,
    GuidanceEffect,
    GuidanceError,
    StepOutcome,
    Tick,
    describe_validation_error,
)

__all__ = ["JokeAgent", "JokeConfig", "JokeGuidance"]

_SUBJECT_PATTERNS = (
    re.compile(r"^(?:tell\s+(?:me\s+)?(?:a\s+)?jokes?\s+)?about\s+(?P<s>.+)$", re.I),
    re.compile(r"^subject\s*[:=]\s*(?P<s>.+)$", re.I),
    re.compile(r"^(?:change|set|switch)\s+(?:the\s+)?subject\s+to\s+(?P<s>.+)$", re.I),
    re.compile(r"^jokes?\s+about\s+(?P<s>.+)$", re.I),
)


class JokeConfig(AgentConfig):
    subject: str | None = Field(None, min_length=1, max_length=200)
    style: str | None = Field(None, max_length=50)


class JokeGuidance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=200)


def parse_joke_text(text: str) -> JokeGuidance:
    cleaned = text.strip().rstrip(".!")
    for pattern in _SUBJECT_PATTERNS:
        match = pattern.match(cleaned)
        if match:
            return JokeGuidance(subject=match.group("s").strip().strip("\"'"))
    raise GuidanceError(
        f"cannot understand guidance {text!r} for a joke session; "
        'try "about cats", "subject: cats" or {"subject": "cats"}'
    )


class JokeAgent(Agent):
    type_name = "joke"
    config_model = JokeConfig
    guidance_model = JokeGuidance

    def initial_context(self) -> dict[str, Any]:
        config = self.config
        assert isinstance(config, JokeConfig)
        subject = config.subject or str(self.services.extras.get("default_subject", "programming"))
        return {"subject": subject, "style": config.style, "jokes": 0}

    async def do_tick(self, tick: Tick) -> StepOutcome:
        subject = str(tick.context.get("subject") or "programming")
        joke = await self.services.llm.tell_joke(subject, tick.context.get("style"))
        return StepOutcome(
            text=joke.text,
            data={"subject": subject, "source": joke.source},
            notes="offline generator" if joke.source == "offline" else None,
            context_delta={"jokes": int(tick.context.get("jokes", 0)) + 1},
        )

    def normalize_guidance(self, raw: dict[str, Any] | str) -> BaseModel:
        if isinstance(raw, str):
            return parse_joke_text(raw)
        try:
            return JokeGuidance.model_validate(raw)
        except ValidationError as exc:
            problems = describe_validation_error(exc, "guidance")
            raise GuidanceError(f'invalid joke guidance: {problems} (expected {{"subject": "..."}})') from exc

    def apply_guidance(self, guidance: BaseModel, context: dict[str, Any]) -> GuidanceEffect:
        assert isinstance(guidance, JokeGuidance)
        return GuidanceEffect(delta={"subject": guidance.subject})
