"""Appends, claims, acknowledges and reads back actions flat out, in its own process, until its
stdin closes (at most N seconds): the test decides when it has seen enough, however slow the
machine.

Prints {"done": [action ids], "errors": [messages]}: an operation that failed because a prune
removed files it still used shows up in ``errors`` (tests/test_version_window.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time

from agentd.queue import ActionQueue
from agentd.store import Store


async def main(uri: str, seconds: float) -> None:
    store = await Store.open(uri, 4, create=False)
    queue = ActionQueue(store.actions, 4, claimer="worker-0@1", epoch=1)
    done: list[str] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.buffer.read(), closed.set()), daemon=True).start()
    while time.monotonic() < deadline and not closed.is_set():
        row = queue.new_action("pause", f"s-{len(done) % 7}")
        try:
            await queue.append_many([row])
            [won] = await queue.claim_offered([row], range(4))
            await queue.complete(won, {"n": len(done)})
            stored = await queue.get(row.action_id)
            if stored is None or stored.status != "done":
                raise AssertionError(f"{row.action_id} reads back as {stored}")
            done.append(row.action_id)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            sys.stderr.write(f"stream error: {errors[-1]}\n")  # seen at once by a test that waits for one
            sys.stderr.flush()
    sys.stdout.write(json.dumps({"done": done, "errors": errors}) + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
