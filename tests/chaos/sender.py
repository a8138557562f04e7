"""A chaos sender: a fresh interpreter that creates its sessions and sends them actions.

``python tests/chaos/sender.py --plan plan.json --index K --out sender-K.jsonl``

Each sender owns a disjoint set of sessions (so "the order it submitted them" is one sender's
order), enqueues through ``ActionQueue.enqueue``, pokes the control socket with a wake hint for
the action's shard, and records every action (and every user message it posts) as one JSON line
*after* the enqueue returned, with a per-sender ``order``. It stops when the stop file appears.
"""

# A test client process: blocking file calls in its one coroutine are fine.
# ruff: noqa: ASYNC230, ASYNC240, SIM115

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

from agentd.config import load_settings
from agentd.control import DaemonUnreachable, request_sync
from agentd.queue import ActionQueue
from agentd.store import Store
from agentd.store.conversations import MessageRecord, insert_messages
from agentd.timeutil import utcnow


def guidance_for(agent_type: str, n: int, rng: random.Random) -> str:
    if agent_type == "persona":
        return f"be topic-{n}" + (" and speak now" if rng.random() < 0.3 else "")
    return f"about topic-{n}"


async def run(args: Any) -> None:
    plan = json.loads(Path(args.plan).read_text())
    mine: list[dict[str, Any]] = plan["senders"][args.index]
    conversations: list[str] = plan["conversations"] if args.index == 0 else []
    settings = load_settings(plan["config"])
    store = await Store.open(settings.storage.uri, settings.storage.num_shards, create=False)
    queue = ActionQueue(store.actions, store.num_shards)
    rng = random.Random(plan["seed"] * 1000 + args.index)
    out = Path(args.out).open("a", buffering=1)
    stop = Path(plan["stop_file"])
    started = time.monotonic()
    order = 0
    created: dict[str, float] = {}  # session_id -> monotonic time its create was enqueued
    specs = {s["session_id"]: s for s in mine}
    pending = sorted(mine, key=lambda s: s["create_at"])
    destroyed: set[str] = set()
    paused: set[str] = set()
    next_message = started + rng.uniform(0.5, 2.0)
    messages = 0

    def record(entry: dict[str, Any]) -> None:
        out.write(json.dumps(entry) + "\n")

    async def send(kind: str, session_id: str, payload: dict[str, Any]) -> None:
        nonlocal order
        try:
            action = await queue.enqueue(kind, session_id, payload)
        except Exception as exc:  # the daemon's storage may be busy; an unlogged action is ignored by the checks
            record({"type": "enqueue_error", "session_id": session_id, "kind": kind, "error": repr(exc)})
            return
        order += 1
        record(
            {
                "type": "action",
                "sender": args.index,
                "order": order,
                "action_id": action.action_id,
                "session_id": session_id,
                "kind": kind,
                "payload": payload,
                "t": time.time(),
            }
        )
        try:
            await asyncio.to_thread(
                request_sync, settings.control_socket_path, {"op": "wake", "shard": action.shard}, timeout=0.5
            )
        except (DaemonUnreachable, OSError, ValueError):
            pass  # the daemon is down (a fault): the queue is the source of truth

    while not stop.exists() and time.monotonic() - started < args.max_runtime:
        now = time.monotonic()
        if pending and now - started >= pending[0]["create_at"]:
            spec = pending.pop(0)
            await send("create", spec["session_id"], {"agent_type": spec["agent_type"], "config": spec["config"]})
            created[spec["session_id"]] = now
            continue
        if conversations and now >= next_message:
            messages += 1
            cid = rng.choice(conversations)
            mid = f"u-{cid}-{messages}"
            message = MessageRecord(
                message_id=mid,
                conversation_id=cid,
                author_id="chaos-user",
                role="user",
                text=f"user message {messages}",
                created_at=utcnow(),
            )
            try:
                await insert_messages(store.messages, [message])
                record({"type": "message", "message_id": mid, "conversation_id": cid, "t": time.time()})
            except Exception as exc:
                record({"type": "message_error", "message_id": mid, "error": repr(exc)})
            next_message = now + rng.uniform(*plan["message_every"])
        ready = [sid for sid, t in created.items() if now - t >= 1.0 and sid not in destroyed]
        if ready:
            sid = rng.choice(ready)
            spec = specs[sid]
            roll = rng.random()
            if roll < plan["destroy_fraction"]:
                destroyed.add(sid)
                await send("destroy", sid, {"reason": f"chaos {order + 1}"})
            elif roll < 0.25:
                kind = "resume" if sid in paused and rng.random() < 0.8 else "pause"
                (paused.discard if kind == "resume" else paused.add)(sid)
                await send(kind, sid, {})
            elif roll < 0.35 and sid in paused:
                paused.discard(sid)
                await send("resume", sid, {})
            else:
                await send("interrupt", sid, {"guidance": guidance_for(spec["agent_type"], order + 1, rng)})
        await asyncio.sleep(rng.expovariate(plan["rate"]))
    record({"type": "end", "sender": args.index, "sent": order, "t": time.time()})
    out.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plan", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-runtime", type=float, default=3600.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
