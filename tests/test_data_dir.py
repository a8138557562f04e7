"""Where the database lives by default: the user's data directory, whatever the working directory.

The old default was ``./agentd-data``: agentctl run from another directory found nothing, and
the advice to "start the daemon once" created a second, empty database there (issue 13).
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agentd import config as config_module
from agentd.config import ConfigError, default_storage_uri, load_settings


def _make_db(path: Path) -> None:
    """What makes a directory "a database" for the legacy check: its meta table's directory."""
    (path / "meta.lance").mkdir(parents=True)


def test_default_is_the_xdg_data_directory_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_home = tmp_path / "xdg-data"
    seen = set()
    for cwd in (tmp_path / "a", tmp_path / "b" / "c"):
        cwd.mkdir(parents=True)
        monkeypatch.chdir(cwd)
        settings = load_settings()
        seen.add(settings.storage.uri)
        assert settings.effective()["storage"]["uri"] == str(data_home / "agentd")
    assert seen == {str(data_home / "agentd")}


def test_home_fallback_and_relative_xdg_ignored(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert default_storage_uri({"HOME": str(home)}, tmp_path) == str(home / ".local/share/agentd")
    # The XDG spec: a relative $XDG_DATA_HOME is invalid and must be ignored.
    env = {"HOME": str(home), "XDG_DATA_HOME": "relative/dir"}
    assert default_storage_uri(env, tmp_path) == str(home / ".local/share/agentd")


def test_no_home_at_all_is_a_clear_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(RuntimeError("no home"))))
    with pytest.raises(ConfigError, match=r"set \[storage\] uri, AGENTD_STORAGE__URI or --db"):
        default_storage_uri({}, tmp_path)


def test_precedence_file_environment_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\nuri = "{tmp_path / "from-file"}"\n')
    assert load_settings(config).storage.uri == str(tmp_path / "from-file")
    monkeypatch.setenv("AGENTD_STORAGE__URI", str(tmp_path / "from-env"))
    assert load_settings(config).storage.uri == str(tmp_path / "from-env")
    assert load_settings(config, db=str(tmp_path / "from-db")).storage.uri == str(tmp_path / "from-db")
    monkeypatch.setenv("AGENTD_STORAGE__URI", "")  # empty = the default, as in config.toml
    assert load_settings().storage.uri == str(tmp_path / "xdg-data" / "agentd")


def test_existing_cwd_database_is_kept_with_one_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An existing user's ./agentd-data keeps working (nothing "disappears"), with a notice that
    says how to move it; once the new directory holds a database, the new default wins."""
    monkeypatch.setattr(config_module, "_legacy_noticed", set())
    legacy = tmp_path / "agentd-data"
    _make_db(legacy)
    with caplog.at_level(logging.WARNING, logger="agentd.config"):
        assert load_settings().storage.uri == str(legacy)
        assert load_settings().storage.uri == str(legacy)
    notices = [r.getMessage() for r in caplog.records if "old default" in r.getMessage()]
    assert len(notices) == 1, notices
    new = tmp_path / "xdg-data" / "agentd"
    assert f"mv {legacy} {new}" in notices[0] and f"--db {legacy}" in notices[0]
    # An empty ./agentd-data (no tables) is not a database: the new default applies.
    monkeypatch.chdir(tmp_path / "agentd-data")
    (tmp_path / "agentd-data" / "agentd-data").mkdir()
    assert load_settings().storage.uri == str(new)
    monkeypatch.chdir(tmp_path)
    _make_db(new)
    assert load_settings().storage.uri == str(new)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_agentctl_from_another_directory_finds_the_same_database(tmp_path: Path) -> None:
    """Real processes: a database created from one directory is found from another, the data
    directory is owner-only, and no ./agentd-data appears anywhere."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    old = os.umask(0o022)  # a login shell's; agentd must still create it owner-only
    try:
        code = (
            "import asyncio; from agentd.cli import restrict_umask; restrict_umask();"
            "from agentd.config import load_settings; from agentd.store import Store;"
            "s = load_settings(); asyncio.run(Store.open(s.storage.uri, s.storage.num_shards)); print(s.storage.uri)"
        )
        created = _run([sys.executable, "-c", code], first)
    finally:
        os.umask(old)
    assert created.returncode == 0, created.stderr
    db = Path(created.stdout.strip())
    assert db == tmp_path / "xdg-data" / "agentd"
    assert stat.S_IMODE(db.stat().st_mode) == 0o700
    listed = _run([sys.executable, "-m", "agentctl", "--json", "list"], second)
    assert listed.returncode == 0, listed.stderr
    assert not (first / "agentd-data").exists() and not (second / "agentd-data").exists()
