"""The gateway's wire protocol: JSON text frames, one pydantic model per frame shape.

Why models at the boundary: a client written in any language gets the same validation and the
same error wording, and the README (gateway section) and the tests check frames against these
classes rather than against our own client code. Client ops are strict (no "5" for 5, no
unknown keys) so that a typo is answered with an error event instead of being ignored.

Hot path: a step is serialised once per step (``step_body_json``) and the room is spliced in
per room (``step_frame``); ``StepEvent`` is the model that frame validates against.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agentd.store.conversations import MessageRecord
from agentd.store.steps import StepRecord

__all__ = [
    "CONTROL_KINDS",
    "OVERFLOW_REASON",
    "RESTART_REASON",
    "SINCE_LIMIT",
    "AckEvent",
    "ActionOp",
    "ClientOp",
    "CloseCodes",
    "ErrorCode",
    "ErrorEvent",
    "MessageBody",
    "MessageEvent",
    "PingOp",
    "PongEvent",
    "PostOp",
    "PostedEvent",
    "SnapshotEvent",
    "SnapshotPageEvent",
    "StepBody",
    "StepEvent",
    "SubscribeOp",
    "UnsubscribeOp",
    "UnsubscribedEvent",
    "message_body",
    "message_frame",
    "parse_client_frame",
    "step_body",
    "step_body_json",
    "step_frame",
]

# A seq above this cannot exist (int64 column); refusing it keeps SQL literals in range.
SINCE_LIMIT = 2**62
# Python's decoder stops near its recursion limit (~1,000); only used in the error text.
MAX_DEPTH_HINT = 900

# Close reasons (at most 123 bytes, RFC 6455 §5.5.1) tell a client how to resume exactly: an
# agent room has one position per session, so it resumes with a map, never with one integer.
RESUME_HINT = 'resubscribe with since=<last seq> (run::<agent>::* rooms: {"<session_id>": <last seq>})'
RESTART_REASON = "gateway restarting; reconnect, " + RESUME_HINT
OVERFLOW_REASON = "slow consumer: queue overflowed; " + RESUME_HINT


class CloseCodes(IntEnum):
    """Close codes the gateway sends. 4000-4999 are private-use codes (RFC 6455 §7.4.2)."""

    # Shutdown of the gateway process: reconnect and resubscribe with since=<last seq>.
    SERVICE_RESTART = 1012
    # Used when the gateway stops for good (not a restart).
    GOING_AWAY = 1001
    # Sent by websockets itself for a frame above the hard size limit (4 x max_frame_bytes).
    MESSAGE_TOO_BIG = 1009
    # A bug in the gateway; the connection's subscriptions are gone.
    INTERNAL_ERROR = 1011
    # The subscriber's bounded queue overflowed: it read too slowly. Resubscribe with since.
    SLOW_CONSUMER = 4008


ErrorCode = Literal[
    "bad_json",
    "bad_frame",
    "unknown_op",
    "invalid",
    "bad_room",
    "too_big",
    "too_many_rooms",
    "unavailable",
    # A session room names the session under another agent id than its own.
    "wrong_agent",
    # Control ops on a read-only gateway ([gateway] control = false).
    "forbidden",
    # Control op outcomes: the worker refused it / no such session or conversation / no ack in time.
    "rejected",
    "not_found",
    "timeout",
]
# Actions the console may submit (create stays with agentctl: it needs a type's full config).
CONTROL_KINDS = ("pause", "resume", "interrupt", "destroy")


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SubscribeOp(_Op):
    """``{"op":"subscribe","room":...,"since":N}``: snapshot of steps with seq > since, then live.

    ``since`` is a per-session seq for ``run::<agent>::<session>``, a message position for
    ``conv::<id>``; for ``run::<agent>::*`` it is 0 or an object ``{"<session_id>": seq}``
    (sessions not named start at 0). One integer above 0 is refused for an agent room: its
    sessions are at different seqs, so it would skip steps of some and repeat others.
    """

    op: Literal["subscribe"]
    room: str
    since: Annotated[int, Field(ge=0, le=SINCE_LIMIT)] | dict[str, Annotated[int, Field(ge=0, le=SINCE_LIMIT)]] = 0


class UnsubscribeOp(_Op):
    op: Literal["unsubscribe"]
    room: str


class PingOp(_Op):
    """Application-level ping; ``id`` is echoed in the pong (clients use it to time a round trip)."""

    op: Literal["ping"]
    id: str | int | None = None


class ActionOp(_Op):
    """``{"op":"action","kind":"pause","session_id":...}``: a control action, answered by an ``ack``.

    It goes through the daemon's control API (the path agentctl uses); ``id`` is echoed in the
    ``ack`` so a client can match answers to the ops it sent. ``payload`` is the action's
    payload as agentctl builds it: ``{"guidance": {...} | "free text", "now": bool}`` for
    ``interrupt``, ``{"reason": "..."}`` for ``destroy``.
    """

    op: Literal["action"]
    kind: Literal["pause", "resume", "interrupt", "destroy"]
    session_id: Annotated[str, Field(min_length=1, max_length=128)]
    payload: dict[str, Any] = Field(default_factory=dict)
    id: str | int | None = None
    timeout: Annotated[float, Field(gt=0, le=120)] = 30.0


class PostOp(_Op):
    """``{"op":"post","conversation_id":...,"text":...}``: a user message, answered ``posted``."""

    op: Literal["post"]
    conversation_id: Annotated[str, Field(min_length=1, max_length=128)]
    text: Annotated[str, Field(min_length=1, max_length=10_000)]
    author: Annotated[str, Field(min_length=1, max_length=128)] = "user"
    id: str | int | None = None


ClientFrame = SubscribeOp | UnsubscribeOp | PingOp | ActionOp | PostOp
ClientOp = Annotated[ClientFrame, Field(discriminator="op")]
_CLIENT_OP: TypeAdapter[ClientFrame] = TypeAdapter(ClientOp)
_KNOWN_OPS = ("subscribe", "unsubscribe", "ping", "action", "post")


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepBody(_Event):
    """One step as clients see it: the ``steps`` row without the writer's bookkeeping columns."""

    session_id: str
    agent_id: str
    seq: int
    ts: datetime
    status: str
    kind: str | None = None
    text: str | None = None
    data: dict[str, Any] | None = None
    state: dict[str, Any] = Field(default_factory=dict)
    guidance: dict[str, Any] | None = None
    notes: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    # The control action that caused the step (guidance, lifecycle); None for ticks.
    action_id: str | None = None


