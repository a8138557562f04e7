"""Where agentd's files are: the config file, the default database directory, the control socket.

Standard library only, on purpose: ``agentctl`` resolves the control socket on every command and
must not pay for pydantic-settings (about 100 ms) when the daemon answers. ``agentd.config``
imports these rules instead of restating them, so the socket a client looks for is always the
one the daemon binds: each rule lives here once.

``light_config`` reads only the keys a client needs (``[daemon] control_socket``, ``[storage]
uri``/``num_shards``, ``[gateway]`` host, port, token, enabled) from the same sources as
``agentd.config.load_settings`` (``--config``/``$AGENTD_CONFIG``/``./config.toml``/
``/etc/agentd/config.toml``, then ``AGENTD_*`` variables, then ``--db``). It does not validate
the file: a client that needs every setting (the no-daemon path) loads the full settings,
which report any mistake with the file and key.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_ENV",
    "CONTROL_SOCKET_NAME",
    "DATA_DIR_NAME",
    "DEFAULT_STORAGE_URI",
    "LEGACY_STORAGE_DIR",
    "SYSTEM_CONFIG",
    "ConfigError",
    "LightConfig",
    "control_socket_path",
    "default_storage_uri",
    "find_config_file",
    "is_local_uri",
    "light_config",
    "local_path",
]

log = logging.getLogger(__name__)

CONFIG_ENV = "AGENTD_CONFIG"
ENV_PREFIX = "AGENTD_"
ENV_DELIMITER = "__"
SYSTEM_CONFIG = Path("/etc/agentd/config.toml")
CONTROL_SOCKET_NAME = "agentd.sock"
# The old default, relative to the working directory; still used when it holds a database and
# the new default does not (see default_storage_uri).
LEGACY_STORAGE_DIR = "agentd-data"
# What config.toml and the docs show; the real default is resolved per user (default_storage_uri).
DEFAULT_STORAGE_URI = "$XDG_DATA_HOME/agentd"
DATA_DIR_NAME = "agentd"
DEFAULT_NUM_SHARDS = 64
DEFAULT_GATEWAY_HOST = "127.0.0.1"
DEFAULT_GATEWAY_PORT = 8765


class ConfigError(Exception):
    """A config file or value is unusable; the message names the file, the key and the problem."""


# Legacy directories already announced by this process: a supervisor reloads its settings and
# agentctl may load them twice, but one notice per directory is enough.
_legacy_noticed: set[Path] = set()


def find_config_file(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """Pick the config file: ``--config``, ``$AGENTD_CONFIG``, ``./config.toml``, then /etc.

    An explicitly named file (option or environment) must exist; the implicit ones are
    optional, and no file at all means the embedded defaults.
    """
    env = os.environ if environ is None else environ
    for origin, value in (("--config", explicit), (f"${CONFIG_ENV}", env.get(CONFIG_ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise ConfigError(f"{path}: config file not found (named by {origin})")
            return path.resolve()
    for candidate in (Path("config.toml"), SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _xdg_data_home(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME`` when it is an absolute path (the spec says to ignore a relative one),
    else ``~/.local/share``. Raises ConfigError when there is no home directory to expand."""
    value = environ.get("XDG_DATA_HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    home = environ.get("HOME", "")
    if not home:
        try:
            home = str(Path.home())
        except (RuntimeError, KeyError) as exc:
            raise ConfigError(
                "[storage] uri: no home directory and no $XDG_DATA_HOME to put the database in; "
                "set [storage] uri, AGENTD_STORAGE__URI or --db"
            ) from exc
    return Path(home) / ".local" / "share"


def _holds_database(path: Path) -> bool:
    """A directory agentd has created tables in (its ``meta`` table), not just any directory."""
    return (path / "meta.lance").is_dir()


def default_storage_uri(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """The database directory when no config, environment variable or ``--db`` names one.

    ``$XDG_DATA_HOME/agentd`` (``~/.local/share/agentd``), absolute, the same from every working
    directory. One exception keeps existing users' sessions where they are: when the working
    directory has an ``agentd-data`` holding a database (the old default) and the new directory
    holds none, that one is used, and a one-line warning (once per process) says how to move it.
    Refusing or silently switching would make every session "disappear"; once it is moved, or the
    new directory has a database, the new default wins. Pure apart from reading the filesystem.
    """
    env = os.environ if environ is None else environ
    new = _xdg_data_home(env) / DATA_DIR_NAME
    legacy = (cwd or Path.cwd()) / LEGACY_STORAGE_DIR
    if _holds_database(legacy) and not _holds_database(new):
        legacy = legacy.resolve()
        if legacy not in _legacy_noticed:
            _legacy_noticed.add(legacy)
            log.warning(
                "using the database in %s (the old default, relative to the working directory); "
                "the default is now %s: move it there with `mv %s %s`, or keep it with --db %s",
                legacy,
                new,
                legacy,
                new,
                legacy,
            )
        return str(legacy)
    return str(new)


def is_local_uri(uri: str) -> bool:
    """True for a local directory (no ``scheme://``), where the control socket can live."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser().resolve()


def control_socket_path(control_socket: str, storage_uri: str, environ: Mapping[str, str] | None = None) -> Path:
    """The control socket: configured, inside the local storage directory, or $XDG_RUNTIME_DIR.

    Never a shared directory such as /tmp: another local user could bind the path first and
    receive every wake hint and status request (issue 11, finding 13). With object storage
    and no ``$XDG_RUNTIME_DIR`` (a system service without ``RuntimeDirectory=``) there is no
    private place to guess, so this raises ConfigError asking for ``[daemon] control_socket``.
    """
    env = os.environ if environ is None else environ
    if control_socket:
        return Path(control_socket).expanduser().resolve()
    if is_local_uri(storage_uri):
        return local_path(storage_uri) / CONTROL_SOCKET_NAME
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / CONTROL_SOCKET_NAME
    raise ConfigError(
        f"[daemon] control_socket: storage {storage_uri!r} is not a local directory and "
        "$XDG_RUNTIME_DIR is not set, so there is no private place for the control socket; set "
        '[daemon] control_socket = "/run/agentd/agentd.sock" (a directory only this user can write) '
        "or AGENTD_DAEMON__CONTROL_SOCKET"
    )


@dataclass(frozen=True, slots=True)
class LightConfig:
    """The few settings a client needs, read without pydantic (see the module docstring)."""

    source_file: Path | None
    storage_uri: str
    num_shards: int
    control_socket: str  # as configured ('' = derived by control_socket_path)
    gateway_enabled: bool
    gateway_host: str
    gateway_port: int
    gateway_token: str

    def socket_path(self) -> Path:
        return control_socket_path(self.control_socket, self.storage_uri)


def _setting(file_data: Mapping[str, Any], environ: Mapping[str, str], section: str, key: str, default: Any) -> Any:
    """One value with agentd.config's precedence: environment over file over default."""
    env_name = f"{ENV_PREFIX}{section}{ENV_DELIMITER}{key}".upper()
    if env_name in environ:
        return environ[env_name]
    table = file_data.get(section)
    if isinstance(table, dict) and key in table:
        return table[key]
    return default


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def light_config(
    config: str | os.PathLike[str] | None = None, *, db: str | None = None, environ: Mapping[str, str] | None = None
) -> LightConfig:
    """Read the client's settings; ConfigError for a missing named file or TOML that does not parse."""
    env = os.environ if environ is None else environ
    path = find_config_file(config, env)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    uri = db or str(_setting(data, env, "storage", "uri", "") or "")
    if not uri:
        uri = default_storage_uri(env)
    try:
        num_shards = int(_setting(data, env, "storage", "num_shards", DEFAULT_NUM_SHARDS))
        port = int(_setting(data, env, "gateway", "port", DEFAULT_GATEWAY_PORT))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or 'environment'}: a number is not a number: {exc}") from exc
    return LightConfig(
        source_file=path,
        storage_uri=uri,
        num_shards=num_shards,
        control_socket=str(_setting(data, env, "daemon", "control_socket", "") or ""),
        gateway_enabled=_as_bool(_setting(data, env, "gateway", "enabled", True)),
        gateway_host=str(_setting(data, env, "gateway", "host", DEFAULT_GATEWAY_HOST)),
        gateway_port=port,
        gateway_token=str(_setting(data, env, "gateway", "token", "") or ""),
    )
