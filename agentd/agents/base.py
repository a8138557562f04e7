"""The agent protocol: what an agent type implements and what the runtime gives it.

The runtime (agentd.runtime) knows only this module. An agent type is a subclass of ``Agent``
registered by name (see agentd.agents.registry); the supervisor, queue, store and gateway never
name a concrete type, so a user's own type plugs in without touching them.

Hooks, in the order the runtime calls them:
- ``config_model`` validates the creation config (``agentctl create`` options);
- ``validate_create(services)`` checks the world at creation (e.g. the conversation exists);
- ``initial_context()`` gives the first context snapshot (a flat JSON object);
- ``on_start()`` runs when the session starts or resumes in a process;
- ``do_tick(tick)`` does one unit of work and returns a ``StepOutcome`` (``quiet=True`` when it
  had nothing to say: such a tick leaves no step unless it changed the context);
- ``guidance_spec`` declares the type's guidance operations (agentd.agents.guidance): typed
  operations, a discriminated union on ``type``, with phrase rules for free text. The default
  ``normalize_guidance(raw)`` turns a JSON object, an array of operations or free text into
  ``Operations`` (raise ``GuidanceError`` to reject); ``understand_guidance(raw)`` adds the LLM
  fallback for text no rule reads; ``apply_guidance(normalized)`` returns a ``GuidanceEffect``
  (context delta, wake now?);
- ``on_stop()`` runs once when the session stops (destroyed, stopped itself, or host shutdown).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentd.agents.guidance import GuidanceError, GuidanceNotUnderstood, GuidanceSpec, Operations
from agentd.agents.phrases import clip
from agentd.llm.base import LLMClient, LLMError

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentServices",
    "CreateError",
    "GuidanceEffect",
    "GuidanceError",
    "GuidanceNotUnderstood",
    "GuidanceSpec",
    "Operations",
    "StepOutcome",
    "Tick",
    "describe_validation_error",
]


def describe_validation_error(exc: Any, default: str) -> str:
    """'field: problem; other: problem' from a pydantic ValidationError, for user-facing errors."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or default}: {err['msg']}" for err in exc.errors())


class CreateError(ValueError):
    """A session cannot be created as asked (bad config, missing conversation, ...)."""


class AgentConfig(BaseModel):
    """Base of every creation config. ``interval`` is the heartbeat between ticks."""

    model_config = ConfigDict(extra="forbid")

    interval: float | None = Field(None, gt=0, le=86_400, description="seconds between ticks")


class StepOutcome(BaseModel):
    """What a tick produced. ``context_delta`` is merged into the session context."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "error", "info"] = "ok"
    text: str | None = None
    data: dict[str, Any] | None = None
    notes: str | None = None
    error: str | None = None
    context_delta: dict[str, Any] = Field(default_factory=dict)
    # The tick asks the session to stop after this step (it is destroyed cleanly).
    stop: bool = False
    # A tick that said nothing and changed nothing (an idle persona with no new message). The
    # runtime appends no step for it when its ``context_delta`` holds no key whose value differs
    # from the current context, unless the agent type's ``record_quiet_ticks`` is True: an idle
    # session would otherwise grow its history by one blank step per heartbeat forever.
    quiet: bool = False


@dataclass(slots=True)
class GuidanceEffect:
    """The result of applying guidance: a context delta, and whether to tick at once."""

    delta: dict[str, Any] = field(default_factory=dict)
    wake: bool = False


@dataclass(slots=True)
class Tick:
    """What ``do_tick`` sees: the step being produced and the session's context (read-only)."""

    seq: int
    iteration: int
    now: datetime
    context: dict[str, Any]
    # Set when the tick was started early by guidance or a new message, not by the heartbeat.
    woken: bool = False


@dataclass(slots=True)
class AgentServices:
    """What the host lends an agent: the LLM client, the store, and a way to wake sessions.

    ``store`` is an ``agentd.store.Store`` (typed loosely so agents need not import the store).
    """

    llm: LLMClient
    store: Any
    session_id: str
    agent_id: str
    # Called by agents that watch something (e.g. a conversation) to request an early tick.
    wake: Callable[[], None] = lambda: None
    # Registers interest in a conversation so the host wakes this session on new messages.
    watch_conversation: Callable[[str], None] = lambda _cid: None
    extras: dict[str, Any] = field(default_factory=dict)