class StepEvent(StepBody):
    type: Literal["step"] = "step"
    room: str


class MessageBody(_Event):
    """One conversation message; ``seq`` is its 1-based position in the conversation."""

    conversation_id: str
    seq: int
    message_id: str
    author_id: str
    role: str
    text: str
    reply_to: str | None = None
    meta: dict[str, Any] | None = None
    created_at: datetime


class MessageEvent(MessageBody):
    type: Literal["message"] = "message"
    room: str


class SnapshotEvent(_Event):
    """First frame of a subscription. ``steps`` for run rooms, ``messages`` for conv rooms.

    ``more`` is true when ``snapshot_page`` frames follow with the rest of an agent room's
    sessions (``state.sessions``); history beyond what fits follows as ``step`` events.
    """

    type: Literal["snapshot"] = "snapshot"
    room: str
    state: dict[str, Any] | None
    steps: list[StepBody] | None = None
    messages: list[MessageBody] | None = None
    more: bool = False


class SnapshotPageEvent(_Event):
    """More sessions of an agent room's snapshot state, so that no frame nears 1 MiB."""

    type: Literal["snapshot_page"] = "snapshot_page"
    room: str
    sessions: list[dict[str, Any]]
    more: bool


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    error: str
    code: ErrorCode
    op: str | None = None
    room: str | None = None


