"""Enqueue N actions with idempotency keys k-0..k-N-1; write the action ids (by key order) as JSON.

argv: db_uri num_shards count out_path
"""

import asyncio
import json
import sys

from agentd.queue import ActionQueue
from agentd.store import Store


async def main() -> None:
    uri, num_shards, count, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = await Store.open(uri, num_shards)
    queue = ActionQueue(store.actions, num_shards)
    ids = [(await queue.enqueue("create", f"s-{i}", idempotency_key=f"k-{i}")).action_id for i in range(count)]
    with open(out, "w") as handle:
        json.dump(ids, handle)


asyncio.run(main())