class Agent:
    """Base class for agent types. Subclasses set ``type_name``, ``config_model``, ``guidance_model``."""

    type_name: ClassVar[str] = ""
    config_model: ClassVar[type[AgentConfig]] = AgentConfig
    guidance_model: ClassVar[type[BaseModel]] = BaseModel
    # The guidance operations this type accepts (None: no guidance, unless the class overrides
    # ``normalize_guidance`` itself, as types written before operations existed do).
    guidance_spec: ClassVar[GuidanceSpec | None] = None
    # Stop the session (status error) after this many consecutive error steps; None = never.
    max_consecutive_errors: ClassVar[int | None] = None
    # Keep a step for every quiet tick (``StepOutcome.quiet``) too, e.g. for a type whose
    # users want a visible heartbeat; off by default so idle sessions cost no storage.
    record_quiet_ticks: ClassVar[bool] = False

    def __init__(self, config: AgentConfig, services: AgentServices) -> None:
        self.config = config
        self.services = services

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def parse_config(cls, raw: dict[str, Any]) -> AgentConfig:
        """Validate a creation config; raises CreateError with a readable message."""
        from pydantic import ValidationError

        try:
            return cls.config_model.model_validate(raw)
        except ValidationError as exc:
            problems = describe_validation_error(exc, "config")
            raise CreateError(f"invalid {cls.type_name} config: {problems}") from exc

    async def validate_create(self) -> None:
        """Check the world before the session exists; raise CreateError to refuse."""

    def conversation_id(self) -> str | None:
        """The conversation this session is bound to, if any (stored on the session row)."""
        return None

    # -- lifecycle hooks ---------------------------------------------------------------------

    def initial_context(self) -> dict[str, Any]:
        return {}

    async def on_start(self, context: dict[str, Any]) -> None:
        """The session starts or resumes in this process with ``context``."""

    async def do_tick(self, tick: Tick) -> StepOutcome:
        raise NotImplementedError

    def normalize_guidance(self, raw: dict[str, Any] | list[Any] | str) -> BaseModel:
        """Structured guidance is validated; free text is parsed into the same ``Operations``."""
        if self.guidance_spec is None:
            raise GuidanceError(f"{self.type_name} sessions take no guidance")
        return self.guidance_spec.normalize(self.type_name, raw)

    async def understand_guidance(self, raw: dict[str, Any] | list[Any] | str) -> tuple[BaseModel, str]:
        """``(normalized, interpreted_by)``: by ``structured`` input, the ``parser``, or the ``llm``.

        Free text no phrase rule reads goes to the LLM client's ``interpret_guidance`` when it
        has one that answers (a real provider; the offline generator answers None, so the
        parser's error stays). What the model returns is validated like any other input. An
        LLM failure rejects the guidance with both reasons. The caller bounds the whole call
        with a timeout (the runtime uses the tick timeout), so a slow model cannot wedge it.
        """
        try:
            normalized = self.normalize_guidance(raw)
        except GuidanceNotUnderstood as exc:
            spec = self.guidance_spec
            interpret = getattr(self.services.llm, "interpret_guidance", None)
            if spec is None or interpret is None:
                raise
            try:
                ops = await interpret(self.type_name, exc.text, "\n".join(spec.help_lines()), spec.field_kinds)
            except LLMError as err:
                raise GuidanceError(
                    f"{exc.problem}, and asking the LLM failed ({err.reason}: {err.message}){exc.teaching}"
                ) from None
            if ops is None:
                raise
            if not ops:
                raise GuidanceError(f"{exc.problem}, and the LLM found no operation in it{exc.teaching}") from None
            return spec.validate(self.type_name, ops, source=f"the LLM read {clip(exc.text)!r} as"), "llm"
        return normalized, "parser" if isinstance(raw, str) else "structured"

    def apply_guidance(self, guidance: BaseModel, context: dict[str, Any]) -> GuidanceEffect:
        """The effect of normalized guidance (``Operations`` unless ``normalize_guidance`` is overridden)."""
        raise GuidanceError(f"{self.type_name} sessions take no guidance")

    async def on_stop(self, context: dict[str, Any]) -> None:
        """The session stops in this process (destroyed, stopped itself, or host shutdown)."""

    async def reconcile(self, context: dict[str, Any]) -> StepOutcome | None:
        """An effect of an earlier tick that landed but was never recorded by a step, as an outcome.

        A tick that posted somewhere outside the session (a persona's reply) and was then killed
        or timed out leaves that effect unrecorded; the next tick finds it. The runtime also
        asks here before a pause or a destroy, after which no tick may come for a long time.
        Return None when there is nothing to record (the default).
        """
        return None


AgentFactory = Callable[[AgentConfig, AgentServices], Agent]
AsyncHook = Callable[[], Awaitable[None]]
