"""BAML call overhead vs a raw HTTP client, both against an instant loopback OpenAI server.

What it answers: how much does going through the generated BAML client (prompt rendering,
Rust HTTP client, schema-aligned parsing, plus agentd's adapter: semaphore, timeout, abort
controller) cost per call compared with the least a Python client can do (one keep-alive
HTTP/1.1 request with the same body on asyncio streams, ``json.loads`` of the reply and of its
content, and a pydantic ``Joke``)? Measured in the same run against the same server.

The server runs in its own process (``python -m agentd.llm.loopback --uvloop``) so its CPU does
not count against the client; CPU per call is ``time.process_time`` of this process (all threads,
so BAML's Rust worker threads are included). With high concurrency the single-process Python
server can become the limit: compare ``calls/s`` of the rows, and watch ``cpu us/call``.

    python bench/llm_bench.py [--calls 5000] [--concurrency 64] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentd.config import LLMConfig
from agentd.llm.baml_adapter import BamlLLM
from agentd.llm.baml_logging import configure_llm_logging
from agentd.llm.base import Joke

SUBJECT = "benchmarks"


@dataclass
class Row:
    name: str
    calls: int
    wall: float
    cpu: float

    def show(self) -> str:
        return (
            f"{self.name:<34} {self.calls:>7} calls  {self.calls / self.wall:>9.0f} calls/s  "
            f"{self.wall / self.calls * 1e6:>8.0f} us/call wall  {self.cpu / self.calls * 1e6:>8.0f} us/call cpu"
        )


class RawClient:
    """One keep-alive HTTP/1.1 connection doing what any hand-written client must do, no more."""

    def __init__(self, host: str, port: int, body: bytes) -> None:
        self.host, self.port = host, port
        self.request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self) -> Joke:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        reply = json.loads(await self.reader.readexactly(length))
        content = json.loads(reply["choices"][0]["message"]["content"])
        return Joke(text=content["text"], subject=content["subject"], source="raw")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def measure(name: str, calls: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> Row:
    """Run ``calls`` calls with ``concurrency`` workers; worker ``w`` calls ``one(w)``."""
    per_worker = [calls // concurrency + (1 if w < calls % concurrency else 0) for w in range(concurrency)]

    async def worker(w: int) -> None:
        for _ in range(per_worker[w]):
            await one(w)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return Row(name, calls, time.perf_counter() - t0, time.process_time() - cpu0)


async def run(port: int, calls: int, concurrency: int) -> list[Row]:
    base_url = f"http://127.0.0.1:{port}/v1"
    cfg = LLMConfig(provider="openai-generic", model="bench", base_url=base_url, concurrency=concurrency)
    configure_llm_logging("WARNING")
    adapter = BamlLLM(cfg)
    plain = adapter.baml
    # The raw client sends exactly the body BAML would send (BAML builds it without sending).
    request = await plain.request.TellJoke(subject=SUBJECT)
    body = json.dumps(request.body.json()).encode()
    raws = [RawClient("127.0.0.1", port, body) for _ in range(concurrency)]

    async def via_adapter(_w: int) -> object:
        return await adapter.tell_joke(SUBJECT)

    async def via_generated(_w: int) -> object:
        return await plain.TellJoke(subject=SUBJECT)

    async def via_raw(w: int) -> object:
        return await raws[w].call()

    # Warm up every path (connection pools, lazy init) before timing.
    await measure("warmup", 200, min(concurrency, 8), via_adapter)
    await measure("warmup", 200, min(concurrency, 8), via_raw)
    seq = max(200, calls // 5)
    rows = [
        await measure("raw asyncio http, sequential", seq, 1, via_raw),
        await measure("baml generated client, sequential", seq, 1, via_generated),
        await measure("agentd BamlLLM, sequential", seq, 1, via_adapter),
        await measure(f"raw asyncio http, {concurrency} concurrent", calls, concurrency, via_raw),
        await measure(f"baml generated, {concurrency} concurrent", calls, concurrency, via_generated),
        await measure(f"agentd BamlLLM, {concurrency} concurrent", calls, concurrency, via_adapter),
    ]
    for raw in raws:
        await raw.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-m", "agentd.llm.loopback", "--uvloop"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        coro = run(port, args.calls, args.concurrency)
        if args.uvloop:
            import uvloop

            rows = uvloop.run(coro)
        else:
            rows = asyncio.run(coro)
    finally:
        server.terminate()
        server.wait(timeout=10)

    import baml_py

    print(f"baml-py {baml_py.baml_py.get_version()}, python {sys.version.split()[0]}, ", end="")
    print(f"client loop: {'uvloop' if args.uvloop else 'asyncio'}, server: loopback in its own process (uvloop)")
    for row in rows:
        print(row.show())
    by = {r.name: r for r in rows}
    seq_raw, seq_adapter = by["raw asyncio http, sequential"], by["agentd BamlLLM, sequential"]
    overhead = (seq_adapter.wall / seq_adapter.calls - seq_raw.wall / seq_raw.calls) * 1e6
    print(f"BAML+adapter overhead per call (sequential, wall): {overhead:.0f} us")


if __name__ == "__main__":
    main()
