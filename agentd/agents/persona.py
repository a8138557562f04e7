"""PersonaAgent: a named persona bound to one conversation that replies to new messages.

Context contract (tools read it by key): ``{"conversation_id", "name", "tone", "cooldown",
"last_seen", "last_seen_id", "last_seen_version", "last_spoke_at", "replies", "speak_now",
"paused", ...}``:
- ``last_seen_version`` is the read marker: the highest commit position (the messages table's
  ``_row_created_at_version``) of the messages read. "New" means committed after it. A stamp
  taken before the commit cannot be the marker: a message stamped earlier may commit later,
  and would then never be read (agentd.store.conversations). ``last_seen`` and
  ``last_seen_id`` are the ISO stamp and the id of the newest message read, for tools.
- ``replies`` counts recorded replies; only the step that records a reply advances it.
- ``cooldown_until`` is set while unread messages wait for the cooldown.

Activation rule, checked each tick over the new messages, in commit order:
1. there is a new message and the newest is not this persona's own;
2. the cooldown has elapsed since this persona last spoke (otherwise the messages stay unread
   and the persona answers once the cooldown is over);
3. the conversation does not end in ``max_agent_streak`` or more consecutive agent messages
   (default 3): personas may answer each other a few times after a user speaks, then fall
   silent until a user or system message arrives, so two personas never ping-pong forever;
4. the model may decline (``should_speak``).
Guidance ``speak_now`` (or "say something now") skips rules 1-4 once, at once. The guidance
operations (``set_tone``, ``set_cooldown``, ``speak_now``) and their phrases live in
agentd.agents.operations.

Exactly once, by construction: reply number k (``replies + 1``) has the message id
``reply_message_id(session_id, k)`` whatever seq the tick takes (a guidance step may take the
seq of a tick that died). Every tick first reconciles: if reply k is already in the
conversation (posted before a crash, or by a tick whose timeout fired after the post committed)
it records it (``data.replayed``) instead of deciding or generating again. This comes before
any silence rule, since after a crash that reply is the newest message and rule 1 would hide
it. It costs nothing extra: the marker only moves with a step, and the post committed after
the read behind that step, so reply k is among the new messages. An insert that finds the id
taken (a timed-out tick's commit landing late) reads the stored message back by id (indexed)
and records that.

Quiet ticks: every silent tick is ``quiet``. With no new message, or only its own recorded
replies since the marker (the tick after each reply: the marker is left where it was), the
context delta is empty, so the runtime appends no step (``Agent.record_quiet_ticks``) and an
idle persona costs no storage. A cooldown wait records one step, then repeats the same
``cooldown_until``. A reply's step sets the marker to what the tick read, not to the reply:
a message committed while the reply was generated is then read by the next tick, which
answers it or records why not (rule 1), never skips it unseen.

Fault injection, for tests only, right after a reply's insert commits and before its step is
durable: the fault point ``after-reply-post`` (``AGENTD_FAULTS``, agentd.faults) kills the
process with SIGKILL, or with ``after-reply-post=stall`` blocks there until the tick timeout
fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from agentd import faults
from agentd.agents.base import (
    Agent,
    AgentConfig,
    CreateError,
    GuidanceEffect,
    Operations,
    StepOutcome,
    Tick,
)
from agentd.agents.operations import PERSONA_GUIDANCE, SetCooldown, SetTone, SpeakNow, Tone
from agentd.ids import deterministic_id
from agentd.llm.base import TranscriptLine
from agentd.store.conversations import (
    MessageRecord,
    ParticipantRecord,
    add_participant,
    get_conversation,
    get_message,
    insert_messages,
    read_messages,
    read_messages_after_version,
)
from agentd.timeutil import utcnow

__all__ = ["PersonaAgent", "PersonaConfig", "reply_message_id"]

TRANSCRIPT_LINES = 20


def reply_message_id(session_id: str, index: int) -> str:
    """The message id of a session's reply number ``index`` (1-based): the durable intent."""
    return deterministic_id("m", session_id, "reply", str(index))


