"""What a whole ``agentctl pause`` process imports when the daemon answers: nothing heavy.

No LanceDB, pyarrow, BAML, asyncio, pydantic or agentd runtime/store/queue/config modules: the
daemon path is click and ``agentd.protocol_client`` (the messages checked against the schema
generated from the protocol's models). A real process, measured at exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ctlkit import Ctl, Daemon

pytestmark = pytest.mark.timeout(120)

HEAVY_ROOTS = (
    "lancedb",
    "pyarrow",
    "baml_py",
    "baml_client",
    "asyncio",
    "pydantic",
    "pydantic_core",
    "websockets",
    "numpy",
)
HEAVY_AGENTD = (
    "agentd.runtime",
    "agentd.store",
    "agentd.queue",
    "agentd.config",
    "agentd.control",
    "agentd.agents",
    "agentd.protocol",  # the pydantic models; agentd.protocol_client is the client's codec
)
# Run agentctl's entry point and write the names of the imported modules at exit.
PROBE = """
import atexit, json, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["agentctl", *sys.argv[2:]]
from agentctl.cli import main
main()
"""


def imported_by(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args], capture_output=True, text=True, timeout=60, check=False
    )
    return proc, json.loads(out.read_text())


def heavy(modules: list[str]) -> list[str]:
    return [
        m
        for m in modules
        if m.split(".")[0] in HEAVY_ROOTS or any(m == p or m.startswith(p + ".") for p in HEAVY_AGENTD)
    ]


def test_pause_through_the_daemon_imports_nothing_heavy(ctl: Ctl, daemon: Daemon, tmp_path: Path) -> None:
    sid = ctl.create_joke("--interval", "30")
    for args in (["pause", sid], ["--json", "status", sid], ["resume", sid, "--json"], ["list"]):
        proc, modules = imported_by(tmp_path, "--config", str(daemon.config), *args)
        assert proc.returncode == 0, proc.stderr
        assert heavy(modules) == [], (args, heavy(modules))
        assert "agentd.protocol_client" in modules and "agentctl.transport" in modules
    assert (
        json.loads(imported_by(tmp_path, "--config", str(daemon.config), "--json", "status", sid)[0].stdout)["status"]
        == "running"
    )


def test_without_a_daemon_it_falls_back_to_lancedb(tmp_path: Path) -> None:
    """The control: the same probe sees LanceDB when no daemon answers (so the test above means something)."""
    from ctlkit import write_config

    config = write_config(tmp_path, db=tmp_path / "nowhere")
    proc, modules = imported_by(tmp_path, "--config", str(config), "list")
    assert proc.returncode == 3, proc.stderr
    assert "lancedb" in modules
