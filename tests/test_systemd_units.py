"""The systemd units: packaged templates, repository copies, rendering and systemd-analyze."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentd import install_systemd as installer
from agentd.cli import cli
from agentd.install_systemd import UNIT_NAMES, check_install, install_systemd, render_units

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGED = REPO_ROOT / "agentd" / "systemd_units"


def _fake_agentd(tmp_path: Path) -> Path:
    """An executable for ExecStart=: systemd-analyze verify fails on a missing binary."""
    binary = tmp_path / "bin" / "agentd"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return binary


def _directives(text: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            result.setdefault(key, []).append(value)
    return result


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_repo_copies_equal_packaged_templates(name: str) -> None:
    assert (REPO_ROOT / "systemd" / name).read_bytes() == (PACKAGED / name).read_bytes(), (
        f"systemd/{name} differs from agentd/systemd_units/{name} (the source): copy it over"
    )


def test_required_directives() -> None:
    main = _directives((PACKAGED / "agentd.service").read_text())
    for key, value in {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "KillMode": "mixed",
        "User": "agentd",
        "StateDirectory": "agentd",
        "RuntimeDirectory": "agentd",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
    }.items():
        assert main[key] == [value], key
    assert "AGENTD_STORAGE__URI=/var/lib/agentd/data" in main["Environment"]
    assert "AGENTD_DAEMON__CONTROL_SOCKET=/run/agentd/agentd.sock" in main["Environment"]
    gateway = _directives((PACKAGED / "agentd-gateway.service").read_text())
    assert gateway["ExecStart"] == ["/usr/local/bin/agentd --config /etc/agentd/config.toml gateway"]
    assert "ReadWritePaths" not in gateway and "StateDirectory" not in gateway


def test_units_require_the_gateway_token_and_keep_it_out_of_the_unit() -> None:
    """Issue 11, finding 13: the loopback gateway needs the token under systemd; the token
    comes from an optional environment file (or a drop-in), never from the unit itself."""
    for name in UNIT_NAMES:
        unit = _directives((PACKAGED / name).read_text())
        assert "AGENTD_GATEWAY__REQUIRE_TOKEN=true" in unit["Environment"], name
        assert unit["EnvironmentFile"] == ["-/etc/agentd/agentd.env"], name
        assert not any(v.startswith("AGENTD_GATEWAY__TOKEN=") for v in unit["Environment"]), name


def test_render_substitutes_exec_start_only() -> None:
    units = render_units(agentd_path="/opt/agent d/bin/agentd", config_path="/etc/x%/config.toml")
    main = _directives(units["agentd.service"])
    assert main["ExecStart"] == ['"/opt/agent d/bin/agentd" --config /etc/x%%/config.toml run']
    gateway = _directives(units["agentd-gateway.service"])
    assert gateway["ExecStart"] == ['"/opt/agent d/bin/agentd" --config /etc/x%%/config.toml gateway']
    with pytest.raises(ValueError, match="absolute"):
        render_units(agentd_path="agentd")


def test_install_writes_and_dry_run(tmp_path: Path) -> None:
    binary = _fake_agentd(tmp_path)
    dest = tmp_path / "units"
    planned = install_systemd(dest, agentd_path=str(binary), dry_run=True)
    assert planned == [dest / name for name in UNIT_NAMES]
    assert not dest.exists()
    written = install_systemd(dest, agentd_path=str(binary))
    assert written == planned
    for path in written:
        assert f"ExecStart={binary} --config /etc/agentd/config.toml " in path.read_text()
        assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in dest.iterdir()) == sorted(UNIT_NAMES)  # no temp files left


def test_find_agentd_executable_prefers_argv0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _fake_agentd(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(binary), "install-systemd"])
    assert installer.find_agentd_executable() == str(binary)
    monkeypatch.setattr(sys, "argv", ["python"])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    assert installer.find_agentd_executable() == str(binary)  # the venv's bin/ sibling
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nowhere" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        installer.find_agentd_executable()


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on both rendered units, pointed at an existing binary.

    verify needs no running systemd. It exits non-zero for hard errors (e.g. a missing
    ExecStart binary) but only warns, with exit code 0, on unknown keys or bad values, so any
    line mentioning our units fails the test too. A missing User= is not checked by verify.
    ``--recursive-errors=no`` keeps broken units elsewhere on the host (dependencies such as
    multi-user.target) from failing this test.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        reason = "systemd-analyze not installed (apt-get install -y systemd)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    dest = tmp_path / "units"
    paths = install_systemd(dest, agentd_path=str(_fake_agentd(tmp_path)))
    proc = subprocess.run(
        [analyze, "verify", "--man=no", "--recursive-errors=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    ours = [line for line in output.splitlines() if any(name in line for name in UNIT_NAMES)]
    assert proc.returncode == 0, output
    assert not ours, "\n".join(ours)


# -- checks before writing: what keeps the written units from starting ----------------------

_OPEN_UNIT = "[Service]\nPrivateTmp=no\nProtectHome=no\n"  # nothing hidden: check the rest
_ROOT = pwd.getpwuid(0)


def _nobody() -> pwd.struct_passwd:
    """An unprivileged account standing in for the unit's `agentd` user."""
    return pwd.struct_passwd(("agentd", "x", 64_000, 64_000, "", "/var/lib/agentd", "/usr/sbin/nologin"))


