"""A child never outlives its supervisor for long, even when its graceful stop hangs (agentd.orphans)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from helpers import REPO, silent_websocket

from agentd.orphans import ORPHAN_EXIT_DEADLINE, PARENT_PID_ENV

from .daemon import Daemon, write_config

# The deadline, plus noticing the parent is gone (a quarter second), plus a loaded machine.
BOUND = ORPHAN_EXIT_DEADLINE + 8.0


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for whoever adopted it."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pids: list[int], seconds: float) -> float | None:
    """Seconds until every pid is gone, or None if some still run after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if not any(_alive(pid) for pid in pids):
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_an_orphan_that_ignores_sigterm_exits_after_the_deadline(tmp_path: Path) -> None:
    """The bound alone: a child whose graceful stop never happens (SIGTERM ignored) still exits
    once its parent has been gone for the deadline, and not while its parent lives."""
    ready, pid_file = tmp_path / "ready", tmp_path / "child.pid"
    child = textwrap.dedent(
        f"""
        import signal, time
        from agentd.orphans import exit_when_orphaned, orphaned, set_parent_death_signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a graceful stop that never comes
        set_parent_death_signal()
        exit_when_orphaned(1.0)
        assert not orphaned()
        open({str(ready)!r}, "w").close()
        time.sleep(600)
        """
    )
    parent = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {child!r}])
        with open({str(pid_file)!r} + ".tmp", "w") as out:
            out.write(str(child.pid))
        os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
        time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    middle = subprocess.Popen([sys.executable, "-c", parent], env=env)
    pids = [middle.pid]
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        pids.append(int(pid_file.read_text()))
        time.sleep(2.0)  # twice the deadline: a live parent keeps it running
        assert _alive(pids[1]), "the child exited although its parent is alive"
        middle.kill()
        middle.wait(timeout=10)
        took = _gone_within([pids[1]], 1.0 + 8.0)
        assert took is not None, "the orphan still runs long after its deadline"
        assert took >= 0.9, f"the orphan exited after {took:.2f}s, before its deadline"
    finally:
        _kill(pids)
        middle.wait(timeout=10)


def test_a_child_whose_supervisor_died_before_it_looked_still_exits(tmp_path: Path) -> None:
    """The supervisor names itself in the child's environment: a child it started that arms the
    deadline only after the supervisor died (still importing; already adopted by another process)
    knows it is an orphan, instead of taking its adopter for its supervisor."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)  # a supervisor that is no more
    ready = tmp_path / "ready"
    child = textwrap.dedent(
        f"""
        import os, time
        from agentd.orphans import PARENT_PID_ENV, exit_when_orphaned, orphaned
        exit_when_orphaned(1.0)
        assert orphaned()  # what the worker's stop and the gateway's start ask
        assert PARENT_PID_ENV not in os.environ  # not handed on to anything it starts
        open({str(ready)!r}, "w").close()
        time.sleep(600)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        PARENT_PID_ENV: str(gone.pid),
    }
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", child], env=env)  # its real parent (us) lives on
    try:
        took = _gone_within([proc.pid], 60.0)
        assert took is not None, "a child of a dead supervisor never exited"
        assert ready.exists(), "the child exited before it armed the deadline"
        assert time.monotonic() - started >= 1.0, "the child exited before its deadline"
        proc.wait(timeout=10)
        assert proc.returncode == 1
    finally:
        _kill([proc.pid])
        proc.wait(timeout=10)


def test_workers_whose_stop_hangs_exit_within_the_deadline_after_a_supervisor_sigkill(tmp_path: Path) -> None:
    """A supervisor killed with SIGKILL; its workers' graceful stop hangs (the fault point
    ``stopping:worker`` stalls it): they still exit within the deadline, so a new supervisor,
    which waits for them, is not held up."""
    config = write_config(tmp_path, warm_spare="false")
    daemon = Daemon(config, tmp_path / "daemon.log", env={"AGENTD_FAULTS": "stopping:worker=stall"})
    workers: list[int] = []
    try:
        daemon.wait_ready()
        workers = [w["pid"] for w in daemon.workers().values()]
        assert len(workers) == 2
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(timeout=10)
        took = _gone_within(workers, BOUND)
        log = daemon.tail(20000)
        assert "fault point stopping:worker armed: stalling" in log, log[-3000:]
        assert took is not None, f"orphaned workers {workers} still run {BOUND:.0f}s after their supervisor died"
        assert "the supervisor (pid" in log and "is gone" in log, log[-3000:]
    finally:
        _kill(workers)
        daemon.kill_all()


def test_an_orphaned_gateway_takes_repeated_sigterms_as_one_graceful_stop(tmp_path: Path) -> None:
    """Linux sends the parent-death signal once per thread of the dying supervisor, milliseconds
    apart (the long chaos run logged it 13 times). The gateway took the second SIGTERM as "force",
    cancelled its close midway and hung. Now it closes gracefully (its close handshake with a
    client that never answers takes 5 s; the deadline would end it at 10 s)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_config(tmp_path, warm_spare="false", workers=1)
    config.write_text(
        config.read_text().replace("[gateway]\nenabled = false", f"[gateway]\nenabled = true\nport = {port}")
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    gateway: list[int] = []
    silent: socket.socket | None = None
    try:
        status = daemon.wait_ready()
        deadline = time.monotonic() + 60
        while not (gateway := [c["pid"] for c in status["children"] if c["role"] == "gateway" and c["ready"]]):
            assert time.monotonic() < deadline, f"no gateway: {daemon.tail()}"
            time.sleep(0.2)
            status = daemon.status() or status
        # A client that never answers the close frame: the gateway's close waits out its
        # handshake timeout (5 s), so the further SIGTERMs arrive while it is closing.
        while silent is None:  # the gateway child counts as started before it listens
            try:
                silent = silent_websocket(port)
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, f"the gateway never listened: {daemon.tail()}"
                time.sleep(0.2)
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(timeout=10)
        # What the kernel does for each further thread of the supervisor, within milliseconds
        # (the same request by time), then once more after a second (the supervisor is gone).
        for pause in (0.2, 1.5):
            time.sleep(pause)
            os.kill(gateway[0], signal.SIGTERM)
        took = _gone_within(gateway, BOUND)
        log = daemon.tail(20000)
        assert took is not None, f"the orphaned gateway still runs {BOUND:.0f}s after its supervisor died"
        assert "forcing the stop" not in log, log[-3000:]
        assert log.count("again: already stopping") >= 2, log[-3000:]
        assert "gateway closed" in log, log[-3000:]
    finally:
        _kill(gateway)
        daemon.kill_all()
        if silent is not None:
            silent.close()
