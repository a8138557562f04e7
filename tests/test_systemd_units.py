"""The systemd units: packaged templates, repository copies, rendering and systemd-analyze."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentd import install_systemd as installer
from agentd.install_systemd import UNIT_NAMES, install_systemd, render_units

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
