"""The gateway: a websockets server over two table tails.

Entry point for embedding and tests: ``serve_gateway(settings, started=..., stop=...)``; the
process around it (uvloop, signals, exit code) is ``agentd.gateway.process.run_gateway``. The
``Gateway`` class underneath owns the store connection, the tails and the server.

Limits and their reasons: frames up to ``max_frame_bytes`` are protocol frames; larger ones up
to ``HARD_FRAME_FACTOR`` times that are still read (websockets' ``max_size``) only to be
answered with a ``too_big`` error event, so the connection stays usable; beyond that
websockets closes with 1009, which bounds what one client can make us buffer. Compression is
off: permessage-deflate would compress the same event once per subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any
from urllib.parse import quote, quote_plus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from agentd.config import ConfigError, Settings
from agentd.gateway.auth import RedactSecrets, check_bind
from agentd.gateway.control_bridge import ControlBridge
from agentd.gateway.control_ops import ControlOps
from agentd.gateway.health import GatewayStats, HealthReport
from agentd.gateway.hints import HintedRows
from agentd.gateway.metrics import GatewayMetrics
from agentd.gateway.protocol import RESTART_REASON, CloseCodes
from agentd.gateway.read_api import ReadApi
from agentd.gateway.rooms import RoomRegistry
from agentd.gateway.step_tail import StepTail
from agentd.gateway.subscriber import Connection
from agentd.gateway.subscription import GatewayContext
from agentd.gateway.tailer import MessageTail
from agentd.gateway.web import QuietHttpLog, route
from agentd.protocol import MAX_LINE, CommitHint, parse_parent_message
from agentd.store import Store, StoreError

__all__ = [
    "Gateway",
    "GatewayStarted",
    "serve_gateway",
]

log = logging.getLogger(__name__)

HARD_FRAME_FACTOR = 4
CLOSE_TIMEOUT = 5.0
DB_WAIT_INTERVAL = 1.0
WS_LOGGER = "agentd.gateway.websockets"


class GatewayStarted(asyncio.Event):
    """An ``asyncio.Event`` that also says where the gateway listens (useful with port 0)."""

    def __init__(self) -> None:
        super().__init__()
        # Set by serve_gateway() just before set().
        self.port: int | None = None
        self.gateway: Gateway | None = None


class Gateway:
    """Store connection + step/message tails + websockets server. ``start()`` then ``close()``."""

    def __init__(self, settings: Settings, *, hint_fd: int | None = None) -> None:
        check_bind(settings.gateway)
        self.settings = settings
        self.config = settings.gateway
        self.stats = GatewayStats()
        self.registry = RoomRegistry()
        self.store: Any = None
        self.steps: StepTail | None = None
        self.messages: MessageTail | None = None
        # The console's reads and write ops: set by start() once the store is open.
        self.read_api: ReadApi | None = None
        self.control_ops: ControlOps | None = None
        # The supervisor's channel (commit hints), when run as its child; read by _read_hints().
        self._hint_fd = hint_fd
        self._hint_task: asyncio.Task[None] | None = None
        self.hints_received = 0
        # Rows the commit hints carried, served to the step tail instead of a read (hints.py).
        self.step_rows = HintedRows()
        self.metrics = GatewayMetrics(self)
        # Tail tasks, connections: set by start() / the handler; emptied by close().
        self.tasks: list[asyncio.Task[None]] = []
        self.connections: set[Connection] = set()
        self._ctx: GatewayContext | None = None
        self._server: Server | None = None
        self._closed: asyncio.Future[None] | None = None
        # Removed again by close(): websockets' DEBUG log shows request lines and headers.
        token = self.config.token
        self._redact = RedactSecrets([token, quote(token, safe=""), quote_plus(token, safe="")])
        self._quiet = QuietHttpLog()
        logging.getLogger(WS_LOGGER).addFilter(self._redact)
        logging.getLogger(WS_LOGGER).addFilter(self._quiet)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("gateway not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, *, stop: asyncio.Event | None = None) -> bool:
        """Open the store (waiting for it to exist), start the tails, listen. False if stopped first."""
        self.store = await self._open_store(stop)
        if self.store is None:
            return False
        poll = self.config.poll_interval
        chunk = max(1, self.config.max_queue // 2)
        self.steps = StepTail(
            self.store.steps, self.registry, self.stats.steps, poll_interval=poll, chunk=chunk, hints=self.step_rows
        )
        self.messages = MessageTail(
            self.store.messages, self.registry, self.stats.messages, poll_interval=poll, chunk=chunk
        )
        self.stats.steps.observer = self.stats.messages.observer = self.metrics.observer()
        await self.steps.start()
        await self.messages.start()
        socket_path, problem = None, None
        try:
            socket_path = self.settings.control_socket_path
        except ConfigError as exc:
            problem = str(exc)
        self.control_ops = ControlOps(
            bridge=ControlBridge(self.store, socket_path, problem),
            store=self.store,
            enabled=self.config.control,
            outcomes={},
        )
        self.read_api = ReadApi(
            self.store,
            heartbeat_interval=self.settings.runtime.heartbeat_interval,
            socket=socket_path,
            health=self.health,
        )
        self._ctx = GatewayContext(
            store=self.store,
            registry=self.registry,
            steps=self.steps,
            messages=self.messages,
            stats=self.stats.delivery,
            max_queue=self.config.max_queue,
            max_frame_bytes=self.config.max_frame_bytes,
            close_timeout=CLOSE_TIMEOUT,
            control=self.control_ops,
        )
        self.tasks = [
            asyncio.create_task(self.steps.run(), name="gateway-tail-steps"),
            asyncio.create_task(self.messages.run(), name="gateway-tail-messages"),
        ]
        self._server = await serve(
            self._handle,
            self.config.host or None,
            self.config.port,
            process_request=self._process_request,
            compression=None,
            max_size=self.config.max_frame_bytes * HARD_FRAME_FACTOR,
            max_queue=4,
            close_timeout=CLOSE_TIMEOUT,
            logger=logging.getLogger(WS_LOGGER),
        )
        if self._hint_fd is not None:
            self._hint_task = asyncio.create_task(self._read_hints(self._hint_fd), name="gateway-hints")
        log.info(
            "gateway listening on ws://%s:%d (console: http://%s:%d/)",
            self.config.host or "*",
            self.port,
            self.config.host or "127.0.0.1",
            self.port,
        )
        return True

    async def _read_hints(self, fd: int) -> None:
        """Commit hints from the supervisor: read the named tables at once (the poll stays the fallback).

        Ends at EOF (the supervisor is gone; the parent-death signal stops us). A line that
        does not parse is logged and skipped: a hint is only ever a latency hint.
        """
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_LINE)
        try:
            while line := await reader.readline():
                try:
                    message = parse_parent_message(line)
                except ValueError as exc:
                    log.debug("ignoring a message from the supervisor: %s", exc)
                    continue
                if isinstance(message, CommitHint):
                    self.hints_received += 1
                    self.hint(message)
        except (ConnectionError, ValueError) as exc:
            log.debug("supervisor channel closed: %s", exc)
        finally:
            writer.close()

    def hint(self, message: CommitHint) -> None:
        """A worker committed rows of these sessions/conversations: poll those tables now."""
        both = not message.sessions and not message.conversations
        if message.steps_version is not None:
            self.step_rows.add(message.steps_version, message.steps_ipc)
        if self.steps is not None and (message.sessions or both):
            self.steps.poke()
        if self.messages is not None and (message.conversations or both):
            self.messages.poke()

    async def _open_store(self, stop: asyncio.Event | None) -> Any:
        storage = self.settings.storage
        uri = str(storage.local_path) if storage.is_local else storage.uri
        waited = False
        while stop is None or not stop.is_set():
            try:
                return await Store.open(uri, storage.num_shards, create=False)
            except StoreError as exc:
                if "no agentd database" not in str(exc) and "has no table" not in str(exc):
                    raise
                if not waited:
                    log.warning("%s; waiting for the daemon to create it", exc)
                    waited = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DB_WAIT_INTERVAL):
                    await (stop.wait() if stop is not None else asyncio.sleep(DB_WAIT_INTERVAL))
        return None

    def poke(self) -> None:
        """A writer committed: poll now instead of at the next interval (a latency hint only)."""
        for tail in (self.steps, self.messages):
            if tail is not None:
                tail.poke()

    def health(self) -> HealthReport:
        return HealthReport.build(
            self.stats,
            connections=len(self.connections),
            subscriptions=self.registry.subscription_count,
            rooms=self.registry.room_count,
            stall_after=max(10.0, 50 * self.config.poll_interval),
        )

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return await route(self, connection, request)

    async def _handle(self, ws: ServerConnection) -> None:
        assert self._ctx is not None
        conn = Connection(ws, self._ctx)
        self.connections.add(conn)
        self.stats.delivery.connections_total += 1
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)

    async def close(self, code: int = CloseCodes.SERVICE_RESTART, reason: str = RESTART_REASON) -> None:
        """Stop tailing, close every connection with ``code`` (1012 by default), stop listening.

        Idempotent; a second caller waits for the first to finish.
        """
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._closed = asyncio.get_running_loop().create_future()
        try:
            background = [*self.tasks, *([self._hint_task] if self._hint_task is not None else [])]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._server is not None:
                self._server.close(close_connections=False)
                await asyncio.gather(*(c.close(code, reason) for c in list(self.connections)))
                await self._server.wait_closed()
            log.info("gateway closed (%d connections closed with %d)", self.stats.delivery.connections_total, code)
        finally:
            logging.getLogger(WS_LOGGER).removeFilter(self._redact)
            logging.getLogger(WS_LOGGER).removeFilter(self._quiet)
            self._closed.set_result(None)


async def serve_gateway(
    settings: Settings,
    *,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    hint_fd: int | None = None,
) -> None:
    """Run the gateway until ``stop`` is set (or the task is cancelled), then close with 1012.

    ``started`` is set once it listens; pass a ``GatewayStarted`` to also learn the bound port.
    Raises GatewayConfigError for a non-loopback bind without a token, StoreError for a
    database it cannot use, and re-raises a tail task's unexpected failure after shutting down.
    ``hint_fd`` is the supervisor's channel carrying commit hints (``agentd.protocol.CommitHint``).
    """
    gateway = Gateway(settings, hint_fd=hint_fd)
    try:
        if not await gateway.start(stop=stop):
            return
        if isinstance(started, GatewayStarted):
            started.port = gateway.port
            started.gateway = gateway
        if started is not None:
            started.set()
        waiters: list[asyncio.Future[Any]] = list(gateway.tasks)
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        if stopper is not None:
            waiters.append(stopper)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopper is not None:
                stopper.cancel()
    finally:
        await gateway.close()
    for task in gateway.tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"gateway task {task.get_name()} failed") from task.exception()
