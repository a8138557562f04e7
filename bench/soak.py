"""Soak benchmark: the real daemon under steady load with retention on, for M minutes.

Does anything drift when agentd runs for a long time? This starts ``python -m agentd run`` (its
own process group, killed by pid/pgid at the end) on a fresh temporary database with
``[retention]`` on, the gateway on a free loopback port and a warm spare, then runs N sessions:
mostly JokeAgent sessions (1 s heartbeat, offline LLM), plus a few PersonaAgent sessions in a few
conversations where a "user" posts a message every few seconds. Each interval it also sends one
``interrupt`` to a random session, destroys one session and creates a new one (so that stopped
sessions are purged), and a WebSocket client follows a few ``run::`` rooms.

Every ``--interval`` seconds it prints one line and appends a CSV row with:

- steps/s committed (the workers' writer counters, ``{"op": "status"}``);
- tick lateness p99: the workers' ``lateness_ms`` (a reservoir over each worker's lifetime,
  so it reacts slowly) and, per interval, the p99 of (gap between consecutive tick steps of one
  JokeAgent session - heartbeat), read from the ``steps`` table ("tick jitter");
- control latency: ``ActionQueue.enqueue`` of an interrupt, wake hint, until ``ActionQueue.wait``
  sees it done;
- gateway lag: receipt time - step ``ts`` of every live step frame, p99 over the interval;
- RSS and open files (psutil) of every process of the daemon: supervisor, workers, gateway, spare;
- per table: version, versions kept on disk (manifests under ``_versions``), fragments, rows;
  commits/s over all tables; database size on disk and bytes on disk per stored step
  (database size / rows of ``steps``); the last maintenance pass's duration.

At the end: ``soak.csv`` and ``soak.png`` (one panel per series, the warm-up shaded) in
``--out``, and a summary: per series the value at the start and at the end of the judged window
(after the warm-up), the slope, and whether it is flat (within 20% or a small absolute noise
floor). Storage series can only level off once maintenance deletes versions, which it does after
``[maintenance] cleanup_older_than`` (at least 600 s): the default warm-up is that window plus two
maintenance passes, so a run needs about 15 minutes or more to judge them.

Baselines from the same run, measured after the daemon stopped: a raw LanceDB append of a
batch of real step rows the size of one writer flush (latency, and bytes on disk per step
for those appends and for the same rows in one append), the RSS of a bare interpreter that
imported LanceDB, and the configured intervals that bound control latency and gateway lag.

Needs matplotlib (``pip install -e '.[bench]'``). Usage::

    python bench/soak.py                                         # 1,000 sessions, 30 minutes
    python bench/soak.py --sessions 200 --minutes 3 --out /tmp/soak   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import random
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402

from agentd.config import Settings, load_settings  # noqa: E402
from agentd.control import DaemonUnreachable, request_sync  # noqa: E402
from agentd.ids import new_id, shard_for  # noqa: E402
from agentd.queue import ActionQueue  # noqa: E402
from agentd.store import Store  # noqa: E402
from agentd.store.actions import ActionRecord  # noqa: E402
from agentd.store.conversations import ConversationRecord, MessageRecord, insert_conversation, insert_messages  # noqa: E402
from agentd.store.sql import sql_in, sql_ts  # noqa: E402
from agentd.timeutil import utcnow  # noqa: E402

CONFIG = """
[daemon]
workers = {workers}
warm_spare = true
[storage]
uri = "{db}"
num_shards = 64
[runtime]
heartbeat_interval = {heartbeat}
[queue]
retention = {action_retention}
[retention]
steps_per_session = {keep_steps}
step_max_age = {step_max_age}
stopped_session_max_age = {stopped_max_age}
message_max_age = {message_max_age}
[maintenance]
interval = {maintenance_interval}
cleanup_older_than = {cleanup_older_than}
[gateway]
enabled = true
host = "127.0.0.1"
port = {port}
[logging]
level = "INFO"
"""

JOKE_AGENT = "soak-joke"
PERSONA_AGENT = "soak-persona"
SUBJECTS = ["cats", "owls", "tea", "compilers", "rain", "trains", "bread"]
TONES = ["dry", "cheerful", "noir", "formal", "sleepy"]
USER_LINES = ["What do you think of tea?", "Any news?", "Tell me about owls.", "Is it raining?", "Why compilers?"]

# Absolute noise floors for "flat": a change smaller than this is flat whatever its percentage
# (a p99 going from 1 ms to 2 ms is +100% and means nothing).
NOISE: dict[str, float] = {
    "steps_per_s": 0.0,
    "lateness_p99_ms": 5.0,
    "tick_jitter_p99_ms": 20.0,
    "control_ms": 100.0,
    "gateway_lag_p99_ms": 100.0,
    "commits_per_s": 1.0,
    "db_mb": 2.0,
    "bytes_per_step": 200.0,
    "steps_rows": 0.0,
    "maintenance_s": 1.0,
}
NOISE_PREFIX: dict[str, float] = {"cpu_": 5.0, "rss_": 10.0, "fds_": 8.0, "versions_kept_": 20.0, "fragments_": 8.0}
FLAT_FRACTION = 0.20


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if not stat.S_ISSOCK(st.st_mode):  # not the control socket
                    total += st.st_size
    return total


def versions_kept(db: Path, table: str) -> int:
    """Manifests on disk: the versions maintenance has not cleaned up yet."""
    try:
        return sum(1 for entry in os.scandir(db / f"{table}.lance" / "_versions") if entry.name.endswith(".manifest"))
    except OSError:
        return 0


# -- the daemon ------------------------------------------------------------------------------


class Daemon:
    """``python -m agentd run`` in its own session; stopped by pid, then its process group killed."""

    def __init__(self, config: Path, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            start_new_session=True,
            cwd=REPO,
        )

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self, timeout: float = 5) -> dict[str, Any] | None:
        try:
            reply = request_sync(self.settings.control_socket_path, {"op": "status"}, timeout=timeout)
        except DaemonUnreachable:
            return None
        status: dict[str, Any] = reply["status"]
        return status

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise SystemExit(f"daemon exited:\n{self.tail()}")
            status = self.status(timeout=2)
            gateway = (status or {}).get("gateway") or {}
            if status and status["ready"] and gateway.get("status") == "ok":
                return status
            time.sleep(0.2)
        raise SystemExit(f"daemon not ready in {timeout:.0f}s:\n{self.tail()}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the supervisor (a graceful stop), then SIGKILL to whatever is left in its group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def process_labels(status: dict[str, Any]) -> dict[int, str]:
    """pid -> supervisor | worker<k> | gateway | spare, from a status reply."""
    labels = {int(status["pid"]): "supervisor"}
    for child in status["children"]:
        role = child["role"]
        labels[int(child["pid"])] = f"worker{child['index']}" if role == "worker" else str(role)
    return labels


def _unnamed_label(proc: psutil.Process) -> str:
    """The supervisor's maintenance child (not in the status reply) gets its own series: its RSS
    is where maintenance's memory goes since the passes left the supervisor (issue 11)."""
    with contextlib.suppress(psutil.Error):
        if "agentd.store.maintenance_child" in proc.cmdline():
            return "maintenance"
    return "other"