@dataclass(slots=True)
class _Window:
    """What a tick read: the new messages (commit order) and how to mark them read."""

    new: list[tuple[int, MessageRecord]]
    # The highest commit version read (over every row read, for a legacy context).
    upto: int
    # The context had no version marker yet (a session from before it).
    legacy: bool

    def mark(self) -> dict[str, Any]:
        """The context delta that marks every new message read (empty when there is none)."""
        if self.new:
            version, message = self.new[-1]
            return _marker(max(version, self.upto), message)
        return {"last_seen_version": self.upto} if self.legacy else {}


def _marker(version: int, message: MessageRecord) -> dict[str, Any]:
    return {
        "last_seen_version": version,
        "last_seen": message.created_at.isoformat(),
        "last_seen_id": message.message_id,
    }


class PersonaConfig(AgentConfig):
    conversation_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=80)
    tone: Tone = "friendly"
    cooldown: float = Field(5.0, ge=0, le=86_400)
    max_agent_streak: int = Field(3, ge=1, le=100)


class PersonaAgent(Agent):
    type_name = "persona"
    config_model = PersonaConfig
    guidance_model = Operations
    guidance_spec = PERSONA_GUIDANCE

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
            "last_seen_version": 0,
            "last_spoke_at": None,
            "replies": 0,
            "speak_now": False,
        }

    async def on_start(self, context: dict[str, Any]) -> None:
        self.services.watch_conversation(self.cfg.conversation_id)

    # -- tick --------------------------------------------------------------------------------

    def _is_own(self, message: MessageRecord) -> bool:
        return bool(message.meta and message.meta.get("session_id") == self.services.session_id)

    async def _read_window(self, context: dict[str, Any]) -> _Window:
        """The messages committed after the marker (one filtered read; see the module doc)."""
        table = self.services.store.messages
        cid = self.cfg.conversation_id
        marker = context.get("last_seen_version")
        if marker is not None or not context.get("last_seen"):
            new = await read_messages_after_version(table, cid, int(marker or 0))
            return _Window(new, max((v for v, _ in new), default=0), legacy=False)
        # A context from before the version marker: read everything once, take as new what the
        # old stamp marker had not seen, and let the next step record the version marker.
        rows = await read_messages_after_version(table, cid, 0)
        seen = (datetime.fromisoformat(context["last_seen"]), str(context.get("last_seen_id") or ""))
        new = [(v, m) for v, m in rows if (m.created_at, m.message_id) > seen]
        return _Window(new, max((v for v, _ in rows), default=0), legacy=True)

    async def do_tick(self, tick: Tick) -> StepOutcome:
        context = tick.context
        forced = bool(context.get("speak_now"))
        window = await self._read_window(context)
        delta: dict[str, Any] = {"speak_now": False} if forced else {}
        # Reconcile before any rule: reply k may be posted already and recorded by no step.
        reply_id = reply_message_id(self.services.session_id, int(context.get("replies") or 0) + 1)
        for version, message in window.new:
            if message.message_id == reply_id:
                delta.update(_marker(version, message))  # what came after it stays unread
                return self._spoke(message, context, delta, replayed=True)
        recent: list[MessageRecord] | None = None
        if not forced:
            reason, silent_delta, recent = await self._silence(window, tick, context)
            if reason is not None:
                delta.update(silent_delta)
                return StepOutcome(status="info", notes=f"silent: {reason}", context_delta=delta, quiet=True)
        delta.update(window.mark())
        if recent is None:
            recent = await read_messages(self.services.store.messages, self.cfg.conversation_id, limit=TRANSCRIPT_LINES)
        transcript = recent[-TRANSCRIPT_LINES:]
        lines = [TranscriptLine(author=self._display(m), text=m.text) for m in transcript]
        last_speaker = lines[-1].author if lines else ""
        reply = await self.services.llm.persona_reply(self.cfg.name, str(context.get("tone")), lines, last_speaker)
        if not reply.should_speak and not forced:
            return StepOutcome(status="info", notes="silent: the model declined", context_delta=delta, quiet=True)
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
        replayed = False
        if await insert_messages(self.services.store.messages, [message]) == 0:
            # Reply k landed meanwhile (the late commit of a tick that timed out): record that one.
            stored = await get_message(self.services.store.messages, reply_id)
            message, replayed = (stored, True) if stored is not None else (message, False)
        await faults.hit_async("after-reply-post")
        return self._spoke(message, context, delta, replayed=replayed)

    async def reconcile(self, context: dict[str, Any]) -> StepOutcome | None:
        """Reply k posted by a tick that never recorded it (killed, timed out): record it now.

        Called before a pause or a destroy: one lookup by message id, the common answer None.
        """
        reply_id = reply_message_id(self.services.session_id, int(context.get("replies") or 0) + 1)
        if await get_message(self.services.store.messages, reply_id) is None:
            return None
        window = await self._read_window(context)
        for version, message in window.new:
            if message.message_id == reply_id:
                return self._spoke(message, context, _marker(version, message), replayed=True)
        return None

    def _spoke(
        self, message: MessageRecord, context: dict[str, Any], delta: dict[str, Any], *, replayed: bool
    ) -> StepOutcome:
        index = int(context.get("replies") or 0) + 1
        delta.update(last_spoke_at=message.created_at.isoformat(), replies=index)
        if context.get("cooldown_until") is not None:
            delta["cooldown_until"] = None
        data = {
            "message_id": message.message_id,
            "conversation_id": self.cfg.conversation_id,
            "reply": index,
            "replayed": replayed,
        }
        return StepOutcome(
            text=message.text,
            data=data,
            notes="offline generator" if message.meta and message.meta.get("source") == "offline" else None,
            context_delta=delta,
        )

    @staticmethod
    def _display(message: MessageRecord) -> str:
        return str((message.meta or {}).get("name") or message.author_id)

    async def _silence(
        self, window: _Window, tick: Tick, context: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any], list[MessageRecord] | None]:
        """Rules 1-3: (why silent or None, the silent tick's context delta, recent messages if read)."""
        new = window.new
        if not new:
            return "no new messages", window.mark(), None
        if all(self._is_own(m) for _, m in new):
            # Only its own recorded replies since the marker (the usual tick after a reply): the
            # marker stays, so the tick changes nothing and leaves no step.
            return "the latest message is my own", window.mark() if window.legacy else {}, None
        if self._is_own(new[-1][1]):
            return "the latest message is my own", window.mark(), None
        last_spoke = context.get("last_spoke_at")
        if last_spoke:
            until = datetime.fromisoformat(last_spoke) + timedelta(
                seconds=float(context.get("cooldown", self.cfg.cooldown))
            )
            if tick.now < until:
                # Unread until then. Every tick of the wait gives the same value, so only the
                # first one leaves a step.
                return "cooldown", {"cooldown_until": until.isoformat()}, None
        streak = self.cfg.max_agent_streak
        recent = await read_messages(
            self.services.store.messages, self.cfg.conversation_id, limit=max(TRANSCRIPT_LINES, streak)
        )
        if len(recent) >= streak and all(m.role == "agent" for m in recent[-streak:]):
            return f"{streak} agent messages in a row; waiting for a user", window.mark(), recent
        return None, {}, recent

    # -- guidance ----------------------------------------------------------------------------

    def apply_guidance(self, guidance: BaseModel, context: dict[str, Any]) -> GuidanceEffect:
        assert isinstance(guidance, Operations)
        delta: dict[str, Any] = {}
        for op in guidance.root:
            if isinstance(op, SetTone):
                delta["tone"] = op.tone
            elif isinstance(op, SetCooldown):
                delta["cooldown"] = op.seconds
            elif isinstance(op, SpeakNow):
                delta["speak_now"] = True
        return GuidanceEffect(delta=delta, wake=bool(delta.get("speak_now")))
