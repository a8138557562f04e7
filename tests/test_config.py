"""Configuration: defaults, lookup order, environment overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agentd.cli import cli
from agentd.config import ConfigError, load_settings

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.source_file is None
    assert settings.daemon.workers == 2
    assert settings.storage.num_shards == 64
    assert settings.storage.local_path == tmp_path / "agentd-data"
    assert settings.control_socket_path == tmp_path / "agentd-data" / "agentd.sock"
    assert settings.gateway.host == "127.0.0.1"
    assert settings.llm.provider == "offline"


def test_shipped_config_equals_the_defaults() -> None:
    assert load_settings(REPO_CONFIG).effective() == load_settings().effective()


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text("[daemon]\nworkers = 3\n")
    env_file = tmp_path / "env.toml"
    env_file.write_text("[daemon]\nworkers = 5\n")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[daemon]\nworkers = 7\n")
    assert load_settings().daemon.workers == 3
    monkeypatch.setenv("AGENTD_CONFIG", str(env_file))
    assert load_settings().daemon.workers == 5
    assert load_settings(explicit).daemon.workers == 7


def test_environment_and_db_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[daemon]\nworkers = 3\n[storage]\nuri = "/srv/a"\n')
    monkeypatch.setenv("AGENTD_DAEMON__WORKERS", "4")
    settings = load_settings(path, db=str(tmp_path / "b"))
    assert settings.daemon.workers == 4
    assert settings.storage.uri == str(tmp_path / "b")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_wrong_type_names_file_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[daemon]\nworkers = "two"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message and "[daemon] workers" in message and "'two'" in message


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[storage]\nnum_shard = 8\n")
    with pytest.raises(ConfigError, match=r"\[storage\] num_shard: unknown key"):
        load_settings(path)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTD_DAEMON__WORKERS", "0")
    with pytest.raises(ConfigError, match="environment variable AGENTD_DAEMON__WORKERS"):
        load_settings()


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[daemon\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_config_check_command(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[daemon]\nworkers = 3\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "--db", str(tmp_path / "d"), "config", "check"])
    assert result.exit_code == 0, result.output
    assert "workers = 3" in result.output
    assert f'uri = "{tmp_path / "d"}"' in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nworkers = -1\n")
    result = CliRunner().invoke(cli, ["--config", str(bad), "config", "check"])
    assert result.exit_code == 2
    assert "[daemon] workers" in result.output
