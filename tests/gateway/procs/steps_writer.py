"""A worker stand-in: appends steps (and optionally messages) like the batching writer does.

One ``steps.add()`` per flush for all its sessions, then a ``merge_insert`` of their ``sessions``
rows, as the real writer commits. It resumes each session after its last committed seq, so a
run killed with SIGKILL and started again continues without a gap. After every flush it prints
one JSON line ``{"committed": {session_id: seq}, "t": <time.time() after the commit>}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from agentd.ids import shard_for
from agentd.store import Store
from agentd.store.conversations import MessageRecord, insert_messages
from agentd.store.sessions import SessionRecord, upsert_sessions
from agentd.store.steps import StepRecord, latest_step
from agentd.timeutil import utcnow


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--agent", default="a1")
    p.add_argument("--sessions", default="s1")
    p.add_argument("--upto", type=int, default=100, help="write until every session has this seq")
    p.add_argument("--batch", type=int, default=5, help="steps per session per flush")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between flushes")
    p.add_argument("--pad", type=int, default=0, help="bytes of padding text per step")
    p.add_argument("--no-sessions", action="store_true", help="skip the sessions merge_insert")
    p.add_argument("--conversation", default="")
    p.add_argument("--messages", type=int, default=0)
    return p.parse_args()


async def write_messages(store: Store, args: argparse.Namespace) -> None:
    for n in range(1, args.messages + 1):
        msg = MessageRecord(
            message_id=f"m-{args.agent}-{n}",
            conversation_id=args.conversation,
            author_id=args.agent,
            role="agent",
            text=f"message {n} from {args.agent}",
            created_at=utcnow(),
        )
        await insert_messages(store.messages, [msg])
        print(json.dumps({"message": n, "t": time.time()}), flush=True)
        await asyncio.sleep(args.interval)


async def main() -> None:
    args = parse()
    store = await Store.open(args.db, args.shards)
    sessions = [s for s in args.sessions.split(",") if s]
    seqs = {}
    for sid in sessions:
        last = await latest_step(store.steps, sid)
        seqs[sid] = last.seq if last else 0
    if args.conversation:
        await write_messages(store, args)
    pad = "x" * args.pad
    while any(seq < args.upto for seq in seqs.values()):
        rows = []
        for sid in sessions:
            for _ in range(args.batch):
                if seqs[sid] >= args.upto:
                    break
                seqs[sid] += 1
                rows.append(
                    StepRecord(
                        session_id=sid,
                        agent_id=args.agent,
                        shard=shard_for(sid, args.shards),
                        seq=seqs[sid],
                        ts=utcnow(),
                        text=f"step {seqs[sid]} {pad}",
                        state={"iteration": seqs[sid], "context": {"subject": "cats"}},
                        data={"t_write": time.time()},
                    )
                )
        await store.steps.add(StepRecord.to_arrow(rows))
        t = time.time()
        if not args.no_sessions:
            now = utcnow()
            await upsert_sessions(
                store.sessions,
                [
                    SessionRecord(
                        session_id=sid,
                        agent_id=args.agent,
                        agent_type="joke",
                        shard=shard_for(sid, args.shards),
                        status="running",
                        context={"subject": "cats", "paused": False},
                        iteration=seqs[sid],
                        last_seq=seqs[sid],
                        created_at=now,
                        updated_at=now,
                    )
                    for sid in sessions
                ],
            )
        print(json.dumps({"committed": dict(seqs), "t": t}), flush=True)
        if args.interval:
            await asyncio.sleep(args.interval)


asyncio.run(main())