@dataclass
class Usage:
    rss_mb: float = 0.0
    fds: int = 0
    cpu: float = 0.0


class ProcessWatch:
    """RSS, open files and CPU % (of one core, since the last sample) of the daemon's process tree."""

    def __init__(self) -> None:
        # Kept across samples: cpu_percent() measures since the previous call on the same object.
        self.procs: dict[int, psutil.Process] = {}

    def usage(self, status: dict[str, Any]) -> dict[str, Usage]:
        """label -> usage; the maintenance child is "maintenance", other unnamed descendants "other"."""
        labels = process_labels(status)
        usage: dict[str, Usage] = {}
        try:
            root = psutil.Process(int(status["pid"]))
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return usage
        seen = {}
        for fresh in procs:
            proc = self.procs.get(fresh.pid, fresh)
            seen[fresh.pid] = proc
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss / 2**20
                    fds = proc.num_fds()
                    cpu = proc.cpu_percent(interval=None)
            except psutil.Error:
                continue
            total = usage.setdefault(labels.get(proc.pid) or _unnamed_label(proc), Usage())
            total.rss_mb += rss
            total.fds += fds
            total.cpu += cpu
        self.procs = seen
        return usage


# -- load ------------------------------------------------------------------------------------


@dataclass
class Load:
    """The sessions the bench drives, and what its background tasks measured since the last sample."""

    jokes: list[str]
    personas: list[str]
    conversations: list[str]
    followed: list[str]
    busy: set[str] = field(default_factory=set)
    control_ms: list[float] = field(default_factory=list)
    control_failures: int = 0
    churned: int = 0
    posted: int = 0
    lags_ms: list[float] = field(default_factory=list)
    gw_received: int = 0
    gw_reconnects: int = 0
    gw_out_of_order: int = 0
    errors: list[str] = field(default_factory=list)


async def wake(settings: Settings, shard: int | None = None) -> None:
    message: dict[str, Any] = {"op": "wake"} if shard is None else {"op": "wake", "shard": shard}
    with contextlib.suppress(DaemonUnreachable):
        await asyncio.to_thread(request_sync, settings.control_socket_path, message, timeout=2)


