"""The loopback OpenAI-compatible server with a random delay per request (a fresh process).

``python tests/chaos/llm_server.py --seed N --slow-fraction F --lease L`` prints ``PORT <n>`` and
serves until SIGTERM. Most requests wait 0-0.4 s; a fraction ``F`` waits 1.2-2x the queue lease,
so that a tick (and the actions queued behind it) outlasts the lease.

``LoopbackLLMServer`` has one ``delay`` for every request; a per-request delay is added here by
sleeping before delegating to its ``_respond`` (see the chaos README section).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
from typing import Any

from agentd.llm.loopback import LoopbackLLMServer


class RandomDelayServer(LoopbackLLMServer):
    def __init__(self, seed: int, slow_fraction: float, lease: float) -> None:
        super().__init__(keep_bodies=0)
        self.rng = random.Random(seed)
        self.slow_fraction = slow_fraction
        self.lease = lease
        self.slow = 0

    def pick_delay(self) -> float:
        if self.rng.random() < self.slow_fraction:
            self.slow += 1
            return self.rng.uniform(1.2 * self.lease, 2.0 * self.lease)
        return self.rng.uniform(0.0, 0.4)

    async def _respond(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
            await asyncio.sleep(self.pick_delay())
        return await super()._respond(method, path, headers, raw)


async def serve(args: Any) -> None:
    server = RandomDelayServer(args.seed, args.slow_fraction, args.lease)
    await server.start(0)
    sys.stdout.write(f"PORT {server.port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_runtime)
    except TimeoutError:
        pass
    sys.stderr.write(f"llm: {server.requests} requests, {server.slow} slow\n")
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow-fraction", type=float, default=0.05)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--max-runtime", type=float, default=3600.0, help="exit after this many seconds regardless")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
