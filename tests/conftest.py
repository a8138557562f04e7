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
    """No test reads the developer's ./config.toml, /etc/agentd or AGENTD_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith("AGENTD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
