"""PersonaAgent: a named persona bound to one conversation that replies to new messages.

Context contract (tools read it by key): ``{"conversation_id", "name", "tone", "cooldown",
"last_seen", "paused", ...}``; ``last_seen`` is the ISO time of the newest message read.

Activation rule, checked each tick over the messages newer than ``last_seen``:
1. there is a new message and the newest is not this persona's own;
2. the cooldown has elapsed since this persona last spoke (otherwise the messages stay unread
   and the persona answers once the cooldown is over);
3. the conversation does not end in ``max_agent_streak`` or more consecutive agent messages
   (default 3): personas may answer each other a few times after a user speaks, then fall
   silent until a user or system message arrives, so two personas never ping-pong forever;
4. the model may decline (``should_speak``).
Guidance ``speak_now`` (or "speak now") skips rules 1-4 once, at once.

Exactly once: the reply's message id is derived from (session_id, seq). If the process dies
after posting but before the step is durable, the session resumes at the same seq, finds its
message already there and records it instead of posting (or generating) again.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentd.agents.base import (
    Agent,
    AgentConfig,
    CreateError,
    GuidanceEffect,
    GuidanceError,
    StepOutcome,
    Tick,
    describe_validation_error,
)
from agentd.ids import deterministic_id
from agentd.llm.base import TranscriptLine
from agentd.store.conversations import (
    MessageRecord,
    ParticipantRecord,
    add_participant,
    get_conversation,
    insert_messages,
    read_messages,
)
from agentd.store.sql import sql_str, sql_ts
from agentd.timeutil import utcnow

__all__ = ["PersonaAgent", "PersonaConfig", "PersonaGuidance"]

TRANSCRIPT_LINES = 20


class PersonaConfig(AgentConfig):
    conversation_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=80)
    tone: str = Field("friendly", min_length=1, max_length=80)
    cooldown: float = Field(5.0, ge=0, le=86_400)
    max_agent_streak: int = Field(3, ge=1, le=100)


class PersonaGuidance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set_tone: str | None = Field(None, min_length=1, max_length=80)
    set_cooldown: float | None = Field(None, ge=0, le=86_400)
    speak_now: bool = False

    @model_validator(mode="after")
    def _not_empty(self) -> PersonaGuidance:
        if self.set_tone is None and self.set_cooldown is None and not self.speak_now:
            raise ValueError("give at least one of set_tone, set_cooldown, speak_now")
        return self


_TONE = re.compile(r"^(?:be|sound|act|go)\s+(?:more\s+)?(?P<v>.+)$|^(?:set\s+)?tone\s*(?:[:=]|to)?\s*(?P<t>.+)$", re.I)
_COOLDOWN = re.compile(r"^(?:set\s+)?cooldown\s*(?:[:=]|to)?\s*(?P<n>\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds)?$", re.I)
_SPEAK = re.compile(r"^(?:speak|talk|say something|reply)(?:\s+now)?$", re.I)


def parse_persona_text(text: str) -> PersonaGuidance:
    fields: dict[str, Any] = {}
    for part in re.split(r"\s*(?:[;,]|\band\b)\s*", text.strip().rstrip(".!")):
        if not part:
            continue
        if _SPEAK.match(part):
            fields["speak_now"] = True
        elif match := _COOLDOWN.match(part):
            fields["set_cooldown"] = float(match.group("n"))
        elif match := _TONE.match(part):
            fields["set_tone"] = (match.group("v") or match.group("t")).strip().strip("\"'")
        else:
            raise GuidanceError(
                f'cannot understand {part!r} in persona guidance; try "be noir", "speak now", '
                '"cooldown 0.5" or {"set_tone": "noir", "set_cooldown": 0.5, "speak_now": true}'
            )
    if not fields:
        raise GuidanceError("empty guidance")
    return PersonaGuidance(**fields)


class PersonaAgent(Agent):
    type_name = "persona"
    config_model = PersonaConfig
    guidance_model = PersonaGuidance

    @property
    def cfg(self) -> PersonaConfig:
        assert isinstance(self.config, PersonaConfig)
        return self.config

    def conversation_id(self) -> str | None:
        return self.cfg.conversation_id

    async def validate_create(self) -> None:
        store = self.services.store
        if await get_conversation(store.conversations, self.cfg.conversation_id) is None:
            raise CreateError(f"conversation {self.cfg.conversation_id!r} does not exist")
        await add_participant(
            store.participants,
            ParticipantRecord(
                participant_id=deterministic_id("p", self.cfg.conversation_id, self.services.session_id),
                conversation_id=self.cfg.conversation_id,
                agent_id=self.services.agent_id,
                session_id=self.services.session_id,
                persona_config={"name": self.cfg.name, "tone": self.cfg.tone, "cooldown": self.cfg.cooldown},
                joined_at=utcnow(),
            ),
        )

    def initial_context(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "conversation_id": cfg.conversation_id,
            "name": cfg.name,
            "tone": cfg.tone,
            "cooldown": cfg.cooldown,
            "last_seen": None,
            "last_seen_id": None,
            "last_spoke_at": None,
            "replies": 0,
            "speak_now": False,
        }

    async def on_start(self, context: dict[str, Any]) -> None:
        self.services.watch_conversation(self.cfg.conversation_id)

    # -- tick --------------------------------------------------------------------------------

    def _is_own(self, message: MessageRecord) -> bool:
        return bool(message.meta and message.meta.get("session_id") == self.services.session_id)

    async def _new_messages(self, context: dict[str, Any]) -> list[MessageRecord]:
        seen = context.get("last_seen")
        seen_id = context.get("last_seen_id") or ""
        since = datetime.fromisoformat(seen) if seen else None
        table = self.services.store.messages
        if since is None:
            messages = await read_messages(table, self.cfg.conversation_id)
        else:
            clause = f"conversation_id = {sql_str(self.cfg.conversation_id)} AND created_at >= {sql_ts(since)}"
            messages = MessageRecord.from_arrow(await table.query().where(clause).to_arrow())
            messages.sort(key=lambda m: (m.created_at, m.message_id))
            messages = [m for m in messages if (m.created_at, m.message_id) > (since, seen_id)]
        return messages

    async def do_tick(self, tick: Tick) -> StepOutcome:
        context = tick.context
        forced = bool(context.get("speak_now"))
        reply_id = deterministic_id("m", self.services.session_id, str(tick.seq))
        new = await self._new_messages(context)
        delta: dict[str, Any] = {"speak_now": False}
        if new:
            delta["last_seen"] = new[-1].created_at.isoformat()
            delta["last_seen_id"] = new[-1].message_id
        # A reply of this very seq already posted before a crash: record it, do not post again.
        replayed = [m for m in new if m.message_id == reply_id]
        if replayed:
            return self._spoke(replayed[0], tick, delta, replayed=True)
        reason = None if forced else await self._silence_reason(new, tick, context)
        if reason == "cooldown":
            delta.pop("last_seen", None)  # keep them unread: answer once the cooldown is over
            delta.pop("last_seen_id", None)
        if reason is not None:
            return StepOutcome(status="info", notes=f"silent: {reason}", context_delta=delta)
        transcript = await read_messages(self.services.store.messages, self.cfg.conversation_id, limit=TRANSCRIPT_LINES)
        lines = [TranscriptLine(author=self._display(m), text=m.text) for m in transcript]
        last_speaker = lines[-1].author if lines else ""
        reply = await self.services.llm.persona_reply(self.cfg.name, str(context.get("tone")), lines, last_speaker)
        if not reply.should_speak and not forced:
            return StepOutcome(status="info", notes="silent: the model declined", context_delta=delta)
        message = MessageRecord(
            message_id=reply_id,
            conversation_id=self.cfg.conversation_id,
            author_id=self.services.agent_id,
            role="agent",
            text=reply.text,
            reply_to=transcript[-1].message_id if transcript else None,
            meta={"session_id": self.services.session_id, "name": self.cfg.name, "source": reply.source},
            created_at=utcnow(),
        )
        await insert_messages(self.services.store.messages, [message])
        return self._spoke(message, tick, delta, replayed=False)

    def _spoke(self, message: MessageRecord, tick: Tick, delta: dict[str, Any], *, replayed: bool) -> StepOutcome:
        delta.update(
            last_seen=message.created_at.isoformat(),
            last_seen_id=message.message_id,
            last_spoke_at=message.created_at.isoformat(),
            replies=int(tick.context.get("replies", 0)) + 1,
        )
        return StepOutcome(
            text=message.text,
            data={"message_id": message.message_id, "conversation_id": self.cfg.conversation_id, "replayed": replayed},
            notes="offline generator" if message.meta and message.meta.get("source") == "offline" else None,
            context_delta=delta,
        )

    @staticmethod
    def _display(message: MessageRecord) -> str:
        return str((message.meta or {}).get("name") or message.author_id)

    async def _silence_reason(self, new: list[MessageRecord], tick: Tick, context: dict[str, Any]) -> str | None:
        if not new:
            return "no new messages"
        if self._is_own(new[-1]):
            return "the latest message is my own"
        last_spoke = context.get("last_spoke_at")
        cooldown = float(context.get("cooldown", self.cfg.cooldown))
        if last_spoke and (tick.now - datetime.fromisoformat(last_spoke)).total_seconds() < cooldown:
            return "cooldown"
        recent = await read_messages(
            self.services.store.messages, self.cfg.conversation_id, limit=self.cfg.max_agent_streak
        )
        if len(recent) >= self.cfg.max_agent_streak and all(m.role == "agent" for m in recent):
            return f"{self.cfg.max_agent_streak} agent messages in a row; waiting for a user"
        return None

    # -- guidance ----------------------------------------------------------------------------

    def normalize_guidance(self, raw: dict[str, Any] | str) -> BaseModel:
        if isinstance(raw, str):
            return parse_persona_text(raw)
        aliases = {"tone": "set_tone", "cooldown": "set_cooldown"}
        data = {aliases.get(k, k): v for k, v in raw.items()}
        try:
            return PersonaGuidance.model_validate(data)
        except ValidationError as exc:
            problems = describe_validation_error(exc, "guidance")
            raise GuidanceError(f"invalid persona guidance: {problems}") from exc

    def apply_guidance(self, guidance: BaseModel, context: dict[str, Any]) -> GuidanceEffect:
        assert isinstance(guidance, PersonaGuidance)
        delta: dict[str, Any] = {}
        if guidance.set_tone is not None:
            delta["tone"] = guidance.set_tone
        if guidance.set_cooldown is not None:
            delta["cooldown"] = guidance.set_cooldown
        if guidance.speak_now:
            delta["speak_now"] = True
        return GuidanceEffect(delta=delta, wake=guidance.speak_now)
