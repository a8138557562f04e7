"""Render and install agentd's systemd unit files (``agentd install-systemd``).

Why render instead of copying: the unit's ``ExecStart=`` must name the very ``agentd``
executable of this installation (often a venv such as ``/opt/agentd/bin/agentd``), and a
hand-copied unit pointing at ``/usr/local/bin/agentd`` is the classic "status=203/EXEC" failure.
The templates shipped in the package (``agentd/systemd_units/``) are the single source; the
``systemd/`` directory at the repository root holds identical copies for people who install by
hand, and a test keeps the two equal.

Nothing here talks to systemd: the caller (or the docs) runs ``systemctl daemon-reload``.

``check_install`` says beforehand what would keep the written units from starting: an
executable, its interpreter or the config under a directory the unit hides (``PrivateTmp=``
hides /tmp and /var/tmp, ``ProtectHome=`` hides /home, /root and /run/user: a venv in a home
directory, or a pyenv interpreter under /root, fails with ``status=203/EXEC``), a missing or
unreadable config file, a missing ``agentd`` user or group, or no gateway token. Systemd itself
only reports these when the service is started, in the journal.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "DEFAULT_AGENTD_PATH",
    "DEFAULT_CONFIG_PATH",
    "UNIT_NAMES",
    "InstallProblem",
    "check_install",
    "find_agentd_executable",
    "install_systemd",
    "render_units",
]

log = logging.getLogger(__name__)

UNIT_NAMES = ("agentd.service", "agentd-gateway.service")
# The placeholders as they appear in the templates' ExecStart= lines.
DEFAULT_AGENTD_PATH = "/usr/local/bin/agentd"
DEFAULT_CONFIG_PATH = "/etc/agentd/config.toml"
_EXEC_PREFIX = f"ExecStart={DEFAULT_AGENTD_PATH} --config {DEFAULT_CONFIG_PATH} "


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_agentd_executable() -> str:
    """The absolute path of the running installation's ``agentd`` script.

    Tried in order: ``sys.argv[0]`` when it is the ``agentd`` console script, the ``agentd``
    next to ``sys.executable`` (a venv's ``bin/``, found even when the venv is not activated),
    then ``$PATH``. Symlinks are not resolved: a venv's ``bin/python`` is a symlink whose
    target is outside the venv. Raises FileNotFoundError when none exists.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    candidates = []
    if os.path.basename(argv0) == "agentd":
        candidates.append(os.path.abspath(argv0))
    candidates.append(os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "agentd"))
    on_path = shutil.which("agentd")
    if on_path:
        candidates.append(os.path.abspath(on_path))
    for candidate in candidates:
        if _is_executable(candidate):
            return candidate
    raise FileNotFoundError("cannot find the agentd executable (tried " + ", ".join(candidates) + "); pass its path")


def _exec_arg(value: str) -> str:
    """Quote one ExecStart= argument: systemd expands ``%`` specifiers and ``$`` variables."""
    escaped = value.replace("%", "%%").replace("$", "$$")
    if any(ch in escaped for ch in " \t\"'\\;"):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def _template(name: str) -> str:
    return resources.files("agentd").joinpath("systemd_units", name).read_text(encoding="utf-8")


def render_units(*, agentd_path: str | None = None, config_path: str = DEFAULT_CONFIG_PATH) -> dict[str, str]:
    """Unit file name -> text, with ExecStart= naming ``agentd_path`` and ``config_path``.

    ``agentd_path`` defaults to find_agentd_executable(). Both paths must be absolute:
    systemd resolves nothing relative to the caller's directory. Only ``ExecStart=`` lines
    change; comments keep the placeholder path so they still read as documentation.
    """
    binary = agentd_path if agentd_path is not None else find_agentd_executable()
    for label, value in (("agentd path", binary), ("config path", config_path)):
        if not os.path.isabs(value):
            raise ValueError(f"{label} must be absolute, got {value!r}")
    prefix = f"ExecStart={_exec_arg(binary)} --config {_exec_arg(config_path)} "
    rendered = {}
    for name in UNIT_NAMES:
        lines = _template(name).splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if line.startswith(_EXEC_PREFIX)]
        if len(hits) != 1:
            # The template was edited without updating this module: fail loudly, not silently.
            raise RuntimeError(f"{name}: expected one line starting with {_EXEC_PREFIX!r}")
        lines[hits[0]] = prefix + lines[hits[0]][len(_EXEC_PREFIX) :]
        rendered[name] = "".join(lines)
    return rendered


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so systemd never reads a half-written unit."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install_systemd(
    dest_dir: Path = Path("/etc/systemd/system"),
    *,
    agentd_path: str | None = None,
    config_path: str = DEFAULT_CONFIG_PATH,
    dry_run: bool = False,
) -> list[Path]:
    """Write agentd.service and agentd-gateway.service into ``dest_dir``; return their paths.

    Existing files are replaced (idempotent; re-run after moving the venv). With ``dry_run``
    nothing is written and the paths that would be are returned; call render_units() for the
    text. Writing to /etc/systemd/system needs root: PermissionError propagates to the CLI.
    Does not run ``systemctl daemon-reload``.
    """
    units = render_units(agentd_path=agentd_path, config_path=config_path)
    paths = [dest_dir / name for name in units]
    if dry_run:
        log.info("dry run: would write %s", ", ".join(map(str, paths)))
        return paths
    dest_dir.mkdir(parents=True, exist_ok=True)
    for path, text in zip(paths, units.values(), strict=True):
        _write_atomically(path, text)
        log.info("wrote %s", path)
    return paths