async def create_sessions(store: Store, settings: Settings, args: argparse.Namespace) -> Load:
    """Setup, not measured: conversations, then one append of every create action, then wait."""
    n_personas = min(args.conversations * args.personas, args.sessions // 2)
    conversations = []
    for i in range(args.conversations if n_personas else 0):
        record = ConversationRecord(conversation_id=new_id("c"), title=f"soak {i}", created_at=utcnow())
        await insert_conversation(store.conversations, record)
        conversations.append(record.conversation_id)
    jokes = [f"joke-{i:05d}" for i in range(args.sessions - n_personas)]
    personas = [f"persona-{i:03d}" for i in range(n_personas)]
    now = utcnow()
    records = [
        ActionRecord(
            action_id=new_id("a"),
            session_id=sid,
            shard=shard_for(sid, store.num_shards),
            kind="create",
            payload={"agent_type": "joke", "agent_id": JOKE_AGENT, "config": {"subject": random.choice(SUBJECTS)}},
            created_at=now,
        )
        for sid in jokes
    ]
    for i, sid in enumerate(personas):
        config = {
            "conversation_id": conversations[i % len(conversations)],
            "name": f"Persona{i}",
            "tone": random.choice(TONES),
            "cooldown": args.persona_cooldown,
        }
        records.append(
            ActionRecord(
                action_id=new_id("a"),
                session_id=sid,
                shard=shard_for(sid, store.num_shards),
                kind="create",
                payload={"agent_type": "persona", "agent_id": PERSONA_AGENT, "config": config},
                created_at=now,
            )
        )
    await store.actions.add(ActionRecord.to_arrow(records))
    await wake(settings)
    ids = [r.action_id for r in records]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        rows = await store.actions.query().where(sql_in("action_id", ids)).select(["status", "error"]).to_arrow()
        statuses = rows.column("status").to_pylist()
        if all(s in ("done", "failed") for s in statuses):
            failed = [e for s, e in zip(statuses, rows.column("error").to_pylist(), strict=True) if s == "failed"]
            if failed:
                raise SystemExit(f"{len(failed)} creates failed, e.g. {failed[0]}")
            break
        await asyncio.sleep(0.5)
    else:
        raise SystemExit("sessions were not created in 300 s")
    followed = jokes[: args.rooms]
    return Load(jokes=jokes, personas=personas, conversations=conversations, followed=followed)


async def control_loop(
    queue: ActionQueue, settings: Settings, load: Load, interval: float, stop: asyncio.Event
) -> None:
    """One interrupt per interval to a random session, timed from enqueue to done."""
    await asyncio.sleep(interval / 2)  # between two samples
    while not stop.is_set():
        started_loop = time.monotonic()
        sid = random.choice(load.jokes + load.personas)
        load.busy.add(sid)
        if sid in load.personas:
            payload: dict[str, Any] = {"guidance": {"set_tone": random.choice(TONES)}, "now": False}
        else:
            payload = {"guidance": {"subject": random.choice(SUBJECTS)}, "now": False}
        try:
            started = time.perf_counter()
            action = await queue.enqueue("interrupt", sid, payload)
            await wake(settings, action.shard)
            record = await queue.wait(action.action_id, timeout=60)
            elapsed = (time.perf_counter() - started) * 1000
            if record is None or record.status != "done":
                load.control_failures += 1
                load.errors.append(f"interrupt {sid}: {'timeout' if record is None else record.error}")
            else:
                load.control_ms.append(elapsed)
        except Exception as exc:  # keep soaking; the failure is counted and printed
            load.control_failures += 1
            load.errors.append(f"interrupt {sid}: {type(exc).__name__}: {exc}")
        finally:
            load.busy.discard(sid)
        await sleep_or_stop(stop, interval - (time.monotonic() - started_loop))


async def churn_loop(
    queue: ActionQueue, settings: Settings, load: Load, interval: float, per: int, stop: asyncio.Event
) -> None:
    """Destroy ``per`` joke sessions and create as many new ones every interval (stopped sessions to purge)."""
    counter = 0
    while per > 0 and not stop.is_set():
        await sleep_or_stop(stop, interval)
        for _ in range(per):
            candidates = [s for s in load.jokes if s not in load.busy and s not in load.followed]
            if not candidates:
                break
            victim = random.choice(candidates)
            load.jokes.remove(victim)
            counter += 1
            fresh = f"joke-new-{counter:05d}"
            try:
                await queue.enqueue("destroy", victim, {})
                action = await queue.enqueue(
                    "create",
                    fresh,
                    {"agent_type": "joke", "agent_id": JOKE_AGENT, "config": {"subject": random.choice(SUBJECTS)}},
                )
                await wake(settings)
                record = await queue.wait(action.action_id, timeout=60)
                if record is not None and record.status == "done":
                    load.jokes.append(fresh)
                    load.churned += 1
                else:
                    load.errors.append(f"churn create {fresh}: {'timeout' if record is None else record.error}")
            except Exception as exc:
                load.errors.append(f"churn: {type(exc).__name__}: {exc}")


async def post_loop(store: Store, load: Load, every: float, stop: asyncio.Event) -> None:
    """A user message into a random conversation every ``every`` seconds; personas reply."""
    while load.conversations and not stop.is_set():
        await sleep_or_stop(stop, every)
        record = MessageRecord(
            message_id=new_id("m"),
            conversation_id=random.choice(load.conversations),
            author_id="soak-user",
            role="user",
            text=random.choice(USER_LINES),
            created_at=utcnow(),
        )
        try:
            await insert_messages(store.messages, [record])
            load.posted += 1
        except Exception as exc:
            load.errors.append(f"post: {type(exc).__name__}: {exc}")


async def subscriber_loop(port: int, load: Load, stop: asyncio.Event) -> None:
    """Follow ``load.followed`` rooms on one WebSocket; lag = receipt - step ts of each live step."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    last: dict[str, int] = dict.fromkeys(load.followed, 0)
    while not stop.is_set():
        try:
            async with connect(f"ws://127.0.0.1:{port}/", max_size=2**24, open_timeout=10) as ws:
                for sid in load.followed:
                    room = f"run::{JOKE_AGENT}::{sid}"
                    await ws.send(json.dumps({"op": "subscribe", "room": room, "since": last[sid]}))
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=1.0)
                    except TimeoutError:
                        continue
                    received = time.time()
                    frame = json.loads(raw)
                    kind = frame.get("type")
                    if kind == "snapshot":
                        for step in frame.get("steps") or []:
                            last[step["session_id"]] = max(last.get(step["session_id"], 0), int(step["seq"]))
                    elif kind == "step":
                        sid, seq = frame["session_id"], int(frame["seq"])
                        if seq != last.get(sid, 0) + 1:
                            load.gw_out_of_order += 1
                        last[sid] = max(last.get(sid, 0), seq)
                        sent = datetime.fromisoformat(frame["ts"]).timestamp()
                        load.lags_ms.append((received - sent) * 1000)
                        load.gw_received += 1
                    elif kind == "error":
                        load.errors.append(f"gateway error event: {frame.get('error')}")
        except (OSError, TimeoutError, WebSocketException) as exc:
            if stop.is_set():
                break
            load.gw_reconnects += 1
            load.errors.append(f"gateway connection: {type(exc).__name__}: {exc}")
            await sleep_or_stop(stop, 1.0)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


# -- sampling --------------------------------------------------------------------------------


@dataclass
class Sampler:
    """Turns status replies, psutil and the tables into one row per interval."""

    daemon: Daemon
    store: Store
    load: Load
    db: Path
    heartbeat: float
    started: float = field(default_factory=time.monotonic)
    last_t: float = 0.0
    writer_steps: dict[int, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    last_tick: dict[str, tuple[int, float]] = field(default_factory=dict)
    tick_cut: datetime = field(default_factory=utcnow)
    labels: list[str] = field(default_factory=list)
    watch: ProcessWatch = field(default_factory=ProcessWatch)
    # Steps deleted by retention, summed over the maintenance passes seen (status shows the last pass).
    steps_deleted: int = 0
    last_pass: str | None = None

    async def tick_jitter(self) -> float | None:
        """p99 of (gap between consecutive tick steps of one joke session - heartbeat), in ms, since the last sample."""
        since = self.tick_cut - timedelta(seconds=5)  # steps commit up to a flush after their ts
        self.tick_cut = utcnow()
        where = f"agent_id = '{JOKE_AGENT}' AND kind = 'tick' AND ts > {sql_ts(since)}"
        rows = await self.store.steps.query().where(where).select(["session_id", "seq", "ts"]).to_arrow()
        gaps: list[float] = []
        order = sorted(
            zip(
                rows.column("session_id").to_pylist(),
                rows.column("seq").to_pylist(),
                rows.column("ts").to_pylist(),
                strict=True,
            ),
            key=lambda r: (r[0], r[1]),
        )
        for sid, seq, ts in order:
            previous = self.last_tick.get(sid)
            if previous is not None and seq <= previous[0]:
                continue
            stamp = ts.timestamp()
            if previous is not None and seq == previous[0] + 1:
                gaps.append((stamp - previous[1] - self.heartbeat) * 1000)
            self.last_tick[sid] = (seq, stamp)
        return pct(gaps, 99)

    async def sample(self) -> dict[str, float | None]:
        status = await asyncio.to_thread(self.daemon.status)
        if status is None:
            raise RuntimeError(f"daemon does not answer status:\n{self.daemon.tail()}")
        now = time.monotonic()
        dt = max(1e-6, now - (self.last_t or self.started))
        self.last_t = now
        row: dict[str, float | None] = {"t_s": round(now - self.started, 1)}
        workers = [c for c in status["children"] if c["role"] == "worker"]
        row["sessions"] = float(status.get("sessions") or 0)
        steps = 0
        for child in workers:
            pid, count = int(child["pid"]), int((child.get("writer") or {}).get("steps") or 0)
            before = self.writer_steps.get(pid)
            steps += count - before if before is not None and count >= before else count
            self.writer_steps[pid] = count
        row["steps_per_s"] = steps / dt
        p99s = [float((c.get("lateness_ms") or {}).get("p99") or 0) for c in workers]
        row["lateness_p99_ms"] = max(p99s) if p99s else None
        row["tick_jitter_p99_ms"] = await self.tick_jitter()
        load = self.load
        row["control_ms"] = max(load.control_ms) if load.control_ms else None
        row["gateway_lag_p99_ms"] = pct(load.lags_ms, 99)
        row["gateway_steps"] = float(load.gw_received)
        load.control_ms, load.lags_ms, load.gw_received = [], [], 0
        usage = self.watch.usage(status)
        if not self.labels:
            # The maintenance child starts at the first pass, after the first sample: name it now.
            self.labels = sorted({*usage, "maintenance"}, key=label_order)
        for label in self.labels:
            item = usage.get(label)
            row[f"rss_{label}_mb"] = None if item is None else item.rss_mb
            row[f"fds_{label}"] = None if item is None else float(item.fds)
            row[f"cpu_{label}"] = None if item is None else item.cpu
        commits = 0
        steps_rows = 0
        for name, table in self.store.tables.items():
            version = int(await table.version())
            stats = await table.stats()
            commits += version - self.versions.get(name, version)
            self.versions[name] = version
            row[f"version_{name}"] = float(version)
            row[f"versions_kept_{name}"] = float(versions_kept(self.db, name))
            row[f"fragments_{name}"] = float(stats["fragment_stats"]["num_fragments"])
            row[f"rows_{name}"] = float(stats["num_rows"])
            if name == "steps":
                steps_rows = int(stats["num_rows"])
        row["commits_per_s"] = commits / dt
        size = await asyncio.to_thread(dir_size, self.db)
        row["db_mb"] = size / 2**20
        row["steps_rows"] = float(steps_rows)
        row["bytes_per_step"] = size / steps_rows if steps_rows else None
        maintenance = status.get("maintenance") or {}
        row["maintenance_s"] = maintenance.get("seconds")
        if maintenance.get("at") and maintenance.get("at") != self.last_pass:
            self.last_pass = maintenance["at"]
            self.steps_deleted += int((maintenance.get("retention") or {}).get("steps_deleted") or 0)
        row["steps_deleted_total"] = float(self.steps_deleted)
        row["load_avg"] = os.getloadavg()[0]
        return row


def label_order(label: str) -> tuple[int, str]:
    rank = {"supervisor": 0, "gateway": 2, "spare": 3, "other": 4}
    return (rank.get(label, 1), label)


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def line(row: dict[str, float | None], labels: list[str]) -> str:
    rss = " ".join(f"{short(lb)}={fmt(row.get(f'rss_{lb}_mb'))}" for lb in labels)
    fds = " ".join(f"{short(lb)}={fmt(row.get(f'fds_{lb}'))}" for lb in labels)
    return (
        f"t={fmt(row['t_s'], '5.0f')}s steps/s={fmt(row['steps_per_s'], '5.0f')} "
        f"late.p99={fmt(row['lateness_p99_ms'], '.1f')}ms jitter.p99={fmt(row['tick_jitter_p99_ms'], '.0f')}ms "
        f"ctl={fmt(row['control_ms'])}ms gw.p99={fmt(row['gateway_lag_p99_ms'])}ms | RSS MB {rss} | fds {fds} | "
        f"cpu={sum(row.get(f'cpu_{lb}') or 0 for lb in labels):.0f}% | "
        f"steps v{fmt(row.get('version_steps'))} kept={fmt(row.get('versions_kept_steps'))} "
        f"frag={fmt(row.get('fragments_steps'))} rows={fmt(row['steps_rows'])} "
        f"deleted={fmt(row.get('steps_deleted_total'))} | "
        f"db={fmt(row['db_mb'], '.1f')}MB {fmt(row['bytes_per_step'])}B/step load={fmt(row['load_avg'], '.1f')}"
    )


def short(label: str) -> str:
    return {"supervisor": "sup", "gateway": "gw"}.get(label, label.replace("worker", "w"))


# -- summary and plot ------------------------------------------------------------------------


def noise_floor(series: str) -> float:
    if series in NOISE:
        return NOISE[series]
    for prefix, floor in NOISE_PREFIX.items():
        if series.startswith(prefix):
            return floor
    return 0.0


def slope_per_hour(ts: list[float], vs: list[float]) -> float:
    if len(ts) < 2:
        return 0.0
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    denom = sum((t - mt) ** 2 for t in ts)
    return 0.0 if denom == 0 else sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / denom * 3600


@dataclass
class Verdict:
    series: str
    first: float
    last: float
    slope_h: float
    flat: bool


def judge(rows: list[dict[str, float | None]], series: str, warmup: float) -> Verdict | None:
    points = [(r["t_s"], r.get(series)) for r in rows if r.get(series) is not None and (r["t_s"] or 0) >= warmup]
    pairs = [(float(t or 0), float(v or 0)) for t, v in points]
    if len(pairs) < 2:
        return None
    k = max(1, len(pairs) // 10)  # median of the first and last tenth: one noisy interval does not decide
    first = statistics.median(v for _, v in pairs[:k])
    last = statistics.median(v for _, v in pairs[-k:])
    flat = abs(last - first) <= max(FLAT_FRACTION * abs(first), noise_floor(series))
    return Verdict(series, first, last, slope_per_hour([t for t, _ in pairs], [v for _, v in pairs]), flat)


def summary_series(rows: list[dict[str, float | None]], labels: list[str], tables: list[str]) -> list[str]:
    names = [
        "steps_per_s",
        "lateness_p99_ms",
        "tick_jitter_p99_ms",
        "control_ms",
        "gateway_lag_p99_ms",
        *(f"rss_{lb}_mb" for lb in labels),
        *(f"fds_{lb}" for lb in labels),
        *(f"cpu_{lb}" for lb in labels),
        "commits_per_s",
        *(f"versions_kept_{t}" for t in tables),
        *(f"fragments_{t}" for t in tables),
        "steps_rows",
        "db_mb",
        "bytes_per_step",
        "maintenance_s",
    ]
    return [n for n in names if any(r.get(n) is not None for r in rows)]


def print_summary(rows: list[dict[str, float | None]], names: list[str], warmup: float) -> int:
    print()
    print(f"summary after a {warmup:.0f} s warm-up (median of the first and last tenth of the judged intervals):")
    print()
    print("| series | first | last | change | slope per hour | flat |")
    print("|---|---:|---:|---:|---:|---|")
    drifting = 0
    for name in names:
        verdict = judge(rows, name, warmup)
        if verdict is None:
            print(f"| {name} | - | - | - | - | too few samples after the warm-up |")
            continue
        change = (verdict.last - verdict.first) / abs(verdict.first) * 100 if verdict.first else 0.0
        if not verdict.flat:
            drifting += 1
        print(
            f"| {name} | {verdict.first:,.1f} | {verdict.last:,.1f} | {change:+.0f}% | {verdict.slope_h:+,.1f} "
            f"| {'yes' if verdict.flat else '**no**'} |"
        )
    return drifting


def plot(
    rows: list[dict[str, float | None]], labels: list[str], tables: list[str], warmup: float, title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [float(r["t_s"] or 0) / 60 for r in rows]

    def values(name: str, scale: float = 1.0) -> list[float]:
        return [math.nan if r.get(name) is None else float(r[name] or 0) * scale for r in rows]

    panels: list[tuple[str, list[tuple[str, str, float]]]] = [
        ("steps/s committed", [("steps/s", "steps_per_s", 1.0)]),
        (
            "tick lateness p99 (ms)",
            [("status (worker lifetime)", "lateness_p99_ms", 1.0), ("tick gap - heartbeat", "tick_jitter_p99_ms", 1.0)],
        ),
        ("control latency: interrupt (ms)", [("enqueue -> done", "control_ms", 1.0)]),
        ("gateway lag p99 (ms)", [("receipt - step ts", "gateway_lag_p99_ms", 1.0)]),
        ("RSS (MB)", [(lb, f"rss_{lb}_mb", 1.0) for lb in labels]),
        ("open files", [(lb, f"fds_{lb}", 1.0) for lb in labels]),
        ("CPU % of one core", [(lb, f"cpu_{lb}", 1.0) for lb in labels]),
        ("versions kept on disk", [(t, f"versions_kept_{t}", 1.0) for t in tables]),
        ("fragments", [(t, f"fragments_{t}", 1.0) for t in tables]),
        ("commits/s (all tables)", [("new versions/s", "commits_per_s", 1.0)]),
        ("database size (MB)", [("on disk", "db_mb", 1.0)]),
        ("bytes on disk per stored step (KB)", [("db size / steps rows", "bytes_per_step", 1 / 1024)]),
        (
            "steps (thousands of rows)",
            [("stored", "steps_rows", 1 / 1000), ("deleted by retention (total)", "steps_deleted_total", 1 / 1000)],
        ),
        ("other rows stored", [(t, f"rows_{t}", 1.0) for t in ("sessions", "actions", "messages", "participants")]),
        ("maintenance pass (s)", [("last pass", "maintenance_s", 1.0)]),
        ("load average (1 min)", [("machine", "load_avg", 1.0)]),
    ]
    cols = 4
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(20, 4.2 * rows_n), squeeze=False)
    for ax, (heading, lines) in zip(axes.flat, panels, strict=False):
        for name, key, scale in lines:
            ys = values(key, scale)
            if all(math.isnan(y) for y in ys):
                continue
            ax.plot(minutes, ys, marker=".", markersize=3, linewidth=1.2, label=name)
        if warmup > 0:
            ax.axvspan(0, warmup / 60, color="0.9", zorder=0)
        ax.set_title(heading, fontsize=11)
        ax.set_xlabel("minutes", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7, ncol=2, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title + "   (grey: warm-up, not judged)", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- baselines -------------------------------------------------------------------------------


async def raw_baselines(sample: pa.Table, scratch: Path, batch: int, max_appends: int = 100) -> dict[str, float]:
    """Raw LanceDB appends of real step rows, ``batch`` rows at a time, and the same rows in one append."""
    import lancedb

    batch = max(1, min(batch, sample.num_rows))
    conn = await lancedb.connect_async(str(scratch))
    table = await conn.create_table("steps_batches", schema=sample.schema)
    times = []
    appended = 0
    for offset in range(0, min(sample.num_rows, batch * max_appends) - batch + 1, batch):
        started = time.perf_counter()
        await table.add(sample.slice(offset, batch))
        times.append((time.perf_counter() - started) * 1000)
        appended += batch
    batches_bytes = dir_size(scratch / "steps_batches.lance")
    one = await conn.create_table("steps_one", data=sample.slice(0, appended))
    one_bytes = dir_size(scratch / "steps_one.lance")
    del one
    return {
        "batch": float(batch),
        "appends": float(len(times)),
        "append_p50": pct(times, 50) or 0.0,
        "append_p99": pct(times, 99) or 0.0,
        "bytes_per_row_batches": batches_bytes / max(1, appended),
        "bytes_per_row_one": one_bytes / max(1, appended),
    }


def bare_rss_mb() -> float:
    code = "import lancedb, pyarrow, psutil; print(psutil.Process().memory_info().rss)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return int(out.stdout.strip()) / 2**20


# -- main ------------------------------------------------------------------------------------


async def soak(
    args: argparse.Namespace, daemon: Daemon, settings: Settings, csv_path: Path
) -> tuple[list[dict[str, float | None]], list[str], list[str], pa.Table | None, Load]:
    db = settings.storage.local_path
    store = await Store.open(str(db), settings.storage.num_shards, create=False)
    queue = ActionQueue(store.actions, store.num_shards)
    started = time.perf_counter()
    load = await create_sessions(store, settings, args)
    print(
        f"created {len(load.jokes)} joke and {len(load.personas)} persona sessions "
        f"({len(load.conversations)} conversations) in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    sampler = Sampler(daemon=daemon, store=store, load=load, db=db, heartbeat=args.heartbeat)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(control_loop(queue, settings, load, args.interval, stop)),
        asyncio.create_task(churn_loop(queue, settings, load, args.interval, args.churn, stop)),
        asyncio.create_task(post_loop(store, load, args.post_every, stop)),
        asyncio.create_task(subscriber_loop(settings.gateway.port, load, stop)),
    ]
    rows: list[dict[str, float | None]] = []
    writer: Any = None
    handle = csv_path.open("w", newline="")
    deadline = time.monotonic() + args.minutes * 60
    tables = list(store.tables)
    try:
        await sampler.sample()  # primes counters; not recorded
        sampler.started = time.monotonic()
        sampler.last_t = sampler.started
        next_at = sampler.started + args.interval
        while time.monotonic() < deadline:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += args.interval
            if not daemon.alive():
                raise SystemExit(f"daemon exited during the soak:\n{daemon.tail()}")
            row = await sampler.sample()
            rows.append(row)
            if writer is None:
                writer = csv.DictWriter(handle, fieldnames=list(row), extrasaction="ignore")
                writer.writeheader()
            writer.writerow({k: "" if v is None else round(v, 3) for k, v in row.items()})
            handle.flush()
            print(line(row, sampler.labels), flush=True)
            for error in load.errors[-3:]:
                print(f"    ! {error}", flush=True)
            load.errors.clear()
        sample_rows = await store.steps.query().limit(4000).to_arrow()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        handle.close()
    return rows, sampler.labels, tables, sample_rows, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000, help="sessions in total (jokes + personas)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "agentd-soak")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--heartbeat", type=float, default=1.0, help="[runtime] heartbeat_interval")
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--personas", type=int, default=3, help="personas per conversation")
    parser.add_argument("--persona-cooldown", type=float, default=5.0)
    parser.add_argument("--post-every", type=float, default=3.0, help="seconds between user messages")
    parser.add_argument("--rooms", type=int, default=5, help="run:: rooms the WebSocket client follows")
    parser.add_argument("--churn", type=int, default=1, help="sessions destroyed and created per interval")
    parser.add_argument("--keep-steps", type=int, default=100, help="[retention] steps_per_session")
    parser.add_argument("--step-max-age", type=float, default=600.0, help="[retention] step_max_age")
    parser.add_argument("--stopped-max-age", type=float, default=60.0, help="[retention] stopped_session_max_age")
    parser.add_argument("--message-max-age", type=float, default=300.0, help="[retention] message_max_age")
    parser.add_argument("--action-retention", type=float, default=300.0, help="[queue] retention")
    parser.add_argument("--maintenance-interval", type=float, default=20.0, help="[maintenance] interval")
    parser.add_argument(
        "--cleanup-older-than", type=float, default=600.0, help="[maintenance] cleanup_older_than (>= 600)"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds not judged (default: cleanup window + 2 maintenance passes)"
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the temporary database")
    args = parser.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("needs matplotlib: pip install -e '.[bench]'") from None

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="agentd-soak-"))
    port = free_port()
    config = work / "config.toml"
    config.write_text(
        CONFIG.format(
            workers=args.workers,
            db=work / "db",
            heartbeat=args.heartbeat,
            action_retention=args.action_retention,
            keep_steps=args.keep_steps,
            step_max_age=args.step_max_age,
            stopped_max_age=args.stopped_max_age,
            message_max_age=args.message_max_age,
            maintenance_interval=args.maintenance_interval,
            cleanup_older_than=args.cleanup_older_than,
            port=port,
        )
    )
    settings = load_settings(config)
    full_warmup = args.cleanup_older_than + 2 * args.maintenance_interval
    warmup = args.warmup if args.warmup is not None else full_warmup
    run_s = args.minutes * 60
    capped = warmup > run_s / 2
    if capped:
        warmup = run_s / 3
    print(
        f"soak: {args.sessions} sessions, {args.minutes:g} min, sample every {args.interval:g}s, "
        f"{args.workers} workers, "
        f"gateway ws://127.0.0.1:{port}, database {work / 'db'}",
        flush=True,
    )
    print(
        f"retention: steps_per_session={args.keep_steps} step_max_age={args.step_max_age:g}s "
        f"stopped_session_max_age={args.stopped_max_age:g}s message_max_age={args.message_max_age:g}s, "
        f"actions kept {args.action_retention:g}s; maintenance every {args.maintenance_interval:g}s, "
        f"versions kept {args.cleanup_older_than:g}s",
        flush=True,
    )
    csv_path, png_path, log_path = args.out / "soak.csv", args.out / "soak.png", args.out / "daemon.log"
    log_path.unlink(missing_ok=True)
    daemon = Daemon(config, settings, log_path)
    sample: pa.Table | None = None
    try:
        status = daemon.wait_ready()
        print(f"daemon ready: pid {status['pid']}, {len(status['children'])} children", flush=True)
        rows, labels, tables, sample, load = asyncio.run(soak(args, daemon, settings, csv_path))
    finally:
        daemon.stop()
    try:
        settings_line = (
            f"bounds from the config: writer flush_interval {settings.writer.flush_interval:g}s, gateway "
            f"poll_interval {settings.gateway.poll_interval:g}s, queue poll_interval {settings.queue.poll_interval:g}s"
        )
        mean_rate = statistics.fmean(float(r["steps_per_s"] or 0) for r in rows) if rows else 0.0
        batch = max(1, round(mean_rate * settings.writer.flush_interval / max(1, args.workers)))
        base = asyncio.run(raw_baselines(sample, work / "scratch", batch)) if sample is not None else None
        bare = bare_rss_mb()
    finally:
        if not args.keep_db:
            shutil.rmtree(work, ignore_errors=True)

    names = summary_series(rows, labels, tables)
    title = (
        f"agentd soak: {args.sessions} sessions, {args.workers} workers, {args.minutes:g} min, "
        f"retention keep {args.keep_steps} steps/session"
    )
    plot(rows, labels, tables, warmup, title, png_path)
    drifting = print_summary(rows, names, warmup)
    print()
    if capped:
        print(
            f"note: the run is shorter than twice the full warm-up ({full_warmup:.0f} s: versions are kept "
            f"{args.cleanup_older_than:g} s), so only the first third was left out and the storage series "
            "(versions kept, database size, bytes per step) cannot have levelled off yet"
        )
    deleted = float(rows[-1].get("steps_deleted_total") or 0) if rows else 0.0
    ceiling = args.sessions * args.keep_steps
    print(
        f"retention: {deleted:,.0f} steps deleted; {rows[-1]['steps_rows'] if rows else 0:,.0f} stored at the end, "
        f"steady state with steps_per_session={args.keep_steps} is about {ceiling:,} (+ a maintenance interval "
        "of new steps, + stopped sessions not yet purged)"
    )
    if args.keep_steps and run_s > args.keep_steps * args.heartbeat + 3 * args.maintenance_interval and not deleted:
        print("WARNING: retention deleted no steps: is [retention] applied by the maintenance pass?")
    print(
        f"load: {load.churned} sessions churned, {load.posted} user messages, {load.control_failures} interrupts "
        f"failed, gateway: {load.gw_reconnects} reconnects, {load.gw_out_of_order} steps out of order"
    )
    print()
    print("baselines (same run, after the daemon stopped):")
    if base is not None:
        print(
            f"  raw LanceDB append of {base['batch']:.0f} real step rows (one writer flush per worker): "
            f"p50 {base['append_p50']:.1f} ms, p99 {base['append_p99']:.1f} ms over {base['appends']:.0f} appends; "
            f"on disk {base['bytes_per_row_batches']:,.0f} B/step after those appends, "
            f"{base['bytes_per_row_one']:,.0f} B/step for the same rows in one append"
        )
    print(f"  RSS of a bare interpreter that imported lancedb + pyarrow: {bare:.0f} MB")
    print(f"  {settings_line}")
    print()
    print(f"{len(rows)} samples: {csv_path}\nplot: {png_path}\ndaemon log: {log_path}")
    print(f"{drifting} series not flat" if drifting else "all series flat")


if __name__ == "__main__":
    main()
