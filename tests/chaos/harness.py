"""Drive the real daemon under a random fault schedule, then check the stored data.

One ``ChaosRun`` owns every process it starts (the loopback LLM server, each supervisor
generation, the senders, the subscribers), each in its own session (process group), and
cleans them all up by pid/pgid at the end, whatever happened. The schedule is drawn from one
seed, printed at the start (``CHAOS_SEED=<n>`` replays it; process timing still varies).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from agentd.config import load_settings
from agentd.control import DaemonUnreachable, request_sync

from . import checks

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

CONFIG = """
[daemon]
workers = {workers}
heartbeat_interval = 0.3
heartbeat_timeout = 10
stop_timeout = 15
crash_loop_restarts = 1000
crash_loop_window = 60
restart_backoff_initial = 0.2
restart_backoff_max = 2
warm_spare = true
[storage]
uri = "{db}"
num_shards = 16
[writer]
flush_interval = 0.05
[queue]
poll_interval = 0.2
lease = {lease}
[runtime]
heartbeat_interval = 1.0
tick_timeout = {tick_timeout}
[gateway]
enabled = true
host = "127.0.0.1"
port = {gateway_port}
[maintenance]
enabled = true
interval = 5
[llm]
provider = "openai-generic"
base_url = "http://127.0.0.1:{llm_port}/v1"
model = "loopback-model"
api_key_env = "CHAOS_LLM_KEY"
timeout = {llm_timeout}
retries = 1
retry_backoff = 0.2
"""

# Children of a SIGKILLed supervisor still running after this long are reported (each child ends
# itself at most agentd.orphans.ORPHAN_EXIT_DEADLINE = 10 s after its supervisor died).
ORPHAN_LIMIT = 20.0
FAULT_KINDS = ("kill_worker", "kill_gateway", "kill_supervisor", "sighup_workers", "sigstop_worker")


@dataclass
class Profile:
    name: str
    jokes: int
    personas: int
    conversations: int
    senders: int
    subscribers: int
    rooms_per_subscriber: int
    min_faults: int
    fault_phase: float  # seconds of faults at least (and until min_faults)
    fault_gap: tuple[float, float]
    create_spread: float  # creates are spread over this many seconds after the start
    rate: float  # actions per second per sender
    message_every: tuple[float, float]
    destroy_fraction: float = 0.02
    slow_fraction: float = 0.05
    lease: float = 2.0
    max_wall: float = 170.0  # hard limit of the fault phase, whatever min_faults says
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "kill_worker": 3,
            "kill_gateway": 1.5,
            "kill_supervisor": 1.5,
            "sighup_workers": 1.5,
            "sigstop_worker": 2,
        }
    )


SHORT = Profile(
    name="short",
    jokes=40,
    personas=20,
    conversations=4,
    senders=3,
    subscribers=2,
    rooms_per_subscriber=3,
    min_faults=22,
    fault_phase=55.0,
    fault_gap=(0.5, 2.0),
    create_spread=10.0,
    rate=1.0,
    message_every=(1.0, 3.0),
    max_wall=90.0,
    weights={"kill_worker": 3, "kill_gateway": 1.5, "kill_supervisor": 1, "sighup_workers": 1, "sigstop_worker": 1.5},
)

LONG = Profile(
    name="long",
    jokes=200,
    personas=100,
    conversations=12,
    senders=4,
    subscribers=3,
    rooms_per_subscriber=4,
    min_faults=210,
    fault_phase=900.0,
    fault_gap=(1.5, 5.0),
    create_spread=600.0,
    rate=1.5,
    message_every=(0.5, 2.0),
    max_wall=1500.0,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int, created: float | None = None) -> bool:
    try:
        proc = psutil.Process(pid)
        if created is not None and abs(proc.create_time() - created) > 0.01:
            return False  # the pid was reused
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ChaosRun:
    def __init__(self, workdir: Path, profile: Profile, seed: int | None = None) -> None:
        self.dir = workdir
        self.profile = profile
        self.seed = seed if seed is not None else int(os.environ.get("CHAOS_SEED") or random.randrange(1, 10**9))
        self.rng = random.Random(self.seed)
        self.db = workdir / "db"
        self.config = workdir / "config.toml"
        self.log = workdir / "daemon.log"
        self.stop_senders = workdir / "stop-senders"
        self.stop_subscribers = workdir / "stop-subscribers"
        self.workers = 2
        self.lease = profile.lease
        self.gateway_port = free_port()
        self.llm_port = 0
        self.env = {**os.environ, "CHAOS_LLM_KEY": "sk-chaos"}
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), self.env.get("PYTHONPATH", "")])
        self.procs: list[subprocess.Popen[bytes]] = []  # everything we started (own sessions)
        self.children_seen: dict[int, float] = {}  # daemon children pid -> create_time
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.faults: Counter[str] = Counter()
        self.notes: list[str] = []
        self.liveness: list[str] = []
        self.orphan_waits: list[float] = []
        # (when the supervisor was killed, [(pid, create_time)] of its children)
        self.orphans: list[tuple[float, list[tuple[int, float | None]]]] = []
        self.sessions: list[dict[str, Any]] = []
        self.conversations: list[str] = []
        self.rooms: dict[str, list[str]] = {}
        self.started = time.monotonic()

    # -- processes -----------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[chaos {time.monotonic() - self.started:7.1f}s] {text}", flush=True)

    def _popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, env=self.env, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def write_config(self) -> None:
        self.config.write_text(
            CONFIG.format(
                workers=self.workers,
                db=self.db,
                lease=self.lease,
                tick_timeout=2.5 * self.lease + 1,
                gateway_port=self.gateway_port,
                llm_port=self.llm_port,
                llm_timeout=2.5 * self.lease,
            )
        )

    def start_llm(self) -> None:
        proc = self._popen(
            [
                sys.executable,
                str(HERE / "llm_server.py"),
                "--seed",
                str(self.seed),
                "--slow-fraction",
                str(self.profile.slow_fraction),
                "--lease",
                str(self.lease),
                "--max-runtime",
                str(self.profile.max_wall + 900),
            ],
            stdout=subprocess.PIPE,
            stderr=(self.dir / "llm.log").open("ab"),
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the loopback LLM server did not start"
        self.llm_port = int(proc.stdout.readline().split()[1])

    def start_supervisor(self) -> None:
        self.supervisor = self._popen(
            [sys.executable, "-m", "agentd", "--config", str(self.config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    def status(self) -> dict[str, Any] | None:
        try:
            reply = request_sync(self.settings.control_socket_path, {"op": "status"}, timeout=3)
        except (DaemonUnreachable, ValueError):
            return None
        status: dict[str, Any] | None = reply.get("status")
        if status:
            for child in status.get("children", []):
                pid = child.get("pid")
                if pid and pid not in self.children_seen:
                    try:
                        self.children_seen[pid] = psutil.Process(pid).create_time()
                    except psutil.NoSuchProcess:
                        pass
        return status

    def wait_ready(self, timeout: float, why: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.supervisor is not None and self.supervisor.poll() is not None:
                # systemd would restart it (Restart=always): so do we, and say so.
                self.notes.append(f"supervisor exited by itself (rc {self.supervisor.returncode}) {why}")
                self.say(self.notes[-1])
                self.start_supervisor()
            status = self.status()
            if status and status.get("ready"):
                workers = [c for c in status["children"] if c["role"] == "worker"]
                gateways = [c for c in status["children"] if c["role"] == "gateway"]
                if len(workers) == status["workers"] and all(c["alive"] and c["ready"] for c in workers) and gateways:
                    return status
            time.sleep(0.2)
        self.liveness.append(f"daemon not ready within {timeout:.0f}s {why}")
        self.say(self.liveness[-1])
        return None

    # -- setup ---------------------------------------------------------------------------

    def plan(self) -> Path:
        p = self.profile
        self.conversations = [f"conv-{i}" for i in range(p.conversations)]
        sessions = [{"session_id": f"joke-{i:03d}", "agent_type": "joke", "config": {}} for i in range(p.jokes)]
        for i in range(p.personas):
            sessions.append(
                {
                    "session_id": f"persona-{i:03d}",
                    "agent_type": "persona",
                    "config": {
                        "conversation_id": self.conversations[i % len(self.conversations)],
                        "name": f"P{i}",
                        "cooldown": round(self.rng.uniform(0, 1.0), 2),
                    },
                }
            )
        self.rng.shuffle(sessions)
        for index, spec in enumerate(sessions):
            # A first wave at once (the subscribers' rooms among them), the rest spread out.
            early = index < max(10, len(sessions) // 5)
            spec["create_at"] = 0.0 if early else round(self.rng.uniform(1.0, p.create_spread), 2)
            spec["config"].setdefault("interval", round(self.rng.uniform(1.0, 2.5), 2))
        self.sessions = sessions
        senders: list[list[dict[str, Any]]] = [[] for _ in range(p.senders)]
        for index, spec in enumerate(sessions):
            senders[index % p.senders].append(spec)
        plan = {
            "seed": self.seed,
            "config": str(self.config),
            "stop_file": str(self.stop_senders),
            "senders": senders,
            "conversations": self.conversations,
            "rate": p.rate,
            "message_every": list(p.message_every),
            "destroy_fraction": p.destroy_fraction,
        }
        path = self.dir / "plan.json"
        path.write_text(json.dumps(plan))
        return path

    def create_conversations(self) -> None:
        import asyncio

        from agentd.store import Store
        from agentd.store.conversations import ConversationRecord, insert_conversation
        from agentd.timeutil import utcnow

        async def go() -> None:
            store = await Store.open(str(self.db), self.settings.storage.num_shards, create=False)
            for cid in self.conversations:
                await insert_conversation(
                    store.conversations, ConversationRecord(conversation_id=cid, created_at=utcnow())
                )

        asyncio.run(go())

    def start_clients(self, plan: Path) -> None:
        budget = str(self.profile.max_wall + 600)
        for index in range(self.profile.senders):
            self._popen(
                [
                    *(sys.executable, str(HERE / "sender.py"), "--plan", str(plan), "--index", str(index)),
                    *("--out", str(self.dir / f"sender-{index}.jsonl"), "--max-runtime", budget),
                ],
                stdout=subprocess.DEVNULL,
                stderr=(self.dir / f"sender-{index}.log").open("ab"),
            )
        early = [s for s in self.sessions if s["create_at"] == 0.0]
        early.sort(key=lambda s: (s["agent_type"], s["session_id"]))
        picks = self.rng.sample(early, min(len(early), self.profile.subscribers * self.profile.rooms_per_subscriber))
        for index in range(self.profile.subscribers):
            name = f"sub-{index}"
            chosen = picks[index :: self.profile.subscribers]
            rooms = [f"run::{s['session_id']}::{s['session_id']}" for s in chosen]
            self.rooms[name] = rooms
            args = [sys.executable, str(HERE / "subscriber.py"), "--port", str(self.gateway_port)]
            for room in rooms:
                args += ["--room", room]
            args += ["--out", str(self.dir / f"{name}.jsonl"), "--stop-file", str(self.stop_subscribers)]
            args += ["--max-runtime", budget]
            self._popen(args, stdout=subprocess.DEVNULL, stderr=(self.dir / f"{name}.log").open("ab"))

    # -- faults --------------------------------------------------------------------------

    def _children(self, status: dict[str, Any], role: str) -> list[dict[str, Any]]:
        return [c for c in status["children"] if c["role"] == role and c.get("alive") and c.get("pid")]

    def inject(self, kind: str, status: dict[str, Any]) -> bool:
        assert self.supervisor is not None
        if kind == "kill_worker":
            victim = self.rng.choice(self._children(status, "worker"))
            self.say(f"fault kill -9 worker-{victim['index']} pid {victim['pid']}")
            os.kill(victim["pid"], signal.SIGKILL)
        elif kind == "kill_gateway":
            gateways = self._children(status, "gateway")
            if not gateways:
                return False
            self.say(f"fault kill -9 gateway pid {gateways[0]['pid']}")
            os.kill(gateways[0]["pid"], signal.SIGKILL)
        elif kind == "kill_supervisor":
            old = [(c["pid"], self.children_seen.get(c["pid"])) for c in status["children"] if c.get("pid")]
            self.say(f"fault kill -9 supervisor pid {self.supervisor.pid} (children {[p for p, _ in old]})")
            os.kill(self.supervisor.pid, signal.SIGKILL)
            self.supervisor.wait(timeout=30)
            # As systemd would (Restart=always): a new supervisor at once, while the old children
            # are still exiting by themselves; the epochs fence them. Their exit is timed below.
            self.start_supervisor()
            self.orphans.append((time.monotonic(), old))
        elif kind == "sighup_workers":
            self.workers = self.rng.choice([n for n in (1, 2, 3) if n != self.workers])
            self.write_config()
            self.say(f"fault SIGHUP with workers = {self.workers}")
            os.kill(self.supervisor.pid, signal.SIGHUP)
        elif kind == "sigstop_worker":
            victim = self.rng.choice(self._children(status, "worker"))
            pause = self.rng.uniform(1.5 * self.lease, 2.0 * self.lease)
            self.say(f"fault SIGSTOP worker-{victim['index']} pid {victim['pid']} for {pause:.1f}s")
            try:
                os.kill(victim["pid"], signal.SIGSTOP)
                time.sleep(pause)
            finally:
                try:
                    os.kill(victim["pid"], signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.faults[kind] += 1
        return True

    def reap_orphans(self, final: bool = False) -> None:
        """Time how long the children of a SIGKILLed supervisor take to exit by themselves."""
        for killed_at, old in list(self.orphans):
            left = [pid for pid, created in old if _alive(pid, created)]
            waited = time.monotonic() - killed_at
            if not left:
                self.orphan_waits.append(waited)
                self.orphans.remove((killed_at, old))
            elif waited > ORPHAN_LIMIT or final:
                self.liveness.append(f"children {left} of a supervisor SIGKILLed {waited:.0f}s ago are still running")
                self.orphans.remove((killed_at, old))
                for pid, created in old:
                    if _alive(pid, created):
                        os.kill(pid, signal.SIGKILL)

    def ready_enough(self, timeout: float, why: str) -> dict[str, Any] | None:
        """The supervisor answers and has a live worker (faults need not wait for full readiness)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.reap_orphans()
            if self.supervisor is not None and self.supervisor.poll() is not None:
                self.notes.append(f"supervisor exited by itself (rc {self.supervisor.returncode}) {why}")
                self.start_supervisor()
            status = self.status()
            if status and self._children(status, "worker"):
                return status
            time.sleep(0.2)
        self.liveness.append(f"no live worker within {timeout:.0f}s {why}")
        return None

    def fault_phase(self) -> None:
        p = self.profile
        began = time.monotonic()
        kinds = list(p.weights)
        weights = [p.weights[k] for k in kinds]
        while True:
            elapsed = time.monotonic() - began
            total = sum(self.faults.values())
            if (elapsed >= p.fault_phase and total >= p.min_faults) or elapsed >= p.max_wall:
                break
            time.sleep(self.rng.uniform(*p.fault_gap))
            status = self.ready_enough(60, f"before fault {total + 1}")
            if status is None:
                continue
            kind = self.rng.choices(kinds, weights)[0]
            try:
                self.inject(kind, status)
            except (ProcessLookupError, IndexError) as exc:
                self.notes.append(f"fault {kind} skipped: {exc!r}")

    # -- end -----------------------------------------------------------------------------

    def sent_actions(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for index in range(self.profile.senders):
            entries += [e for e in checks.read_jsonl(self.dir / f"sender-{index}.jsonl") if e["type"] == "action"]
        return entries

    def drain(self, timeout: float) -> None:
        """Wait for every logged action to be finished, poking the daemon now and then."""
        import asyncio

        from agentd.store import Store

        ids = {e["action_id"] for e in self.sent_actions()}

        async def unfinished() -> int:
            store = await Store.open(str(self.db), self.settings.storage.num_shards, create=False)
            rows = (await store.actions.query().select(["action_id", "status"]).to_arrow()).to_pylist()
            return sum(1 for r in rows if r["action_id"] in ids and r["status"] not in ("done", "failed"))

        deadline = time.monotonic() + timeout
        left = -1
        while time.monotonic() < deadline:
            left = asyncio.run(unfinished())
            if left == 0:
                self.say(f"all {len(ids)} actions finished")
                return
            try:
                request_sync(self.settings.control_socket_path, {"op": "wake"}, timeout=2)
            except (DaemonUnreachable, ValueError):
                pass
            time.sleep(1.0)
        self.say(f"{left} actions still unfinished after {timeout:.0f}s")

    def settle_personas(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        problems: list[str] = []
        while time.monotonic() < deadline:
            stored = checks.load_stored(str(self.db), self.settings.storage.num_shards, self.conversations)
            problems, _ = checks.answered_problems(stored, checks.by_session(stored.steps))
            if not problems:
                return
            time.sleep(2.0)
        self.say(f"personas not settled after {timeout:.0f}s: {len(problems)} problems")

    def catch_up_subscribers(self, timeout: float) -> dict[str, int]:
        stored = checks.load_stored(str(self.db), self.settings.storage.num_shards, [])
        grouped = checks.by_session(stored.steps)
        targets: dict[str, int] = {}
        for rooms in self.rooms.values():
            for room in rooms:
                sid = room.split("::")[2]
                targets[room] = grouped[sid][-1].seq if grouped.get(sid) else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = 0
            for name, rooms in self.rooms.items():
                progress_file = self.dir / f"{name}.jsonl.progress"
                try:
                    progress = json.loads(progress_file.read_text())
                except (OSError, ValueError):
                    progress = {}
                behind += sum(1 for room in rooms if progress.get(room, 0) < targets[room])
            if not behind:
                break
            time.sleep(0.5)
        return targets

    def stop_daemon(self) -> None:
        assert self.supervisor is not None
        self.say("graceful stop (SIGTERM)")
        began = time.monotonic()
        self.supervisor.send_signal(signal.SIGTERM)
        try:
            self.supervisor.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.liveness.append("supervisor did not stop within 90s of SIGTERM")
        self.say(f"supervisor exited rc={self.supervisor.returncode} after {time.monotonic() - began:.1f}s")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p, c) for p, c in self.children_seen.items()):
            time.sleep(0.1)
        left = [p for p, c in self.children_seen.items() if _alive(p, c)]
        if left:
            self.liveness.append(f"daemon children {left} still running 20s after the supervisor stopped")

    def cleanup(self) -> None:
        """Kill whatever we started that is still alive: each process group, then known child pids."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pid, created in self.children_seen.items():
            if _alive(pid, created):
                try:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # -- the whole run -------------------------------------------------------------------

    def run(self) -> checks.Report:
        p = self.profile
        self.say(f"profile {p.name}, seed {self.seed} (replay: CHAOS_SEED={self.seed}), dir {self.dir}")
        try:
            self.start_llm()
            self.write_config()
            self.settings = load_settings(self.config)
            self.start_supervisor()
            if self.wait_ready(120, "at start") is None:
                raise AssertionError(f"daemon never became ready: {self.log.read_text()[-3000:]}")
            plan = self.plan()
            self.create_conversations()
            self.start_clients(plan)
            self.say(f"{len(self.sessions)} sessions, {p.senders} senders, {p.subscribers} subscribers; faults begin")
            fault_start = time.monotonic()
            self.fault_phase()
            fault_time = time.monotonic() - fault_start
            self.say(f"faults done: {dict(self.faults)} in {fault_time:.0f}s")
            self.wait_ready(90, "after the last fault")
            while self.orphans and time.monotonic() < fault_start + fault_time + ORPHAN_LIMIT + 5:
                self.reap_orphans()
                time.sleep(0.2)
            self.reap_orphans(final=True)
            self.stop_senders.touch()
            for proc in self.procs:
                if "sender.py" in " ".join(map(str, proc.args)):  # type: ignore[arg-type]
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        self.notes.append(f"sender pid {proc.pid} did not stop")
            self.drain(120 if p.name == "long" else 60)
            self.settle_personas(60 if p.name == "long" else 30)
            targets = self.catch_up_subscribers(30)
            self.stop_subscribers.touch()
            for proc in self.procs:
                if "subscriber.py" in " ".join(map(str, proc.args)):  # type: ignore[arg-type]
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        pass
            self.stop_daemon()
        finally:
            self.cleanup()
        stored = checks.load_stored(str(self.db), self.settings.storage.num_shards, self.conversations)
        logs = {name: checks.read_jsonl(self.dir / f"{name}.jsonl") for name in self.rooms}
        report = checks.check_all(stored, self.sent_actions(), logs, self.rooms, targets)
        for item in self.liveness:
            report.add("liveness", item)
        report.stats["seed"] = self.seed
        report.stats["faults"] = dict(self.faults)
        report.stats["faults_total"] = sum(self.faults.values())
        report.stats["fault_phase_s"] = round(fault_time, 1)
        report.stats["wall_s"] = round(time.monotonic() - self.started, 1)
        if self.orphan_waits:
            report.stats["orphans_gone_after_s"] = {
                "max": round(max(self.orphan_waits), 2),
                "mean": round(sum(self.orphan_waits) / len(self.orphan_waits), 2),
            }
        report.stats["notes"] = self.notes
        self.summary(report)
        return report

    def summary(self, report: checks.Report) -> None:
        print("\n==== chaos summary ====", flush=True)
        for key, value in report.stats.items():
            print(f"  {key}: {value}")
        print(f"  violations: {len(report.violations)}")
        for violation in report.violations:
            print(f"    - {violation}")
        (self.dir / "report.json").write_text(
            json.dumps({"stats": report.stats, "violations": report.violations}, indent=1, default=str)
        )
        print(f"  (logs and report.json in {self.dir})", flush=True)
