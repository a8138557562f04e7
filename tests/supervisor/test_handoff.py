"""Children run the configuration the supervisor validated (issue 11, finding 8).

Before: every worker and spare re-read config.toml at each start. A file broken on disk (not
yet reloaded) made the spare respawn ~5x/s and the next worker death halt the daemon; a
changed num_shards plus SIGHUP did the same. These drive the real daemon.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from .daemon import Daemon, running, write_config


def _replaced(daemon: Daemon, index: int, old_pid: int, timeout: float = 30) -> dict[str, Any]:
    """Wait until slot ``index`` runs a ready worker other than ``old_pid``; fails if the daemon exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert daemon.proc.poll() is None, f"the daemon exited {daemon.proc.returncode}: {daemon.tail()}"
        status = daemon.status()
        worker = next(
            (c for c in (status or {}).get("children", []) if c["role"] == "worker" and c["index"] == index), None
        )
        if worker and worker["pid"] != old_pid and worker["ready"] and worker["alive"]:
            return worker
        time.sleep(0.1)
    raise AssertionError(f"worker-{index} not replaced: {daemon.tail()}")


@pytest.mark.parametrize("spare", ["true", "false"])
def test_broken_config_on_disk_does_not_stop_replacements(tmp_path: Path, spare: str) -> None:
    config = write_config(tmp_path, warm_spare=spare)
    with running(config, tmp_path / "daemon.log") as daemon:
        status = daemon.status()
        assert status is not None
        validated = status.get("config_digest")
        config.write_text("[daemon\nworkers = = 2\n")  # not TOML; nobody sent SIGHUP
        for round_ in range(2):
            for index in (0, 1):
                old = daemon.workers()[index]["pid"]
                os.kill(old, signal.SIGKILL)
                new = _replaced(daemon, index, old)
                assert new.get("config_digest") == validated, f"round {round_}: replacement runs other settings"
        time.sleep(2.0)
        assert daemon.proc.poll() is None, daemon.tail()
        log = daemon.tail(200_000)
        if spare == "true":
            assert log.count("started spare") <= 6, "spares keep being respawned"
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon.tail()


def test_spare_that_cannot_boot_backs_off_then_stops(tmp_path: Path) -> None:
    """A spare crash loop is not the daemon's: back off, stop making spares, keep the workers."""
    site = tmp_path / "site"
    site.mkdir()
    # Real interpreter start-up, failing only for a standby (spare) process.
    (site / "sitecustomize.py").write_text("import sys\nif '--standby' in sys.argv:\n    sys.exit(7)\n")
    config = write_config(tmp_path, warm_spare="true")
    with running(config, tmp_path / "daemon.log", env={"PYTHONPATH": str(site)}) as daemon:
        deadline = time.monotonic() + 30
        while "no more spares until the next reload" not in daemon.tail(200_000) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # nothing more may be spawned after it
        log = daemon.tail(200_000)
        assert "no more spares until the next reload" in log, log[-3000:]
        # 0.2, 0.4, 0.8, 1.6 and 3.2 s of backoff, then the 6th exit is a crash loop (before: ~5/s, forever).
        spawns = log.count("started spare")
        assert spawns == 6, f"{spawns} spare spawns: {log[-3000:]}"
        status = daemon.status()
        assert status is not None and status["spare_disabled"]
        old = daemon.workers()[0]["pid"]
        os.kill(old, signal.SIGKILL)
        _replaced(daemon, 0, old)  # replaced cold
        assert daemon.proc.poll() is None


def test_reload_changing_num_shards_is_refused_whole(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with running(config, tmp_path / "daemon.log") as daemon:
        before = daemon.status()
        assert before is not None
        text = config.read_text()
        config.write_text(text.replace("num_shards = 16", "num_shards = 32").replace("workers = 2", "workers = 3"))
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload refused" not in daemon.tail(50_000) and time.monotonic() < deadline:
            assert daemon.proc.poll() is None, daemon.tail()
            time.sleep(0.1)
        assert "[storage] cannot change while running (num_shards 16 -> 32)" in daemon.tail(50_000)
        status = daemon.status()
        assert status is not None
        assert (status["workers"], status["num_shards"]) == (2, 16), "the old configuration is kept whole"
        assert status.get("config_digest") == before.get("config_digest")
        old = daemon.workers()[1]["pid"]
        os.kill(old, signal.SIGKILL)
        new = _replaced(daemon, 1, old)
        assert new["shards"] == [s for s in range(16) if s % 2 == 1]
        time.sleep(1.0)
        assert daemon.proc.poll() is None, daemon.tail()
