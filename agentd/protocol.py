"""Every message between agentd processes: the control socket and the supervisor↔child pipes.

One module, imported by both ends (agentctl, the gateway and the supervisor on the control
socket; the supervisor and its workers on the pipes), so a message has exactly one definition.
It imports only pydantic and the standard library: agentctl loads it on every command, and a
whole ``agentctl pause`` must cost little more than an interpreter start (no LanceDB, no
pyarrow, no agentd runtime).

Framing on both channels: one JSON object per line (UTF-8, ``\\n``-terminated).

**Control socket** (owner-only unix socket; a peer of another uid is refused). A client sends
one request per line, each with ``"v": PROTOCOL_VERSION`` and an ``op``:

- ``submit``: a batch of actions (one item is a batch of one). The supervisor validates each
  item (invalid ones are reported, never appended), group-commits the valid ones into the
  LanceDB ``actions`` table (the source of truth; workers claim them exactly as before), wakes
  the owning workers, and answers ``accepted``. With ``wait`` it then streams one ``ack`` per
  action as the workers' acknowledgements are pushed to it (never by polling the table), and
  ends with ``end`` (listing the actions still pending when ``timeout`` ran out).
- ``read``: one of the read views (``list``, ``status``, ``steps``, ...), answered ``result``.
- ``cancel``: withdraw actions no worker has claimed yet.
- ``status`` and ``wake`` (unversioned, kept for older clients and the gateway's daemon view).

Any request can be answered ``error`` with a typed ``code``; a line that is not a valid request
gets ``error`` with ``bad_request`` and the connection stays usable; an over-long line closes it.

**Pipes** (socketpair, supervisor ↔ worker or gateway): the first line to a child is always the
settings (``Hello``); then workers send ``ready``/``standby``/``heartbeat``, ``acked`` (the
acknowledgements they just committed, pushed on to waiting clients) and ``commit`` (sessions
and conversations with newly committed rows, forwarded to the gateway as a read hint); the
supervisor sends ``assign``, ``wake`` and ``stop``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from agentd.ids import validate_id

__all__ = [
    "HINT_ROWS_MAX_BYTES",
    "MAX_BATCH",
    "MAX_LINE",
    "PROTOCOL_VERSION",
    "Accepted",
    "AcceptedItem",
    "AckInfo",
    "AckReply",
    "Acked",
    "ActionItem",
    "Assign",
    "CancelRequest",
    "ChildMessage",
    "CommitHint",
    "ControlReply",
    "ControlRequest",
    "End",
    "ErrorCode",
    "ErrorReply",
    "Heartbeat",
    "Hello",
    "InvalidItem",
    "LegacyReply",
    "ParentMessage",
    "ReadRequest",
    "Ready",
    "ResultReply",
    "Standby",
    "StatusRequest",
    "Stop",
    "SubmitRequest",
    "VersionMismatch",
    "Wake",
    "WakeRequest",
    "dump_line",
    "parse_child_message",
    "parse_parent_message",
    "parse_reply",
    "parse_request",
]

PROTOCOL_VERSION = 1
# A request line may hold a batch of 10,000 creates with their configs; a longer line is refused
# and its connection closed (the daemon never buffers an unbounded line).
MAX_LINE = 16 * 1024 * 1024
MAX_BATCH = 100_000
# Rows ride along a commit hint up to this many Arrow bytes (about 1,000 steps); bigger batches
# send the version only and the gateway reads them back.
HINT_ROWS_MAX_BYTES = 512 * 1024

ActionKind = Literal["create", "pause", "resume", "interrupt", "destroy"]
# Why an action or a request did not succeed. Clients map these to exit codes; never parse text.
ErrorCode = Literal[
    "not_found",  # no such session (or action, conversation)
    "rejected",  # the worker refused it (already exists, invalid guidance, ...)
    "invalid",  # the item itself is malformed (caught before it was queued)
    "cancelled",  # withdrawn with `agentctl cancel` before a worker claimed it
    "bad_request",  # the request line is not a valid request
    "version",  # the client speaks another protocol version
    "unavailable",  # the daemon cannot serve it now (stopping, storage error, too many clients)
    "forbidden",  # the client runs as another user than the daemon
    "internal",  # a bug: the message says what failed
]
ViewName = Literal[
    "list", "status", "steps", "conversation_show", "conversation_list", "daemon_status", "types", "actions"
]


class _Message(BaseModel):
    # Unknown keys are typos or a newer peer's additions: a newer peer bumps the version instead.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# -- control socket: requests ----------------------------------------------------------------


class ActionItem(_Message):
    """One action to queue: what ``agentctl pause|resume|interrupt|destroy|create`` sends."""

    kind: ActionKind
    session_id: str
    payload: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, value: str) -> str:
        return validate_id(value, "session id")


class SubmitRequest(_Message):
    v: int = PROTOCOL_VERSION
    op: Literal["submit"] = "submit"
    # Items stay raw here: each one is validated alone, so one bad item is reported by its
    # index while the valid ones are still queued (a batch is never refused whole for one item).
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)
    wait: bool = True
    timeout: float = Field(default=30.0, ge=0, le=86_400)


class ReadRequest(_Message):
    v: int = PROTOCOL_VERSION
    op: Literal["read"] = "read"
    view: ViewName
    # Validated by the view's own parameter model on the daemon (agentd.views).
    params: dict[str, Any] = Field(default_factory=dict)


class CancelRequest(_Message):
    v: int = PROTOCOL_VERSION
    op: Literal["cancel"] = "cancel"
    action_ids: list[str] = Field(min_length=1, max_length=MAX_BATCH)


class StatusRequest(_Message):
    """The daemon's own status (unversioned: the gateway and older clients send it bare)."""

    v: int = PROTOCOL_VERSION
    op: Literal["status"] = "status"


