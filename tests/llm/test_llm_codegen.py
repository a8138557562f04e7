"""The committed generated client must match ``baml_src`` and the installed baml-py.

BAML's recommended workflow is to commit ``baml_client`` and regenerate it with the CLI of the
installed baml-py; this test fails when someone edits ``baml_src`` without regenerating, edits
the generated code by hand, or upgrades baml-py without bumping the generator ``version``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import baml_py

from agentd.llm import baml_client
from agentd.llm.baml_client.inlinedbaml import get_baml_files

REPO = Path(__file__).resolve().parents[2]
BAML_SRC = REPO / "baml_src"
CLIENT = REPO / "agentd" / "llm" / "baml_client"
# `baml-cli` is a console script of baml-py; calling its entry point works without PATH.
CLI = "import sys; from baml_py import invoke_runtime_cli; sys.argv[0] = 'baml-cli'; sys.exit(invoke_runtime_cli())"


def test_inlined_sources_match_baml_src() -> None:
    on_disk = {p.relative_to(BAML_SRC).as_posix(): p.read_text() for p in BAML_SRC.rglob("*.baml")}
    assert get_baml_files() == on_disk


def test_generator_version_is_the_installed_baml_py() -> None:
    installed = baml_py.baml_py.get_version()
    match = re.search(r'^\s*version\s+"([^"]+)"', (BAML_SRC / "generators.baml").read_text(), re.M)
    assert match and match.group(1) == installed
    assert baml_client.__version__ == installed


def test_regenerating_reproduces_the_committed_client(tmp_path: Path) -> None:
    shutil.copytree(BAML_SRC, tmp_path / "baml_src")
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "generate", "--from", str(tmp_path / "baml_src")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fresh = tmp_path / "agentd" / "llm" / "baml_client"
    want = {p.relative_to(fresh).as_posix(): p.read_text() for p in fresh.rglob("*.py")}
    have = {p.relative_to(CLIENT).as_posix(): p.read_text() for p in CLIENT.rglob("*.py")}
    assert sorted(have) == sorted(want), "file set differs: run `baml-cli generate --from baml_src`"
    stale = [name for name in want if have[name] != want[name]]
    assert not stale, f"stale generated files {stale}: run `baml-cli generate --from baml_src`"
