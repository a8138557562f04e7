"""Render and install agentd's systemd unit files (``agentd install-systemd``).

Why render instead of copying: the unit's ``ExecStart=`` must name the very ``agentd``
executable of this installation (often a venv such as ``/opt/agentd/bin/agentd``), and a
hand-copied unit pointing at ``/usr/local/bin/agentd`` is the classic "status=203/EXEC" failure.
The templates shipped in the package (``agentd/systemd_units/``) are the single source; the
``systemd/`` directory at the repository root holds identical copies for people who install by
hand, and a test keeps the two equal.

Nothing here talks to systemd: the caller (or the docs) runs ``systemctl daemon-reload``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

__all__ = [
    "DEFAULT_AGENTD_PATH",
    "DEFAULT_CONFIG_PATH",
    "UNIT_NAMES",
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