class WakeRequest(_Message):
    """A hint that ``shard`` has new actions (sent by the no-daemon path of older clients)."""

    v: int = PROTOCOL_VERSION
    op: Literal["wake"] = "wake"
    shard: int | None = None


ControlRequest = Annotated[
    SubmitRequest | ReadRequest | CancelRequest | StatusRequest | WakeRequest, Field(discriminator="op")
]

# -- control socket: replies -----------------------------------------------------------------


class AcceptedItem(_Message):
    index: int
    action_id: str
    session_id: str
    kind: str
    # Already finished when submitted (an idempotency key seen before): its ack follows at once.
    existing: bool = False


class InvalidItem(_Message):
    index: int
    error: str
    code: ErrorCode = "invalid"
    session_id: str | None = None


class Accepted(_Message):
    type: Literal["accepted"] = "accepted"
    actions: list[AcceptedItem]
    invalid: list[InvalidItem] = Field(default_factory=list)


class AckInfo(_Message):
    """A worker's committed acknowledgement of one action (also the ``ack`` reply to a client)."""

    action_id: str
    session_id: str
    kind: str  # an open set in the table; submissions are limited to ActionKind
    status: Literal["done", "failed"]  # a withdrawn action is failed with the code "cancelled"
    result: dict[str, Any] | None = None
    error: str | None = None
    # None on a failure recorded by an older agentd (clients then fall back to the message).
    code: str | None = None


class AckReply(AckInfo):
    type: Literal["ack"] = "ack"


class End(_Message):
    type: Literal["end"] = "end"
    pending: list[str] = Field(default_factory=list)  # action ids not acknowledged within the timeout


class ResultReply(_Message):
    type: Literal["result"] = "result"
    data: Any = None


class ErrorReply(_Message):
    type: Literal["error"] = "error"
    code: ErrorCode
    error: str


class LegacyReply(BaseModel):
    """``{"ok": ..., ...}``: the answer to the unversioned ``status`` and ``wake`` requests."""

    model_config = ConfigDict(extra="allow", defer_build=True)
    ok: bool
    error: str | None = None


ControlReply = Annotated[Accepted | AckReply | End | ResultReply | ErrorReply, Field(discriminator="type")]

# -- pipes: supervisor -> child ----------------------------------------------------------------


class Hello(_Message):
    """The first line to every child: the supervisor's validated settings (agentd.supervision.handoff)."""

    type: Literal["settings"] = "settings"
    settings: dict[str, Any]
    source_file: str | None = None


class Assign(_Message):
    """A warm spare takes worker slot ``index`` with ``epoch``, running these settings."""

    type: Literal["assign"] = "assign"
    index: int = Field(ge=0)
    workers: int = Field(ge=1)
    epoch: int = Field(ge=0)
    settings: dict[str, Any]
    source_file: str | None = None


class Wake(_Message):
    """New actions wait in the worker's shards. ``actions`` are the rows the supervisor just
    appended (``ActionRecord`` as JSON, validated by the worker), so the worker claims them by id
    without scanning the table (a big batch comes in several wakes); a wake without them, or with
    ``look``, makes it scan the table too."""

    type: Literal["wake"] = "wake"
    shard: int | None = None
    actions: list[dict[str, Any]] = Field(default_factory=list)
    look: bool = False


