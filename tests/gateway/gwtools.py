"""Helpers for the gateway tests: an in-process gateway, writer processes, recording clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agentd.config import Settings
from agentd.gateway import Gateway, GatewayStarted, serve_gateway
from agentd.ids import shard_for
from agentd.protocol import HINT_ROWS_MAX_BYTES, CommitHint, dump_line
from agentd.store.ipc import table_to_text
from agentd.store.steps import StepRecord
from agentd.store.writer import Committed
from agentd.timeutil import utcnow

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).parent / "procs" / "steps_writer.py"
SHARDS = 4


def gateway_settings(db: str, **gateway: Any) -> Settings:
    values = {"port": 0, "poll_interval": 0.02, **gateway}
    return Settings(storage={"uri": db, "num_shards": SHARDS}, gateway=values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings, **kwargs: Any) -> AsyncIterator[Gateway]:
    started = GatewayStarted()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_gateway(settings, started=started, stop=stop, **kwargs))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        waiter.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise AssertionError(f"gateway did not start: {task}")
    assert started.gateway is not None
    try:
        yield started.gateway
    finally:
        stop.set()
        async with asyncio.timeout(15):
            await task


@contextlib.asynccontextmanager
async def hinted_gateway(db: str) -> AsyncIterator[tuple[Gateway, socket.socket]]:
    """A gateway that reads only when hinted (its poll is 30 s), and the supervisor's end of its
    commit-hint channel, to send ``agentd.protocol.CommitHint`` lines down."""
    supervisor, child = socket.socketpair()
    try:
        async with running_gateway(gateway_settings(db, poll_interval=30.0), hint_fd=child.detach()) as gw:
            yield gw, supervisor
    finally:
        supervisor.close()


def step(session_id: str, seq: int, agent_id: str = "a1") -> StepRecord:
    """A step as the hinted-gateway tests commit it."""
    return StepRecord(
        session_id=session_id,
        agent_id=agent_id,
        shard=shard_for(session_id, SHARDS),
        seq=seq,
        ts=utcnow(),
        text=f"step {seq}",
        state={"iteration": seq},
    )


def hint_line(committed: Committed, *, rows: bool = True, broken: bool = False) -> bytes:
    """The commit hint a worker sends for ``committed`` (``agentd.worker``), as a channel line."""
    text = table_to_text(committed.rows, HINT_ROWS_MAX_BYTES) if rows else None
    if broken:
        text = "this is not base64 arrow!"
    return dump_line(CommitHint(sessions=committed.sessions, steps_version=committed.version, steps_ipc=text))


class Procs:
    """Writer processes started as fresh interpreters; all are killed by pid on exit."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def writer(self, db: str, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        out = (self.tmp / f"{name}.out").open("ab")
        err = (self.tmp / f"{name}.err").open("ab")
        cmd = [sys.executable, str(WRITER), "--db", db, "--shards", str(SHARDS), *args]
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        out.close()
        err.close()
        self.procs.append(proc)
        return proc

    def lines(self, name: str) -> list[dict[str, Any]]:
        path = self.tmp / f"{name}.out"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def stderr(self, name: str) -> str:
        path = self.tmp / f"{name}.err"
        return path.read_text() if path.exists() else ""

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextlib.contextmanager
def procs(tmp: Path) -> Iterator[Procs]:
    p = Procs(tmp)
    try:
        yield p
    finally:
        p.kill_all()


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {proc.pid} still running after {timeout}s")
        await asyncio.sleep(0.05)
    return int(proc.returncode)


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    """A real websockets client that records every frame, and the steps per room and session."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.closed: ConnectionClosed | None = None
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int, *, path: str = "/", **kwargs: Any) -> Recorder:
        ws = await connect(f"ws://127.0.0.1:{port}{path}", **kwargs)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.frames.append(json.loads(message))
                self.received_at.append(time.time())
        except ConnectionClosed as exc:
            self.closed = exc
        else:
            self.closed = ConnectionClosed(self.ws.close_rcvd, self.ws.close_sent)

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def subscribe(self, room: str, since: int | dict[str, int] = 0) -> None:
        await self.send({"op": "subscribe", "room": room, "since": since})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    def steps(self, room: str) -> dict[str, list[int]]:
        """Seqs per session received in ``room``: snapshot steps, then step events, in order."""
        seqs: dict[str, list[int]] = {}
        for frame in self.frames:
            if frame.get("room") != room:
                continue
            if frame["type"] == "snapshot":
                for step in frame.get("steps") or []:
                    seqs.setdefault(step["session_id"], []).append(step["seq"])
            elif frame["type"] == "step":
                seqs.setdefault(frame["session_id"], []).append(frame["seq"])
        return seqs

    def count(self, room: str) -> int:
        return sum(len(v) for v in self.steps(room).values())

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._task, return_exceptions=True)


def assert_exact(got: dict[str, list[int]], expected_last: dict[str, int], since: int = 0) -> None:
    """Every seq in (since, last] exactly once and in order, for each expected session."""
    assert set(got) == {s for s, last in expected_last.items() if last > since}, (set(got), expected_last)
    for session_id, last in expected_last.items():
        if last > since:
            assert got[session_id] == list(range(since + 1, last + 1)), (session_id, got[session_id][:20], last)


async def db_last_seqs(store: Any) -> dict[str, int]:
    rows = (await store.steps.query().select(["session_id", "seq"]).to_arrow()).to_pylist()
    last: dict[str, int] = {}
    for row in rows:
        last[row["session_id"]] = max(last.get(row["session_id"], 0), row["seq"])
    return last


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, *, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """A bare HTTP/1.1 request without a body (no client library): status, headers, body.

    A ``Host`` in ``headers`` replaces the default one. Repeated response headers keep the last.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = dict(headers or {})
    host = headers.pop("Host", f"127.0.0.1:{port}")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if method == "POST":
        lines.append("Content-Length: 0")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), parsed, body