def _check(tmp_path: Path, config: Path, **kwargs: object) -> list[str]:
    defaults: dict[str, object] = {
        "agentd_path": str(_fake_agentd(tmp_path)) if not (tmp_path / "bin").exists() else str(tmp_path / "bin/agentd"),
        "config_path": str(config),
        "unit_text": _OPEN_UNIT,
        "env_file": tmp_path / "agentd.env",
        "getpwnam": lambda name: _nobody(),
        "getgrnam": lambda name: grp.getgrgid(0),
    }
    defaults.update(kwargs)
    return [p.message for p in check_install(**defaults)]  # type: ignore[arg-type]


def test_exec_start_under_tmp_or_home_is_fatal(tmp_path: Path) -> None:
    """PrivateTmp= hides /tmp and ProtectHome= hides /root: the service would fail with 203/EXEC."""
    binary = _fake_agentd(tmp_path)  # tmp_path is under /tmp
    problems = check_install(agentd_path=str(binary), config_path="/etc/agentd/config.toml")
    fatal = [p.message for p in problems if p.fatal]
    assert len(fatal) == 1 and "PrivateTmp=yes" in fatal[0] and str(binary) in fatal[0], fatal
    # A script whose #! interpreter (a pyenv Python) lives under /root: hidden by ProtectHome=.
    script = tmp_path / "bin" / "agentd-venv"
    script.write_text("#!/root/.pyenv/versions/3.11/bin/python3\nimport agentd\n")
    problems = check_install(
        agentd_path=str(script), config_path="/etc/agentd/config.toml", unit_text="ProtectHome=yes\n"
    )
    assert next(p.message for p in problems if p.fatal).startswith(
        "its interpreter /root/.pyenv/versions/3.11/bin/python3 is under a directory the unit hides (ProtectHome=yes)"
    )
    # The same script is fine for a unit that hides nothing.
    assert not [p for p in check_install(agentd_path=str(script), config_path="/x", unit_text=_OPEN_UNIT) if p.fatal]


def test_missing_user_group_and_config_say_what_to_do(tmp_path: Path) -> None:
    def no_such(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    problems = _check(tmp_path, tmp_path / "etc" / "config.toml", getpwnam=no_such)
    assert any(m.startswith("no user 'agentd'") and "useradd --system --user-group" in m for m in problems), problems
    assert any("no config file" in m and f"touch {tmp_path / 'etc' / 'config.toml'}" in m for m in problems), problems

    def no_group(name: str) -> grp.struct_group:
        raise KeyError(name)

    config = tmp_path / "config.toml"
    config.write_text('[gateway]\ntoken = "t"\n')
    config.chmod(0o644)
    assert _check(tmp_path, config, getgrnam=no_group) == ["no group 'agentd' (Group=agentd): groupadd --system agentd"]
    assert _check(tmp_path, config) == []  # everything in place: nothing to say


def test_unreadable_invalid_config_and_missing_token(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[gateway]\ntoken = "t"\n')
    config.chmod(0o600)  # owned by the test's user, not by "agentd"
    if os.getuid() == _nobody().pw_uid:
        pytest.skip("the test user is the stand-in account")
    assert _check(tmp_path, config) == [f"{config} is not readable by user 'agentd': chmod 0644 {config}"]
    assert _check(tmp_path, config, getpwnam=lambda name: _ROOT) == []  # root reads anything
    config.chmod(0o644)
    config.write_text("[daemon]\nworkers = 0\n")
    problems = _check(tmp_path, config)
    assert len(problems) == 1 and problems[0].startswith("the service would exit 2 on start: invalid configuration")
    assert "[daemon] workers" in problems[0]
    config.write_text("")
    problems = _check(tmp_path, config)
    assert len(problems) == 1 and problems[0].startswith("no gateway token: the unit requires one"), problems
    assert f"> {tmp_path / 'agentd.env'}" in problems[0]
    (tmp_path / "agentd.env").write_text("AGENTD_GATEWAY__TOKEN=abc\n")
    assert _check(tmp_path, config) == []
    config.write_text("[gateway]\nenabled = false\n")
    (tmp_path / "agentd.env").unlink()
    assert _check(tmp_path, config) == []  # no gateway, no token needed


def test_cli_refuses_hidden_exec_start_and_warns_with_exit_3(tmp_path: Path) -> None:
    binary = _fake_agentd(tmp_path)
    dest = tmp_path / "units"
    args = ["--config", str(tmp_path / "missing.toml"), "install-systemd", "--dest", str(dest), "--agentd", str(binary)]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1, refused.output
    assert "error: the agentd executable" in refused.stderr and "PrivateTmp=yes" in refused.stderr
    assert "units not written" in refused.stderr and not dest.exists()
    forced = CliRunner().invoke(cli, [*args, "--force"])
    assert forced.exit_code == 3, forced.output  # written, but the config file is missing
    assert sorted(p.name for p in dest.iterdir()) == sorted(UNIT_NAMES)
    assert "is hidden from the service by PrivateTmp=yes" in forced.stderr  # --config under /tmp too
    assert "cannot start until the" in forced.stderr
    assert "next: systemctl" not in forced.stdout
    dry = CliRunner().invoke(cli, [*args, "--force", "--dry-run"])
    assert dry.exit_code == 3 and "# agentd.service" in dry.stdout
    help_text = CliRunner().invoke(cli, ["install-systemd", "--help"]).output
    for words in ("PrivateTmp=", "ProtectHome=", "agentd user", "gateway token", "Exit codes", "--force"):
        assert words in help_text, words