class Stop(_Message):
    type: Literal["stop"] = "stop"


class CommitHint(_Message):
    """Rows of these sessions (steps) and conversations (messages) were just committed.

    Sent by a worker after each commit and forwarded by the supervisor to the gateway, which
    reads them at once instead of at its next poll. A hint only; losing one costs latency.
    """

    type: Literal["commit"] = "commit"
    sessions: list[str] = Field(default_factory=list)
    conversations: list[str] = Field(default_factory=list)
    # The ``steps`` table version the commit created and, when the batch is small enough
    # (``HINT_ROWS_MAX_BYTES``), its rows as a base64 Arrow IPC stream: the gateway delivers
    # them without reading the table back. Exact because one ``add()`` creates exactly one
    # version holding exactly those rows; a version without rows here is read from the table.
    steps_version: int | None = None
    steps_ipc: str | None = None


ParentMessage = Annotated[Hello | Assign | Wake | Stop | CommitHint, Field(discriminator="type")]

# -- pipes: child -> supervisor ----------------------------------------------------------------


class Ready(_Message):
    type: Literal["ready"] = "ready"
    pid: int
    sessions: int = 0
    shards: list[int] = Field(default_factory=list)
    config_digest: str | None = None


class Standby(_Message):
    type: Literal["standby"] = "standby"
    pid: int


class Heartbeat(BaseModel):
    """A worker's counters, every ``heartbeat_interval`` (from its event loop, so a blocked loop
    misses its beat). Open to new counters: ``status`` and ``/metrics`` show what they know."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)
    type: Literal["heartbeat"] = "heartbeat"
    pid: int
    uptime: float = 0.0
    sessions: int = 0


class Acked(_Message):
    """Acknowledgements a worker has just committed to the actions table, pushed to waiters.

    ``step_only``: pushed once the steps recording these actions committed, before their rows
    (and the sessions' rows) did; the same acknowledgements come again, without it, when the
    rows have followed. Waiters are answered by the first; reads of session rows wait for the
    second (``AckRouter.settled``).
    """

    type: Literal["acked"] = "acked"
    acks: list[AckInfo]
    step_only: bool = False


ChildMessage = Annotated[Ready | Standby | Heartbeat | Acked | CommitHint, Field(discriminator="type")]

# -- encoding ----------------------------------------------------------------------------------

_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _validate(kind: str, union: Any, data: Any) -> Any:
    """Validate ``data`` against one of the unions above (adapters built on first use: agentctl
    pays only for the one it needs); ValueError with a readable reason."""
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(union)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise ValueError(_describe(exc)) from exc


def dump_line(message: BaseModel) -> bytes:
    """One message as a protocol line."""
    return message.model_dump_json(exclude_none=False).encode() + b"\n"


def _load(line: bytes | str) -> Any:
    try:
        return json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc


def parse_request(line: bytes | str) -> SubmitRequest | ReadRequest | CancelRequest | StatusRequest | WakeRequest:
    """A control request; ValueError (with a readable reason) for anything else.

    A request from another protocol version raises ``VersionMismatch`` so that the daemon can
    answer with the ``version`` code instead of a confusing field error.
    """
    data = _load(line)
    if not isinstance(data, dict):
        raise ValueError("a request is a JSON object")
    version = data.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(f"protocol version {version!r} is not supported (this daemon speaks {PROTOCOL_VERSION})")
    request: SubmitRequest | ReadRequest | CancelRequest | StatusRequest | WakeRequest = _validate(
        "request", ControlRequest, data
    )
    return request


def parse_reply(line: bytes | str) -> Accepted | AckReply | End | ResultReply | ErrorReply:
    reply: Accepted | AckReply | End | ResultReply | ErrorReply = _validate("reply", ControlReply, _load(line))
    return reply


def parse_parent_message(line: bytes | str) -> Hello | Assign | Wake | Stop | CommitHint:
    message: Hello | Assign | Wake | Stop | CommitHint = _validate("parent", ParentMessage, _load(line))
    return message


def parse_child_message(line: bytes | str) -> Ready | Standby | Heartbeat | Acked | CommitHint:
    message: Ready | Standby | Heartbeat | Acked | CommitHint = _validate("child", ChildMessage, _load(line))
    return message


class VersionMismatch(ValueError):
    """The peer speaks another protocol version."""


def _describe(exc: ValidationError) -> str:
    """The first few validation errors as ``field: problem`` (what a person can act on)."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "message"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
