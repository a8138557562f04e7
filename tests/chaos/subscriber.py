"""A chaos WebSocket subscriber: a fresh interpreter that follows a few session rooms.

``python tests/chaos/subscriber.py --port P --room run::a::s ... --out sub-K.jsonl --stop-file F``

It records every step it receives (from a snapshot or live) as one JSON line. When the
connection drops (the gateway or the whole daemon was killed) it reconnects and resubscribes
each room with ``since`` = the last seq it saw there, as the protocol asks; the checks then
verify that what it saw is each step once, in seq order, with no gap.
"""

# A test client process: blocking file calls in its one coroutine are fine.
# ruff: noqa: ASYNC230, ASYNC240, SIM115

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import websockets


async def run(args: Any) -> None:
    out = Path(args.out).open("a", buffering=1)
    stop = Path(args.stop_file)
    last: dict[str, int] = dict.fromkeys(args.room, 0)
    conn = 0
    started = time.monotonic()

    def record(entry: dict[str, Any]) -> None:
        out.write(json.dumps(entry) + "\n")

    def seen(room: str, step: dict[str, Any], via: str) -> None:
        seq = int(step["seq"])
        record(
            {
                "type": "step",
                "room": room,
                "session_id": step["session_id"],
                "seq": seq,
                "kind": step.get("kind"),
                "action_id": step.get("action_id"),
                "conn": conn,
                "via": via,
            }
        )
        last[room] = max(last[room], seq)
        Path(args.out + ".progress").write_text(json.dumps(last))

    while not stop.exists() and time.monotonic() - started < args.max_runtime:
        conn += 1
        try:
            async with websockets.connect(f"ws://127.0.0.1:{args.port}", open_timeout=3, max_size=2**24) as ws:
                record({"type": "connect", "conn": conn, "since": dict(last), "t": time.time()})
                for room in args.room:
                    await ws.send(json.dumps({"op": "subscribe", "room": room, "since": last[room]}))
                while not stop.exists():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    frame = json.loads(raw)
                    kind = frame.get("type")
                    if kind == "snapshot":
                        for step in frame.get("steps") or []:
                            seen(frame["room"], step, "snapshot")
                    elif kind == "step":
                        seen(frame["room"], frame, "live")
                    elif kind == "error":
                        record({"type": "error", "conn": conn, "frame": frame, "t": time.time()})
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            record({"type": "disconnect", "conn": conn, "reason": repr(exc)[:300], "t": time.time()})
            await asyncio.sleep(0.3)
    record({"type": "end", "t": time.time()})
    out.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--room", action="append", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--max-runtime", type=float, default=3600.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
