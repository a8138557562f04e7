"""Append steps for one session in small commits through the batching writer.

argv: db_uri num_shards session_id rows_per_commit commits out_path
Writes {"errors": n, "last_seq": n} to out_path.
"""

import asyncio
import json
import sys

from agentd.store import Store
from agentd.store.steps import StepRecord
from agentd.store.writer import BatchingWriter
from agentd.timeutil import utcnow


async def main() -> None:
    uri, num_shards, session_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    per_commit, commits, out = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    store = await Store.open(uri, num_shards)
    errors = 0
    seq = 0
    async with BatchingWriter(store, flush_interval=0.01) as writer:
        for _ in range(commits):
            rows = []
            for _ in range(per_commit):
                seq += 1
                rows.append(
                    StepRecord(session_id=session_id, agent_id="a", shard=0, seq=seq, ts=utcnow(), state={"n": seq})
                )
            try:
                await writer.wait_durable(await writer.submit(rows), timeout=60)
            except Exception as exc:
                errors += 1
                print(f"append error: {exc!r}", file=sys.stderr)
        errors += writer.stats.failures
    with open(out, "w") as handle:
        json.dump({"errors": errors, "last_seq": seq}, handle)


asyncio.run(main())