class PongEvent(_Event):
    type: Literal["pong"] = "pong"
    id: str | int | None = None


class AckEvent(_Event):
    """The answer to an ``action`` op: the worker's acknowledgement, or why there is none.

    ``status`` is ``done`` or ``failed`` (with ``code`` ``rejected`` or ``not_found``) once a
    worker acknowledged; ``pending`` (code ``timeout``) when none did in time: the action stays
    queued and is applied when a worker claims it. ``seq`` is the step the action applied at.
    """

    type: Literal["ack"] = "ack"
    id: str | int | None = None
    action_id: str | None
    session_id: str
    kind: str
    status: Literal["done", "failed", "pending"]
    result: dict[str, Any] | None = None
    error: str | None = None
    code: ErrorCode | None = None
    seq: int | None = None


class PostedEvent(_Event):
    """The answer to a ``post`` op: the new message's id, or (``failed``) why it was not posted."""

    type: Literal["posted"] = "posted"
    id: str | int | None = None
    conversation_id: str
    status: Literal["done", "failed"] = "done"
    message_id: str | None = None
    error: str | None = None
    code: ErrorCode | None = None


class UnsubscribedEvent(_Event):
    type: Literal["unsubscribed"] = "unsubscribed"
    room: str


_STEP_PRIVATE = {"shard", "epoch"}


def step_body(record: StepRecord) -> StepBody:
    return StepBody.model_validate(record.model_dump(exclude=_STEP_PRIVATE))


def step_body_json(record: StepRecord) -> str:
    """The step's fields as one JSON object, serialised once and shared by every room."""
    return record.model_dump_json(exclude=_STEP_PRIVATE)


def step_frame(room: str, body_json: str) -> str:
    """A ``step`` event for ``room``: the shared body with ``type`` and ``room`` spliced in front."""
    return '{"type":"step","room":' + json.dumps(room) + "," + body_json[1:]


def message_body(record: MessageRecord, seq: int) -> MessageBody:
    return MessageBody.model_validate({**record.model_dump(), "seq": seq})


def message_frame(room: str, record: MessageRecord, seq: int) -> str:
    return MessageEvent.model_validate({**record.model_dump(), "seq": seq, "room": room}).model_dump_json()


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"][1:]) or "frame"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_client_frame(data: bytes | str) -> ClientFrame | ErrorEvent:
    """Decode one client frame; a problem becomes an ErrorEvent to send back, never an exception."""
    try:
        obj = json.loads(data)
    except RecursionError:
        # A frame of 100k nested lists fits in max_frame_bytes; the decoder gives up on depth.
        return ErrorEvent(error=f"malformed JSON: nested deeper than {MAX_DEPTH_HINT} levels", code="bad_json")
    except (ValueError, UnicodeDecodeError) as exc:
        return ErrorEvent(error=f"malformed JSON: {exc}", code="bad_json")
    if not isinstance(obj, dict):
        return ErrorEvent(error="a frame must be a JSON object with an 'op' key", code="bad_frame")
    op = obj.get("op")
    if not isinstance(op, str) or op not in _KNOWN_OPS:
        shown = op if isinstance(op, str) else None
        return ErrorEvent(
            error=f"unknown op {op!r}; expected one of {', '.join(_KNOWN_OPS)}", code="unknown_op", op=shown
        )
    room = obj.get("room") if isinstance(obj.get("room"), str) else None
    try:
        return _CLIENT_OP.validate_python(obj)
    except ValidationError as exc:
        return ErrorEvent(error=f"invalid {op}: {_describe(exc)}", code="invalid", op=op, room=room)
    except RecursionError:
        return ErrorEvent(error=f"invalid {op}: nested too deeply", code="invalid", op=op, room=room)
