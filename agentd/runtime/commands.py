"""What the host hands a session and what it gets back: commands, their results, refusals.

Shared by the session loop (``agentd.runtime.session``), the host that routes claimed actions
to it, the batch create path and the answers for sessions no host runs (``unhosted``), so that
none of them imports the others just for these types.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActionRejected", "Command", "CommandResult", "SessionGone"]

# (the action's result, the writer generation that makes it durable)
CommandResult = tuple[dict[str, Any], int]


class ActionRejected(Exception):
    """The command cannot be applied; the message is recorded on the action for the user.

    ``code`` (an ``agentd.protocol.ErrorCode``) is recorded beside it: clients tell "no such
    session" from "refused" by the code, never by parsing the message.
    """

    def __init__(self, message: str, *, code: str = "rejected") -> None:
        super().__init__(message)
        self.code = code


class SessionGone(ActionRejected):
    """The session finished (stopped, or shut down with its host) before applying the command.

    The host tells the two apart: at a shutdown it hands the action back to the queue, so that
    the next owner applies it, instead of failing it for good.
    """


@dataclass(slots=True)
class Command:
    kind: str  # create | pause | resume | interrupt | destroy | shutdown
    payload: dict[str, Any] = field(default_factory=dict)
    future: asyncio.Future[CommandResult] | None = None
    # The queued action this command applies; recorded on the step it causes.
    action_id: str | None = None
