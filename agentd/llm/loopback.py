"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

Why it lives in the package rather than under ``tests/``: the LLM unit tests, the end-to-end
daemon test and ``bench/llm_bench.py`` all need the same server, and the real BAML runtime has to
talk to it over real HTTP (no mocks). It is stdlib asyncio only, so it adds no dependency.

It speaks just enough HTTP/1.1 (Content-Length bodies, keep-alive) for BAML's HTTP client and for
the raw baseline client of the benchmark. Its behaviour is switchable at run time so one server
can serve a whole test module: ``delay`` (be slow), ``fail_next`` / ``fail_status`` (return HTTP
errors), ``malformed`` (answer with content that is not the requested JSON). It counts requests
and in-flight requests, the latter being how the concurrency-limit test observes the adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["LoopbackLLMServer", "default_responder"]

Responder = Callable[[dict[str, Any]], str]

_JOKE_RE = re.compile(r"Write one joke about:\s*(.+)")
_PERSONA_RE = re.compile(r"What does (.+?) say next\?")
_MAX_BODY = 4 * 1024 * 1024


def _prompt_text(body: dict[str, Any]) -> str:
    """Concatenate every message's text; BAML may send content as a string or as parts."""
    out: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "\n".join(out)


def default_responder(body: dict[str, Any]) -> str:
    """Answer like a cooperative model: a JSON object shaped for whichever function asked."""
    prompt = _prompt_text(body)
    if match := _JOKE_RE.search(prompt):
        subject = match.group(1).strip()
        return json.dumps({"text": f"Loopback joke about {subject}.", "subject": subject})
    if match := _PERSONA_RE.search(prompt):
        name = match.group(1).strip()
        return json.dumps({"text": f"{name} says hello from loopback.", "should_speak": True})
    return json.dumps({"text": "loopback", "subject": "unknown", "should_speak": False})


class LoopbackLLMServer:
    """OpenAI ``POST /v1/chat/completions`` on an ephemeral loopback port.

    Use as ``async with LoopbackLLMServer() as srv:`` and point a client at ``srv.base_url``.
    """

    def __init__(self, responder: Responder = default_responder, *, keep_bodies: int = 1000) -> None:
        self.responder = responder
        self.delay = 0.0
        self.fail_status = 500
        self.fail_next = 0  # the next N requests get ``fail_status``; -1 = every request
        self.malformed = False
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        # The last ``keep_bodies`` request bodies and headers, for assertions on what was sent.
        self.bodies: deque[dict[str, Any]] = deque(maxlen=keep_bodies)
        self.headers: deque[dict[str, str]] = deque(maxlen=keep_bodies)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        """Back to an instant, healthy server with zeroed counters (between test cases)."""
        self.delay = 0.0
        self.fail_status = 500
        self.fail_next = 0
        self.malformed = False
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies.clear()
        self.headers.clear()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._conns):
            writer.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> LoopbackLLMServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, headers, body = request
                status, payload = await self._respond(method, path, headers, body)
                close = headers.get("connection", "").lower() == "close"
                writer.write(_format_response(status, payload, close))
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _respond(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            return 404, b'{"error": {"message": "not found"}}'
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body: dict[str, Any] = json.loads(raw or b"{}")
            self.bodies.append(body)
            self.headers.append(headers)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_next:
                if self.fail_next > 0:
                    self.fail_next -= 1
                return self.fail_status, b'{"error": {"message": "loopback failure"}}'
            content = "Sorry, I can't help with that." if self.malformed else self.responder(body)
            return 200, _completion(body.get("model", ""), content)
        finally:
            self.in_flight -= 1


def _completion(model: str, content: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-loopback",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


def _format_response(status: int, payload: bytes, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode() + payload


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request, or None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length", "0"))
        if length > _MAX_BODY:
            raise ConnectionError("request body too large")
        body = await reader.readexactly(length)
    return method, path, headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _serve(port: int) -> None:
    server = LoopbackLLMServer(keep_bodies=0)
    await server.start(port)
    sys.stdout.write(f"PORT {server.port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m agentd.llm.loopback [--port N] [--uvloop]``: serve until SIGTERM.

    Prints ``PORT <n>`` once listening, so a benchmark or an end-to-end test can run the server in
    its own process (its CPU then does not count against the process being measured).
    """
    parser = argparse.ArgumentParser(prog="python -m agentd.llm.loopback")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (more requests/s)")
    args = parser.parse_args(argv)
    if args.uvloop:
        import uvloop

        uvloop.run(_serve(args.port))
    else:
        asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
