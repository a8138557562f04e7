"""``--follow`` from the gateway when it is reachable, else by tailing LanceDB here.

The gateway already tails the ``steps`` and ``messages`` tables for every subscriber, with
exactly-once, in-order delivery per room and a ``since`` to resume from (README, gateway
section), so following through it costs a WebSocket instead of a LanceDB import and a poll
loop per follower. After a disconnect (a restart: 1012; a slow reader: 4008; a network blip)
the stream resubscribes with ``since`` = the last position printed; when the gateway cannot be
reached at all (disabled, not started, wrong token) the follower tails the tables itself
(``agentctl.follow``) from that same position, so nothing is printed twice or skipped.

Blocking (``websockets.sync``): a follower does one thing at a time, and Ctrl-C arrives as
KeyboardInterrupt in the main thread, which the command turns into exit 130.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from agentd.ids import shard_for
from agentd.paths import LightConfig

__all__ = ["GatewayUnavailable", "RoomStream", "gateway_url", "message_row", "step_row"]

log = logging.getLogger(__name__)

# Reconnecting after a close: this many attempts, then the caller falls back to tailing.
RECONNECT_ATTEMPTS = 5
RECONNECT_DELAY = 0.2
OPEN_TIMEOUT = 2.0
RECV_TICK = 1.0
# The keys of a step as `steps --json` prints it (agentd.store.steps.StepRecord), in that order.
STEP_KEYS = (
    "session_id",
    "agent_id",
    "shard",
    "seq",
    "ts",
    "status",
    "kind",
    "text",
    "data",
    "state",
    "guidance",
    "notes",
    "latency_ms",
    "error",
    "epoch",
    "action_id",
)
MESSAGE_KEYS = ("message_id", "conversation_id", "author_id", "role", "text", "reply_to", "meta", "created_at")


class GatewayUnavailable(Exception):
    """The gateway cannot be used (not configured, not reachable, refused us)."""


def gateway_url(light: LightConfig) -> str | None:
    """``ws://host:port/`` of the configured gateway; None when it is disabled."""
    if not light.gateway_enabled or not light.gateway_port:
        return None
    host = light.gateway_host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{light.gateway_port}/"


def step_row(frame: dict[str, Any], num_shards: int) -> dict[str, Any]:
    """A gateway step frame as ``steps --json`` prints a step (``epoch``: the gateway does not send it)."""
    row = {key: frame.get(key) for key in STEP_KEYS}
    row["shard"] = shard_for(str(frame["session_id"]), num_shards)
    return row


def message_row(frame: dict[str, Any]) -> dict[str, Any]:
    return {key: frame.get(key) for key in MESSAGE_KEYS}


class RoomStream:
    """Follow one room of the gateway from position ``since``; ``position`` is the last one delivered.

    ``emit`` gets each batch (a snapshot's rows, or one live event) in order; rows at or below
    the current position are dropped, so a resubscription never repeats one.
    """

    def __init__(self, light: LightConfig, room: str, since: int, rows_key: str) -> None:
        url = gateway_url(light)
        if url is None:
            raise GatewayUnavailable("the gateway is disabled in the config")
        self.url = url
        self.token = light.gateway_token
        self.room = room
        self.position = since
        self.rows_key = rows_key  # "steps" or "messages"
        self.connected = False  # set once a connection opened: a later fallback is worth a word

    def _connect(self) -> Any:
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            return connect(
                self.url,
                additional_headers=headers,
                open_timeout=OPEN_TIMEOUT,
                close_timeout=1.0,
                proxy=None,
                compression=None,
                max_size=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise GatewayUnavailable(f"the gateway at {self.url} is not reachable: {exc}") from exc

    def run(self, emit: Callable[[list[dict[str, Any]]], None]) -> None:
        """Stream until Ctrl-C (KeyboardInterrupt propagates); GatewayUnavailable when it cannot go on."""
        from websockets.exceptions import ConnectionClosed

        attempts = 0
        while True:
            try:
                ws = self._connect()
                self.connected = True
            except GatewayUnavailable:
                attempts += 1
                if not self.connected or attempts > RECONNECT_ATTEMPTS:  # never reached: fall back at once
                    raise
                time.sleep(RECONNECT_DELAY * attempts)
                continue
            try:
                ws.send(json.dumps({"op": "subscribe", "room": self.room, "since": self.position}))
                while True:
                    try:
                        raw = ws.recv(timeout=RECV_TICK)
                    except TimeoutError:
                        continue
                    attempts = 0
                    self._handle(json.loads(raw), emit)
            except ConnectionClosed as exc:
                log.debug("gateway closed the stream (%s); resubscribing from %s", exc, self.position)
                attempts += 1
                if attempts > RECONNECT_ATTEMPTS:
                    raise GatewayUnavailable(f"the gateway keeps closing the stream: {exc}") from exc
                time.sleep(RECONNECT_DELAY)
            finally:
                ws.close()

    def _handle(self, frame: dict[str, Any], emit: Callable[[list[dict[str, Any]]], None]) -> None:
        kind = frame.get("type")
        if kind == "snapshot":
            rows = frame.get(self.rows_key) or []
        elif kind in ("step", "message"):
            rows = [frame]
        elif kind == "error":
            raise GatewayUnavailable(f"the gateway refused the subscription: {frame.get('error')}")
        else:  # snapshot_page, pong, ...
            return
        fresh = [row for row in rows if int(row["seq"]) > self.position]
        if fresh:
            self.position = int(fresh[-1]["seq"])
            emit(fresh)
