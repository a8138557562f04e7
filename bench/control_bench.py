"""Benchmark of the control plane through the daemon, with 1,000 joke sessions running.

Each figure is printed beside raw baselines taken in the same run (DESIGN.md §10):

- baselines: a bare interpreter start (``python -c pass``), ``agentctl --version`` (click and
  the package metadata, no request), and one raw LanceDB append of one row to a scratch table;
- the floor of the server-side path: the same socket requests on a quiet daemon (2 sessions, one
  request every 300 ms on average), each split into its hand-overs. The path is three LanceDB
  commits in series (the daemon's append, the worker's claim, the steps commit), so this is what
  the machine and LanceDB cost before any load: with 1,000 sessions every figure below is this
  floor plus contention for the same cores;
- ``agentctl create joke --count 1000``: the whole process, wall time until every create is
  acknowledged (these become the 1,000 running sessions);
- a whole ``agentctl pause``/``resume`` process with the daemon up: p50 and p99 over many runs,
  and the ratio to a bare interpreter start;
- server side, submitted -> acknowledged durable: a client on the control socket (one ``submit``
  of one pause/resume with ``wait``) timing the request line sent -> its ``ack`` received, back
  to back (the next request as soon as the previous ``ack`` came), then paced (one request every
  100 ms on average, at random: a person or a script that does something between actions, so
  each action meets the daemon's own background work but not the previous action's);
- the fragments of the ``actions`` table during the back-to-back requests (counted every quarter
  second on the bench's own connection, a manifest read): a claim scans every fragment not yet compacted, so this shows
  whether the supervisor's compaction of ``actions`` kept up;
- 50 agentctl processes at once, each pausing its own session: errors (each process exits 0 only
  with its acknowledgement), duplicate actions, and how long until every row reads ``done``
  (read back from the ``actions`` table; a row is marked with its worker's next regular flush);
- ``agentctl create joke --count 10000``: the whole process, on top of the running sessions.

The results' header also says on which filesystem the temporary database lives and whether it
keeps a journal: on ext4 without one (this project's test machine), creating a file skips over
every inode deleted in the last 60-360 s, so every LanceDB commit is slower for minutes after
many files were deleted (a previous run's database removed, a version cleanup). Run it minutes
after such a deletion, or read its figures beside the raw append of the same run.

The daemon runs the shipped defaults (2 workers, ``[writer] flush_interval = 0.25``, ``[queue]
poll_interval = 0.5``) on a temporary database, with the gateway and the metrics endpoint on free
ports; it is started in its own session and killed by process group at the end.

Usage::

    python bench/control_bench.py             # 1,000 sessions, 60 process runs, 200 socket samples
    python bench/control_bench.py --quick     # 200 sessions, --count 2000, fewer samples
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agentctl.transport import Connection, DaemonLost, NoDaemon, status  # noqa: E402
from agentd.paths import light_config  # noqa: E402
from agentd.protocol_client import request_line  # noqa: E402
from agentd.store.filesystem import filesystem_of  # noqa: E402

CONFIG = """
[storage]
uri = "{db}"
[gateway]
port = {gateway_port}
[metrics]
port = {metrics_port}
"""


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def agentctl_argv() -> list[str]:
    script = Path(sys.executable).parent / "agentctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentctl"]


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            start_new_session=True,
            cwd=REPO,
        )
        self.socket = light_config(config).socket_path()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited:\n{self.log.read_text()[-3000:]}")
            try:
                if status(self.socket, timeout=2)["status"]["ready"]:
                    return
            except (NoDaemon, DaemonLost, KeyError):
                pass
            time.sleep(0.2)
        raise SystemExit("daemon not ready in time")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


class FragmentWatch:
    """Counts the fragments of the daemon's ``actions`` table every ``every`` seconds, from a
    thread of this process (its own LanceDB connection: a manifest read, no write)."""

    def __init__(self, db: Path, every: float = 0.25) -> None:
        import threading

        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(db, every), daemon=True)
        self._thread.start()

    def _run(self, db: Path, every: float) -> None:
        import lancedb

        table = lancedb.connect(str(db)).open_table("actions")
        while not self._stop.wait(every):
            try:
                table.checkout_latest()
                self.counts.append(int(table.stats()["fragment_stats"]["num_fragments"]))
            except Exception as exc:  # a count missed (a version cleaned up under the read): say so, go on
                sys.stderr.write(f"fragment count skipped: {exc}\n")

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.counts


def timed_runs(argv: list[str], runs: int) -> list[float]:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=REPO)
        walls.append((time.perf_counter() - started) * 1000)
    return walls


def raw_append_ms(scratch: Path, runs: int) -> list[float]:
    """One LanceDB append of one row, the storage floor of one acknowledged action."""
    import lancedb
    import pyarrow as pa

    async def go() -> list[float]:
        conn = await lancedb.connect_async(str(scratch))
        table = await conn.create_table("scratch", schema=pa.schema([pa.field("x", pa.int64())]))
        walls = []
        for i in range(runs):
            started = time.perf_counter()
            await table.add(pa.table({"x": [i]}))
            walls.append((time.perf_counter() - started) * 1000)
        return walls

    return asyncio.run(go())


def create_count(config: Path, count: int) -> tuple[float, list[str], int]:
    """``agentctl --json create joke --count N``: (wall seconds, session ids, exit code)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [
            *agentctl_argv(),
            "--config",
            str(config),
            "--timeout",
            "600",
            "--json",
            "create",
            "joke",
            "--count",
            str(count),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    ids = [r["session_id"] for r in rows if r.get("status") == "running"]
    if proc.returncode != 0:
        print(f"create --count {count} exited {proc.returncode}: {proc.stderr[-500:]}", flush=True)
    return wall, ids, proc.returncode


@dataclass
class Sample:
    """One socket round trip: the action, when it was sent and when its ack came (wall clock)."""

    action_id: str
    sent: float
    acked: float

    @property
    def ms(self) -> float:
        return (self.acked - self.sent) * 1000


def socket_acks(path: Path, ids: list[str], samples: int, pace: float = 0.0) -> list[Sample]:
    """Submitted -> acknowledged durable, seen by a client on the socket (one action per request);
    with ``pace``, a random pause averaging ``pace`` seconds before each request."""
    taken = []
    gaps = random.Random(7)
    with Connection(path) as conn:
        for i in range(samples):
            if pace:
                time.sleep(gaps.expovariate(1 / pace))
            sid = ids[i % len(ids)]
            kind = "pause" if (i // len(ids)) % 2 == 0 else "resume"
            sent = time.time()
            conn.send(request_line("submit", items=[{"kind": kind, "session_id": sid}], wait=True, timeout=30))
            for reply in conn.replies(60):
                if reply.type == "ack":
                    taken.append(Sample(reply.action_id, sent, time.time()))
                if reply.type == "end":
                    break
    return taken


async def _phases(config: Path, taken: list[Sample]) -> dict[str, list[float]]:
    """Where the server-side time goes, from the rows' timestamps: sent -> the action's row
    stamped (the daemon parsed and validated it; the stamp comes before its append), -> claimed
    (the append's commit, the wake; the claim is stamped before its conditional update), -> step
    stamped (the claim's update, the session's turn), -> ack received (steps commit + push)."""
    from agentd.config import load_settings
    from agentd.store import Store
    from agentd.store.sql import sql_in

    settings = load_settings(config)
    store = await Store.open(settings.storage.uri, settings.storage.num_shards, create=False)
    ids = [t.action_id for t in taken]
    actions = {
        r["action_id"]: r
        for r in (
            await store.actions.query()
            .where(sql_in("action_id", ids))
            .select(["action_id", "created_at", "claimed_at"])
            .to_arrow()
        ).to_pylist()
    }
    steps = {
        r["action_id"]: r["ts"]
        for r in (
            await store.steps.query().where(sql_in("action_id", ids)).select(["action_id", "ts"]).to_arrow()
        ).to_pylist()
    }
    phases: dict[str, list[float]] = {"stamp": [], "append+wake": [], "claim+apply": [], "commit+push": []}
    for t in taken:
        row, step = actions.get(t.action_id), steps.get(t.action_id)
        if row is None or row["claimed_at"] is None or step is None:
            continue
        created, claimed, applied = row["created_at"].timestamp(), row["claimed_at"].timestamp(), step.timestamp()
        phases["stamp"].append((created - t.sent) * 1000)
        phases["append+wake"].append((claimed - created) * 1000)
        phases["claim+apply"].append((applied - claimed) * 1000)
        phases["commit+push"].append((t.acked - applied) * 1000)
    return phases


def concurrent_processes(config: Path, ids: list[str], processes: int) -> dict[str, Any]:
    """``processes`` agentctl pause processes at once, one session each; then the rows are checked."""

    def one(sid: str) -> tuple[int, str]:
        proc = subprocess.run(
            [*agentctl_argv(), "--config", str(config), "--json", "pause", sid],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        return proc.returncode, proc.stdout

    chosen = ids[:processes]
    started = time.perf_counter()
    with ThreadPoolExecutor(processes) as pool:
        results = list(pool.map(one, chosen))
    wall = time.perf_counter() - started
    errors = sum(1 for code, _ in results if code != 0)
    # An acknowledged pause's row is marked done with its worker's next regular flush (README:
    # "When an action is acknowledged"): wait for the rows, and say how long it took.
    deadline = time.monotonic() + 30
    while True:
        actions = asyncio.run(_pause_rows(config, chosen))
        if all(a["status"] == "done" for a in actions) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    done_s = time.perf_counter() - started - wall
    acked = sum(1 for a in actions if a["status"] == "done")
    per_session = {sid: sum(1 for a in actions if a["session_id"] == sid) for sid in chosen}
    duplicates = sum(n - 1 for n in per_session.values() if n > 1)
    return {
        "wall_s": wall,
        "errors": errors,
        "actions": len(actions),
        "acked": acked,
        "done_s": done_s,
        "duplicates": duplicates,
    }


async def _pause_rows(config: Path, session_ids: list[str]) -> list[dict[str, Any]]:
    from agentd.config import load_settings
    from agentd.store import Store
    from agentd.store.sql import sql_in

    settings = load_settings(config)
    store = await Store.open(settings.storage.uri, settings.storage.num_shards, create=False)
    where = f"{sql_in('session_id', session_ids)} AND kind = 'pause'"
    rows = await store.actions.query().where(where).select(["action_id", "session_id", "status"]).to_arrow()
    return list(rows.to_pylist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 sessions, --count 2000, fewer samples")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (daemon log)")
    parser.add_argument(
        "--samples", type=int, help="socket samples per server-side measure (default 200; the p99 of 1,000 is steadier)"
    )
    args = parser.parse_args()
    sessions, big, runs, samples = (200, 2000, 20, 60) if args.quick else (1000, 10_000, 60, 200)
    samples = args.samples or samples
    tmp = Path(tempfile.mkdtemp(prefix="control-bench-"))
    config = tmp / "config.toml"
    config.write_text(CONFIG.format(db=tmp / "db", gateway_port=free_port(), metrics_port=free_port()))
    daemon = Daemon(config, tmp / "daemon.log")
    try:
        daemon.wait_ready()
        bare = timed_runs([sys.executable, "-c", "pass"], 20)
        version = timed_runs([*agentctl_argv(), "--version"], 20)
        append = raw_append_ms(tmp / "scratch", 30)
        print("baselines taken; measuring the quiet floor with 2 sessions", flush=True)
        _, quiet_ids, _ = create_count(config, 2)
        time.sleep(2)
        quiet = socket_acks(daemon.socket, quiet_ids, samples // 2, pace=0.3)
        quiet_phases = asyncio.run(_phases(config, quiet))
        print(f"creating {sessions} sessions", flush=True)
        create_s, ids, _ = create_count(config, sessions)
        print(f"created {len(ids)} sessions in {create_s:.1f}s", flush=True)
        time.sleep(2)
        ctl = [*agentctl_argv(), "--config", str(config)]
        pauses = []
        for i in range(runs):
            kind = "pause" if i % 2 == 0 else "resume"
            pauses += timed_runs([*ctl, kind, ids[i // 2 % 50]], 1)
        watch = FragmentWatch(tmp / "db")
        taken = socket_acks(daemon.socket, ids[50:100], samples)
        fragments = watch.stop() or [0]
        server = [t.ms for t in taken]
        paced = [t.ms for t in socket_acks(daemon.socket, ids[50:100], samples, pace=0.1)]
        phases = asyncio.run(_phases(config, taken))
        compaction = status(daemon.socket, timeout=10)["status"].get("queue_compaction") or {}
        crowd = concurrent_processes(config, ids[100:150], 50)
        big_s, big_ids, big_code = create_count(config, big)
        ready = status(daemon.socket, timeout=10)["status"]
    finally:
        daemon.kill()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    b50 = pct(bare, 50)
    fs = filesystem_of(tmp.parent).describe()
    print()
    print(
        f"control plane, {sessions} joke sessions running (shipped defaults: {ready.get('workers')} workers), "
        f"load avg {os.getloadavg()[0]:.1f}; database on {fs}"
    )
    print()
    print("| measure | p50 | p99 | ratio p50 / bare interpreter |")
    print("|---|---:|---:|---:|")

    def row(what: str, values: list[float], ratio: bool = True, digits: int = 0) -> None:
        shown = f"{pct(values, 50) / b50:.1f}" if ratio else ""
        print(f"| {what} | {pct(values, 50):.{digits}f} ms | {pct(values, 99):.{digits}f} ms | {shown} |")

    row("`python -c pass` (baseline)", bare)
    row("`agentctl --version` (baseline)", version)
    row("raw LanceDB append, 1 row (baseline)", append, ratio=False, digits=1)
    row(
        f"server side, quiet floor: 2 sessions, one request every 300 ms ({len(quiet)} socket samples)",
        [t.ms for t in quiet],
        ratio=False,
    )
    for phase, values in quiet_phases.items():
        row(f"  of which {phase}", values, ratio=False, digits=1)
    row(f"whole `agentctl pause`/`resume` process, daemon up ({runs} runs)", pauses)
    row(f"server side: submitted -> acknowledged durable ({samples} socket samples, back to back)", server, ratio=False)
    for phase, values in phases.items():
        row(f"  of which {phase}", values, ratio=False, digits=1)
    row(f"server side, paced: one request every 100 ms on average ({samples} socket samples)", paced, ratio=False)
    print(
        f"(compactions of the `actions` table until then: {compaction.get('compactions')}, "
        f"{compaction.get('preempted')} preempted, the last {compaction.get('last_ms')} ms; fragments of "
        f"`actions` during the back-to-back requests: median {sorted(fragments)[len(fragments) // 2]}, "
        f"most {max(fragments)})"
    )
    print()
    print(f"`agentctl create joke --count {sessions}`: {create_s:.1f} s wall, {len(ids)} acknowledged")
    print(f"`agentctl create joke --count {big}`: {big_s:.1f} s wall, {len(big_ids)} acknowledged, exit {big_code}")
    print(
        f"50 concurrent `agentctl pause` processes: {crowd['wall_s']:.1f} s wall, {crowd['errors']} errors, "
        f"{crowd['actions']} actions for 50 sessions ({crowd['duplicates']} duplicates), "
        f"{crowd['acked']} rows done {crowd['done_s']:.1f} s after the last process exited"
    )


if __name__ == "__main__":
    main()
