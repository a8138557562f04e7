"""Calling a plug-in agent's tick safely: what it returned, and a tick coroutine already started.

Split from the session loop (``agentd.runtime.session``): the loop decides when to call, this
module holds the rules about the calls themselves. ``malformed`` says why an outcome cannot be
stored (a misbehaving plug-in gets an error step, never a broken row); ``Resume`` awaits the rest
of a coroutine whose first step already ran, so a tick that finishes without suspending needs
no timeout timer; ``understand`` turns guidance into its effect or into the refusal the user
reads, whatever the agent raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from typing import Any

from pydantic import BaseModel

from agentd.agents.base import Agent, GuidanceEffect, GuidanceError, StepOutcome
from agentd.runtime.commands import ActionRejected

__all__ = ["Resume", "malformed", "understand"]

log = logging.getLogger(__name__)


async def understand(
    agent: Agent, session_id: str, raw: Any, context: dict[str, Any], *, timeout: float
) -> tuple[BaseModel, str, GuidanceEffect]:
    """Guidance -> (normalized operations, who interpreted them, their effect on ``context``).

    Raises ``ActionRejected`` with the message the user reads for anything else: a shape that
    is no guidance (with the agent type's own examples), guidance its parser refuses, an LLM that
    does not answer within ``timeout`` (the tick timeout: a slow model rejects this guidance
    instead of holding the session's inbox), or a bug in the agent type, which must not take
    the session down. ``context`` is a copy: nothing changes until the caller applies the effect.
    """
    empty = isinstance(raw, list | str) and not (raw.strip() if isinstance(raw, str) else raw)
    if not isinstance(raw, dict | list | str) or empty:
        spec = agent.guidance_spec
        teach = spec.teach(agent.type_name) if spec is not None else ""
        raise ActionRejected(
            f"session {session_id}: guidance must be a JSON object, a non-empty JSON array of operations, "
            f"or text{teach}"
        )
    try:
        async with asyncio.timeout(timeout):
            normalized, interpreted_by = await agent.understand_guidance(raw)
        effect = agent.apply_guidance(normalized, context)
    except GuidanceError as exc:
        raise ActionRejected(f"session {session_id}: {exc}") from exc
    except TimeoutError:
        raise ActionRejected(
            f"session {session_id}: the guidance was not understood within {timeout:g}s "
            "([runtime] tick_timeout: the LLM did not answer in time); nothing changed"
        ) from None
    except Exception as exc:  # a bug in the agent type must not take the session down
        log.exception("guidance for session %s failed", session_id)
        raise ActionRejected(f"guidance failed: {exc}") from exc
    return normalized, interpreted_by, effect


_STEP_STATUSES = frozenset(("ok", "error", "info"))
_OPTIONAL_TEXT = (str, type(None))


def malformed(outcome: object) -> str | None:
    """Why ``outcome`` cannot be stored, or None. A few type checks: ``model_construct`` skips validation."""
    if not isinstance(outcome, StepOutcome):
        return f"do_tick returned {type(outcome).__name__}, not a StepOutcome"
    if outcome.status not in _STEP_STATUSES:
        return f"do_tick returned status {outcome.status!r} (ok, error or info)"
    if not (
        isinstance(outcome.text, _OPTIONAL_TEXT)
        and isinstance(outcome.notes, _OPTIONAL_TEXT)
        and isinstance(outcome.error, _OPTIONAL_TEXT)
        and isinstance(outcome.data, dict | None)
        and isinstance(outcome.context_delta, dict)
    ):
        return "do_tick returned a StepOutcome with fields of the wrong type"
    return None


class Resume:
    """Awaits the rest of a coroutine whose first step already ran and yielded ``pending``.

    What ``await coro`` would have done from there on: the enclosing task waits on what the
    coroutine yields, and sends, throws (cancellation, timeout) and closes go through to it.
    """

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        self.pending = None
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    pending = coro.throw(exc)
                except StopIteration as finished:
                    return finished.value
                continue
            try:
                pending = coro.send(value)
            except StopIteration as finished:
                return finished.value
