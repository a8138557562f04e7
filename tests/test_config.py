"""Configuration: defaults, lookup order, environment overrides and clear errors."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agentd.cli import PRIVATE_UMASK, UMASK_ENV, cli, restrict_umask
from agentd.config import ConfigError, load_settings

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.source_file is None
    assert settings.daemon.workers == 2
    assert settings.storage.num_shards == 64
    # conftest points $XDG_DATA_HOME into tmp_path: the user's data directory, not the cwd.
    assert settings.storage.local_path == tmp_path / "xdg-data" / "agentd"
    assert settings.control_socket_path == tmp_path / "xdg-data" / "agentd" / "agentd.sock"
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


def _rejected(path: Path, text: str) -> str:
    """The message ``load_settings`` refuses ``text`` with."""
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


def test_wrong_type_names_file_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    message = _rejected(path, '[daemon]\nworkers = "two"\n')
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


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """`agentd` tightens the process umask at start; the in-process CLI calls must not leak it."""
    old = os.umask(0o022)
    os.umask(old)
    try:
        yield
    finally:
        os.umask(old)


def test_control_socket_is_never_in_a_shared_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Object storage without $XDG_RUNTIME_DIR and no [daemon] control_socket is a config error
    (it used to be /tmp/agentd.sock, which any local user can bind first)."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    remote = load_settings(db="s3://bucket/agentd")
    with pytest.raises(ConfigError, match=r"\[daemon\] control_socket: storage 's3://bucket/agentd' is not a local"):
        _ = remote.control_socket_path
    configured = load_settings(db="s3://bucket/agentd", overrides={"daemon": {"control_socket": str(tmp_path / "s")}})
    assert configured.control_socket_path == tmp_path / "s"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert load_settings(db="s3://bucket/agentd").control_socket_path == tmp_path / "run" / "agentd.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")

    # Every command that needs the socket says so and exits 2; none falls back to /tmp.
    for args in (["config", "check"], ["run"]):
        result = CliRunner().invoke(cli, ["--db", "s3://bucket/agentd", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "no private place for the control socket" in result.output
        assert "/tmp" not in result.output
    from agentctl.cli import cli as agentctl_cli

    status = CliRunner().invoke(agentctl_cli, ["--db", "s3://bucket/agentd", "daemon", "status"])
    assert status.exit_code == 2 and "no private place for the control socket" in status.stderr


def test_config_check_masks_the_gateway_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[gateway]\ntoken = "s3cret-token"\n[llm.options]\napi_key = "sk-123"\nmodel_hint = "x"\n')
    monkeypatch.setenv("AGENTD_GATEWAY__TOKEN", "env-s3cret")
    for args in (["config", "check"], ["config", "check", "--json"]):
        result = CliRunner().invoke(cli, ["--config", str(path), *args])
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.output and "sk-123" not in result.output
    data = json.loads(CliRunner().invoke(cli, ["--config", str(path), "config", "check", "--json"]).output)
    assert data["settings"]["gateway"]["token"] == "***"
    assert data["settings"]["llm"]["options"] == {"api_key": "***", "model_hint": "x"}
    assert 'token = "***"' in CliRunner().invoke(cli, ["--config", str(path), "config", "check"]).output
    monkeypatch.delenv("AGENTD_GATEWAY__TOKEN")
    unset = CliRunner().invoke(cli, ["--db", str(tmp_path / "d"), "config", "check", "--json"])
    assert json.loads(unset.output)["settings"]["gateway"]["token"] == ""  # "not set" stays visible


def test_umask_is_owner_only_unless_already_private_or_overridden() -> None:
    os.umask(0o022)  # a login shell's
    assert restrict_umask({}) == PRIVATE_UMASK == 0o077
    assert os.umask(0o027) == 0o077
    assert restrict_umask({}) == 0o027  # the unit's UMask=0027: chosen on purpose, kept
    assert restrict_umask({UMASK_ENV: "022"}) == 0o022  # the escape hatch, no config file needed
    with pytest.raises(click.UsageError, match="not an octal umask"):
        restrict_umask({UMASK_ENV: "rw-r--r--"})
    assert os.umask(0o022) == 0o022  # a bad value leaves the umask as it was


def test_agentd_run_creates_an_owner_only_database(tmp_path: Path) -> None:
    """Started from a shell with umask 022, `agentd run` creates the database 0700/0600."""
    from supervisor.daemon import running, write_config

    config = write_config(tmp_path, workers=1, warm_spare="false")
    old = os.umask(0o022)
    try:
        with running(config, tmp_path / "daemon.log") as daemon:
            daemon.wait_ready(60)
            db = Path(daemon.settings.storage.uri)
            paths = [db, *db.rglob("*")]
    finally:
        os.umask(old)
    files = [p for p in paths if p.is_file()]
    assert len(files) > 10  # the tables' manifests and data files
    loose = {str(p.relative_to(db)): oct(stat.S_IMODE(p.lstat().st_mode)) for p in paths if p.lstat().st_mode & 0o077}
    assert loose == {}, f"readable by group or others: {loose}"
    assert stat.S_IMODE(db.stat().st_mode) == 0o700


def _check_toml(args: list[str]) -> str:
    result = CliRunner().invoke(cli, [*args, "config", "check"])
    assert result.exit_code == 0, result.output
    return result.output


def _body(printed: str) -> str:
    """The printed document without its first line (which names the config file it came from)."""
    return printed.split("\n", 1)[1]


def test_config_check_output_loads_back_unchanged(tmp_path: Path) -> None:
    """`config check` printed `options = "{}"` under [llm], which the loader itself rejects; its
    output must be a config file that loads to the same settings (defaults, and every section set)."""
    import tomllib

    full = tmp_path / "full.toml"
    full.write_text(
        "[daemon]\nworkers = 3\nwarm_spare = false\nstop_timeout = 12.5\n"
        f'[storage]\nuri = "{tmp_path / "db"}"\nnum_shards = 16\n'
        "[writer]\nflush_interval = 0.5\n[queue]\nlease = 20.0\n[maintenance]\ninterval = 30.0\n"
        "[retention]\nsteps_per_session = 50\nstep_max_age = 3600.0\n"
        '[runtime]\ndefault_subject = "quote \\" backslash \\\\ tab \\t emoji \U0001f600 del \\u007f"\n'
        '[gateway]\nport = 9000\nallowed_origins = ["https://a.example:8443", "http://b"]\n'
        "[metrics]\nport = 9500\n"
        '[llm]\nprovider = "openai-generic"\nmodel = "m"\nlog_level = "info"\n'
        '[llm.options]\ntemperature = 0.2\nstop = ["\\n", "END"]\n"odd name" = 1\n'
        '[llm.options.headers]\nX-Team = "agents"\n'
        '[logging]\nlevel = "debug"\njson = true\n'
    )
    for args in ([], ["--config", str(full)]):
        printed = _check_toml(args)
        tomllib.loads(printed)  # valid TOML at all
        again = tmp_path / "again.toml"
        again.write_text(printed)
        assert _body(_check_toml(["--config", str(again)])) == _body(printed)
        assert load_settings(again).effective() == load_settings(*([full] if args else [])).effective()
    full_printed = _check_toml(["--config", str(full)])
    assert "[llm.options]" in full_printed and "[llm.options.headers]" in full_printed
    assert 'options = "' not in full_printed and "allowed_origins = [" in full_printed


def test_versions_must_outlive_a_hung_worker(tmp_path: Path) -> None:
    path = tmp_path / "short.toml"
    message = _rejected(path, "[maintenance]\nmin_version_age = 30\n[daemon]\nheartbeat_timeout = 45\n")
    assert "min_version_age (30) must be greater than [daemon] heartbeat_timeout (45)" in message
    message = _rejected(path, "[maintenance]\nmin_version_age = 900\n")
    assert "min_version_age (900) must not exceed cleanup_older_than (600)" in message
    path.write_text("[maintenance]\nmin_version_age = 30\nkeep_versions = 200\n")
    settings = load_settings(path)
    assert (settings.maintenance.min_version_age, settings.maintenance.keep_versions) == (30, 200)
