from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def db_uri(tmp_path: Path) -> str:
    return str(tmp_path / "db")


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's ./config.toml, /etc/agentd or AGENTD_* variables, and none
    touches their default database (~/.local/share/agentd)."""
    import os

    for name in list(os.environ):
        if name.startswith("AGENTD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.chdir(tmp_path)
