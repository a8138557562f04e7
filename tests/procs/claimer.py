"""Claim actions of all shards until none is left; write each won action id to a file.

argv: db_uri num_shards out_path batch lease [mode]
mode "complete" (default): complete every claim; "hold": claim once, report, then sleep (to be killed).
"""

import asyncio
import json
import sys

from agentd.queue import ActionQueue
from agentd.store import Store


async def main() -> None:
    uri, num_shards, out, batch, lease = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
        float(sys.argv[5]),
    )
    mode = sys.argv[6] if len(sys.argv) > 6 else "complete"
    store = await Store.open(uri, num_shards)
    queue = ActionQueue(store.actions, num_shards, lease=lease, claim_batch=batch)
    shards = list(range(num_shards))
    errors = 0
    idle = 0
    with open(out, "w") as handle:
        while idle < 3:
            try:
                won = await queue.claim(shards)
            except Exception as exc:  # reported, not raised: the test asserts zero errors
                errors += 1
                print(f"claim error: {exc!r}", file=sys.stderr)
                await asyncio.sleep(0.05)
                continue
            for action in won:
                handle.write(json.dumps({"action_id": action.action_id, "pid": queue.claimer}) + "\n")
            handle.flush()
            if mode == "hold" and won:
                handle.write(json.dumps({"held": len(won)}) + "\n")
                handle.flush()
                await asyncio.sleep(3600)
            for action in won:
                await queue.complete(action, {"by": queue.claimer})
            idle = 0 if won else idle + 1
            if not won:
                await asyncio.sleep(0.05)
        handle.write(json.dumps({"errors": errors}) + "\n")


asyncio.run(main())
