"""Benchmark of the control plane: agentctl-to-applied latency with 1,000 sessions running.

What is measured is the path every agentctl action command takes (``agentctl.client.Control``:
one append to the ``actions`` table, the wake hint over the control socket, polling the action
row until the worker acknowledged it), in-process, so that the ~1.5 s of CLI process start-up
(importing LanceDB) does not hide the control latency. For each of pause, resume and interrupt,
with and without the wake hint, it reports:

- client p50/p99: enqueue start -> the acknowledged row seen by the waiting client (what a
  user waits for, including the client's poll granularity);
- server p50/p99: the row's ``created_at`` -> ``done_at`` (claim, apply, durable flush, ack).

Baselines from the same run: one raw LanceDB append to a scratch table, one action-row read
(one client poll), and the daemon's ``[queue] poll_interval`` / ``[writer] flush_interval``,
which bound the latency without and with the hint. It also times a few real ``agentctl``
processes end to end, against ``python -c 'import agentctl.client'`` (start-up alone).

The daemon (``python -m agentd run``, shipped defaults except the gateway off) runs on a
temporary database, in its own session, and is killed by process group at the end.

Usage::

    python bench/control_bench.py                 # 1,000 sessions, 40 samples per cell (~2 min)
    python bench/control_bench.py --quick         # 200 sessions, 10 samples (< 1 min)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402

from agentctl.client import Control  # noqa: E402
from agentd.config import Settings, load_settings  # noqa: E402
from agentd.control import DaemonUnreachable, request_sync  # noqa: E402
from agentd.ids import new_id, shard_for  # noqa: E402
from agentd.store.actions import ActionRecord  # noqa: E402
from agentd.store.sql import sql_in  # noqa: E402
from agentd.timeutil import utcnow  # noqa: E402

CONFIG = """
[daemon]
workers = {workers}
warm_spare = false
[storage]
uri = "{db}"
num_shards = 64
[writer]
flush_interval = {flush}
[queue]
poll_interval = {poll}
[gateway]
enabled = false
"""


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Cell:
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            start_new_session=True,
            cwd=REPO,
        )
        self.log = log

    def wait_ready(self, settings: Settings, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited:\n{self.log.read_text()[-3000:]}")
            try:
                reply = request_sync(settings.control_socket_path, {"op": "status"}, timeout=2)
                if reply["status"]["ready"]:
                    return
            except DaemonUnreachable:
                pass
            time.sleep(0.2)
        raise SystemExit("daemon not ready in time")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


async def create_sessions(control: Control, count: int) -> list[str]:
    """Setup, not measured: one append of ``count`` create actions, one hint per shard, wait."""
    ids = [f"bench-{i:05d}" for i in range(count)]
    now = utcnow()
    records = [
        ActionRecord(
            action_id=new_id("a"),
            session_id=sid,
            shard=shard_for(sid, control.store.num_shards),
            kind="create",
            payload={"agent_type": "joke", "agent_id": "bench", "config": {}},
            created_at=now,
        )
        for sid in ids
    ]
    await control.store.actions.add(ActionRecord.to_arrow(records))
    for shard in sorted({r.shard for r in records}):
        await control.hint(shard)
    action_ids = [r.action_id for r in records]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = await control.store.actions.query().where(sql_in("action_id", action_ids)).select(["status"]).to_arrow()
        statuses = rows.column("status").to_pylist()
        if all(s in ("done", "failed") for s in statuses):
            failed = statuses.count("failed")
            if failed:
                raise SystemExit(f"{failed} creates failed")
            return ids
        await asyncio.sleep(0.5)
    raise SystemExit("sessions were not created in time")


async def measure(control: Control, ids: list[str], samples: int, hint: bool) -> tuple[dict[str, Cell], str]:
    """pause, interrupt (while paused: applied at once), resume on random sessions, in turn.

    Returns the cells and the id of the last action (a real row for the read baseline).
    """
    cells = {kind: Cell() for kind in ("pause", "resume", "interrupt")}
    subjects = ["cats", "owls", "tea", "compilers", "rain"]
    last = ""
    for _ in range(samples):
        sid = random.choice(ids)
        plan: list[tuple[str, dict[str, Any]]] = [
            ("pause", {}),
            ("interrupt", {"guidance": {"subject": random.choice(subjects)}, "now": False}),
            ("resume", {}),
        ]
        for kind, payload in plan:
            started = time.perf_counter()
            submitted = await control.submit(kind, sid, payload, hint=hint)
            record = await control.wait(submitted, timeout=30)
            elapsed = (time.perf_counter() - started) * 1000
            if record.status != "done":
                raise SystemExit(f"{kind} {sid} failed: {record.error}")
            assert record.done_at is not None
            cells[kind].client_ms.append(elapsed)
            cells[kind].server_ms.append((record.done_at - record.created_at).total_seconds() * 1000)
            last = record.action_id
    return cells, last


async def baselines(control: Control, scratch_dir: Path, action_id: str) -> dict[str, float]:
    import lancedb

    conn = await lancedb.connect_async(str(scratch_dir))
    table = await conn.create_table("scratch", schema=pa.schema([pa.field("x", pa.int64())]))
    appends = []
    for i in range(30):
        started = time.perf_counter()
        await table.add(pa.table({"x": [i]}))
        appends.append((time.perf_counter() - started) * 1000)
    reads = []
    for _ in range(30):
        started = time.perf_counter()
        await control.queue.get(action_id)
        reads.append((time.perf_counter() - started) * 1000)
    return {"append_p50": pct(appends, 50), "read_p50": pct(reads, 50)}


def cli_times(config: Path, session_id: str, calls: int) -> dict[str, float]:
    script = Path(sys.executable).parent / "agentctl"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "agentctl"]
    walls = []
    for i in range(calls):
        kind = "pause" if i % 2 == 0 else "resume"
        started = time.perf_counter()
        subprocess.run([*argv, "--config", str(config), kind, session_id], check=True, capture_output=True)
        walls.append((time.perf_counter() - started) * 1000)
    starts = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import agentctl.client"], check=True, cwd=REPO)
        starts.append((time.perf_counter() - started) * 1000)
    return {"cli_p50": pct(walls, 50), "cli_max": max(walls), "startup_p50": pct(starts, 50)}


def report(cells: dict[bool, dict[str, Cell]], base: dict[str, float], settings: Settings, args: Any) -> None:
    print()
    print(
        f"control latency, {args.sessions} sessions running, {args.samples} samples per cell, "
        f"{settings.daemon.workers} workers, poll_interval {settings.queue.poll_interval:g}s, "
        f"flush_interval {settings.writer.flush_interval:g}s, load avg {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| action | wake hint | client p50 | client p99 | server p50 | server p99 |")
    print("|---|---|---:|---:|---:|---:|")
    for hint in (True, False):
        for kind in ("pause", "resume", "interrupt"):
            cell = cells[hint][kind]
            client = f"{pct(cell.client_ms, 50):.0f} ms | {pct(cell.client_ms, 99):.0f} ms"
            server = f"{pct(cell.server_ms, 50):.0f} ms | {pct(cell.server_ms, 99):.0f} ms"
            print(f"| {kind} | {'yes' if hint else 'no'} | {client} | {server} |")
    print()
    print(
        f"baselines: raw LanceDB append {base['append_p50']:.1f} ms p50; one action-row read (one client poll) "
        f"{base['read_p50']:.1f} ms p50"
    )
    print(
        f"agentctl process end to end: {base['cli_p50']:.0f} ms p50 (max {base['cli_max']:.0f} ms), of which "
        f"interpreter start + imports {base['startup_p50']:.0f} ms"
    )


async def run(args: argparse.Namespace, config: Path, settings: Settings, scratch: Path) -> None:
    control = await Control.open(settings)
    started = time.perf_counter()
    ids = await create_sessions(control, args.sessions)
    print(f"created {len(ids)} sessions in {time.perf_counter() - started:.1f}s", flush=True)
    await measure(control, ids, 3, hint=True)  # warm-up
    cells: dict[bool, dict[str, Cell]] = {}
    last = ""
    for hint in (True, False):
        started = time.perf_counter()
        cells[hint], last = await measure(control, ids, args.samples, hint)
        print(f"measured {'with' if hint else 'without'} hint in {time.perf_counter() - started:.1f}s", flush=True)
    base = await baselines(control, scratch, last)
    base.update(cli_times(config, ids[0], args.cli_calls))
    report(cells, base, settings, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=40, help="samples per action kind and hint mode")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--poll-interval", type=float, default=0.5, help="[queue] poll_interval (shipped default)")
    parser.add_argument("--flush-interval", type=float, default=0.25, help="[writer] flush_interval (shipped default)")
    parser.add_argument("--cli-calls", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="200 sessions, 10 samples")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.samples, args.cli_calls = 200, 10, 2
    work = Path(tempfile.mkdtemp(prefix="control-bench-"))
    config = work / "config.toml"
    config.write_text(
        CONFIG.format(workers=args.workers, db=work / "db", flush=args.flush_interval, poll=args.poll_interval)
    )
    settings = load_settings(config)
    daemon = Daemon(config, work / "daemon.log")
    try:
        daemon.wait_ready(settings)
        asyncio.run(run(args, config, settings, work / "scratch"))
    finally:
        daemon.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