UNIT_USER = "agentd"
UNIT_GROUP = "agentd"
ENV_FILE = Path("/etc/agentd/agentd.env")
# Directories a unit setting hides from the service, by the setting that hides them.
_HIDDEN_BY = {
    "PrivateTmp": ("/tmp", "/var/tmp"),
    "ProtectHome": ("/home", "/root", "/run/user"),
}


@dataclass(frozen=True, slots=True)
class InstallProblem:
    """Something that keeps the units from starting. ``fatal``: writing them would be pointless
    (the unit itself would be wrong); otherwise the units are fine and the host needs fixing."""

    message: str
    fatal: bool = False


def _hidden_dirs(unit_text: str) -> dict[str, str]:
    """Directory -> the directive of this unit that hides it from the service."""
    hidden = {}
    for line in unit_text.splitlines():
        key, _, value = line.partition("=")
        if key in _HIDDEN_BY and value.strip() in ("yes", "true", "read-only", "tmpfs"):
            hidden.update(dict.fromkeys(_HIDDEN_BY[key], f"{key}={value.strip()}"))
    return hidden


def _interpreter(script: str) -> str | None:
    """The ``#!`` interpreter of a console script (a venv's python), or None for a binary."""
    try:
        with open(script, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode("utf-8", "replace").split()
    return parts[0] if parts else None


def _hiding(path: str, hidden: dict[str, str]) -> tuple[str, str] | None:
    for candidate in dict.fromkeys((path, os.path.realpath(path))):
        for directory, directive in hidden.items():
            if Path(candidate).is_relative_to(directory):
                return candidate, directive
    return None


def _readable_by(path: Path, user: pwd.struct_passwd | None) -> bool:
    """Whether ``user`` can read ``path`` by its mode bits (root reads everything)."""
    st = path.stat()
    if user is None or user.pw_uid == 0 or st.st_mode & 0o004:
        return True
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o400)
    groups = {user.pw_gid, *(g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem)}
    return st.st_gid in groups and bool(st.st_mode & 0o040)


def _has_token(config_token: str, env_file: Path) -> bool | None:
    """A gateway token in the config or the unit's environment file; None when that file cannot be read."""
    if config_token:
        return True
    try:
        text = env_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    except OSError:
        return None
    return any(
        line.strip().startswith("AGENTD_GATEWAY__TOKEN=") and line.split("=", 1)[1].strip()
        for line in text.splitlines()
    )


def check_install(
    *,
    agentd_path: str,
    config_path: str,
    unit_text: str | None = None,
    user: str = UNIT_USER,
    group: str = UNIT_GROUP,
    env_file: Path = ENV_FILE,
    getpwnam: Callable[[str], pwd.struct_passwd] = pwd.getpwnam,
    getgrnam: Callable[[str], grp.struct_group] = grp.getgrnam,
) -> list[InstallProblem]:
    """What would keep ``agentd.service`` from starting on this host, each with what to do.

    Read-only; the lookups are parameters so that tests can stand in for the host. Only
    ``fatal`` problems make the unit itself wrong (ExecStart= in a hidden directory).
    """
    from agentd.config import ConfigError, load_settings

    text = unit_text if unit_text is not None else _template(UNIT_NAMES[0])
    hidden = _hidden_dirs(text)
    problems = []
    interpreter = _interpreter(agentd_path)
    for label, path in (("the agentd executable", agentd_path), ("its interpreter", interpreter)):
        found = _hiding(path, hidden) if path else None
        if found is not None:
            where, directive = found
            problems.append(
                InstallProblem(
                    f"{label} {where} is under a directory the unit hides ({directive}), so the service "
                    "cannot start (status=203/EXEC): install agentd in a virtualenv outside /tmp and "
                    "home directories, with a system Python (python3 -m venv /opt/agentd && "
                    "/opt/agentd/bin/pip install ...), and run that venv's agentd install-systemd",
                    fatal=True,
                )
            )
    try:
        account: pwd.struct_passwd | None = getpwnam(user)
    except KeyError:
        account = None
        problems.append(
            InstallProblem(
                f"no user {user!r} (the unit runs as User={user}): create it with "
                f"useradd --system --user-group --home-dir /var/lib/agentd --shell /usr/sbin/nologin {user}"
            )
        )
    if account is not None:
        try:
            getgrnam(group)
        except KeyError:
            problems.append(InstallProblem(f"no group {group!r} (Group={group}): groupadd --system {group}"))
    config = Path(config_path)
    found = _hiding(config_path, hidden)
    if found is not None:
        problems.append(
            InstallProblem(f"config {found[0]} is hidden from the service by {found[1]}: use /etc/agentd/config.toml")
        )
    elif not config.is_file():
        problems.append(
            InstallProblem(
                f"no config file {config} (the unit passes --config): create it, empty means the defaults: "
                f"install -d -m 0755 {config.parent} && touch {config}"
            )
        )
    else:
        if not _readable_by(config, account):
            problems.append(InstallProblem(f"{config} is not readable by user {user!r}: chmod 0644 {config}"))
        try:
            settings = load_settings(config)
        except ConfigError as exc:
            problems.append(InstallProblem(f"the service would exit 2 on start: {exc}"))
        else:
            if settings.gateway.enabled and _has_token(settings.gateway.token, env_file) is False:
                problems.append(
                    InstallProblem(
                        "no gateway token: the unit requires one (AGENTD_GATEWAY__REQUIRE_TOKEN=true), so the "
                        f"gateway will not start (the workers do): install -m 0600 /dev/null {env_file} && "
                        f"printf 'AGENTD_GATEWAY__TOKEN=%s\\n' \"$(openssl rand -hex 32)\" > {env_file}"
                    )
                )
    return problems
