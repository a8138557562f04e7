"""Settings for agentd and agentctl, loaded from ``config.toml`` with pydantic-settings.

Why pydantic-settings: the TOML file, the ``AGENTD_*`` environment variables and the CLI's
``--db`` override are merged by one library with one precedence (CLI > environment > file >
defaults) instead of hand-written merging, and every value is validated by the same models
that document it.

The keys are a contract: scripts and unit files set them. Extend, never rename.

Where the database lives when nothing names it: the user's XDG data directory
(``$XDG_DATA_HOME/agentd``, else ``~/.local/share/agentd``), resolved to an absolute path once,
at load, so that ``agentd`` and ``agentctl`` started from any directory open the same database
(it used to be ``./agentd-data``, relative to the working directory: a second, empty database
appeared wherever a command was run). The systemd unit names ``/var/lib/agentd/data`` through
``AGENTD_STORAGE__URI``. See ``default_storage_uri`` for an existing ``./agentd-data``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# The file, directory and socket rules live in agentd.paths (standard library only), so that
# agentctl finds the control socket without importing this module; re-exported here.
from agentd.paths import (
    CONFIG_ENV,
    DEFAULT_STORAGE_URI,
    ConfigError,
    control_socket_path,
    default_storage_uri,
    find_config_file,
    is_local_uri,
    local_path,
)
from agentd.paths import _legacy_noticed as _legacy_noticed  # tests reset the notices through here

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_STORAGE_URI",
    "ConfigError",
    "DaemonConfig",
    "GatewayConfig",
    "LLMConfig",
    "LoggingConfig",
    "MaintenanceConfig",
    "MetricsConfig",
    "QueueConfig",
    "RetentionConfig",
    "RuntimeConfig",
    "Settings",
    "StorageConfig",
    "WriterConfig",
    "default_storage_uri",
    "find_config_file",
    "load_settings",
]

ENV_PREFIX = "AGENTD_"
ENV_DELIMITER = "__"

log = logging.getLogger(__name__)


class _Section(BaseModel):
    # Unknown keys are typos more often than not: reject them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DaemonConfig(_Section):
    workers: int = Field(2, ge=1, le=256, description="worker processes hosting sessions")
    control_socket: str = Field(
        "", description="unix socket for status and wake hints; empty = <storage dir>/agentd.sock"
    )
    heartbeat_interval: float = Field(1.0, gt=0, description="seconds between worker heartbeats")
    heartbeat_timeout: float = Field(10.0, gt=0, description="no heartbeat for this long = hung")
    boot_timeout: float = Field(120.0, gt=0, description="a worker not ready after this long = hung")
    warm_spare: bool = Field(True, description="keep one pre-started worker to replace a dead one at once")
    stop_timeout: float = Field(15.0, gt=0, description="graceful stop deadline before SIGKILL")
    restart_backoff_initial: float = Field(0.2, ge=0)
    restart_backoff_max: float = Field(30.0, ge=0)
    crash_loop_restarts: int = Field(5, ge=1, description="restarts within the window = crash loop")
    crash_loop_window: float = Field(60.0, gt=0)


class StorageConfig(_Section):
    # Filled in by load_settings() when unset (default_storage_uri): it depends on the user and,
    # for an old ./agentd-data, on the working directory, so it is not a static default.
    uri: str = Field("", description="LanceDB directory or URI; empty = the user's data directory")
    num_shards: int = Field(64, ge=1, le=65536, description="fixed when the database is created")

    @property
    def is_local(self) -> bool:
        """True for a local directory (no ``scheme://``), where the control socket can live."""
        return is_local_uri(self.uri)

    @property
    def local_path(self) -> Path:
        return local_path(self.uri)


class WriterConfig(_Section):
    flush_interval: float = Field(0.25, gt=0, description="seconds between batched commits")
    flush_max_rows: int = Field(5000, ge=1, description="commit early once this many rows wait")
    max_buffered_rows: int = Field(200_000, ge=1, description="high watermark: producers wait")


class QueueConfig(_Section):
    poll_interval: float = Field(0.5, gt=0, description="seconds between queue polls")
    lease: float = Field(30.0, gt=0, description="a claim not completed within this is reclaimed")
    claim_batch: int = Field(200, ge=1, description="most actions claimed in one commit")
    retention: float = Field(86_400.0, ge=0, description="seconds to keep done/failed actions")
    compact_fragments: int = Field(
        16, ge=0, description="compact the actions table once it has this many fragments (0: only in maintenance)"
    )


class MaintenanceConfig(_Section):
    enabled: bool = True
    interval: float = Field(20.0, gt=0, description="seconds between maintenance passes")
    cleanup_older_than: float = Field(
        600.0, ge=600, description="keep table versions at most this long (readers may still use them)"
    )
    keep_versions: int = Field(
        1000,
        ge=0,
        description="keep about this many old versions of a busy table, not the whole window (0: by age only)",
    )
    min_version_age: float = Field(
        60.0,
        ge=5,
        description="but never shorter than this many seconds: above any operation in flight, and above "
        "[daemon] heartbeat_timeout (a worker stopped mid-commit for longer is killed, never resumed)",
    )


class RetentionConfig(_Section):
    """How much history is kept; 0 means "no limit" for each rule. The latest snapshot always stays."""

    steps_per_session: int = Field(0, ge=0, description="keep the last N steps of each session (0 = all)")
    step_max_age: float = Field(0.0, ge=0, description="delete steps older than this many seconds (0 = never)")
    stopped_session_max_age: float = Field(
        0.0, ge=0, description="purge stopped sessions (and their steps) this many seconds after they stop"
    )
    message_max_age: float = Field(0.0, ge=0, description="delete conversation messages older than this (0 = never)")


class RuntimeConfig(_Section):
    heartbeat_interval: float = Field(1.0, gt=0, description="default seconds between ticks")
    tick_timeout: float = Field(30.0, gt=0, description="a tick running longer is an error step")
    default_subject: str = Field("programming", min_length=1)


class GatewayConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: str = Field("", description="required for any non-loopback bind")
    poll_interval: float = Field(0.05, gt=0)
    max_queue: int = Field(1000, ge=1, description="per-subscriber queue before disconnect")
    max_frame_bytes: int = Field(65_536, ge=256)
    max_connections: int = Field(10_000, ge=1)
    require_token: bool = Field(False, description="require the token on loopback binds too (the unit sets it)")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="extra Origins (scheme://host:port) allowed to open a WebSocket besides the console's own",
    )
    control: bool = Field(True, description="allow actions (pause, guide, post...) from the console; false = read-only")


class MetricsConfig(_Section):
    """The supervisor's Prometheus ``/metrics`` endpoint (the gateway serves its own on its port)."""

    enabled: bool = True
    host: str = Field("127.0.0.1", description="loopback by default: metrics name sessions and agents")
    port: int = Field(9464, ge=0, le=65535)


class LLMConfig(_Section):
    provider: str = Field("offline", min_length=1, description="offline | openai-generic | ...")
    model: str = ""
    base_url: str = ""
    api_key_env: str = Field("", description="name of the env var holding the API key")
    timeout: float = Field(30.0, gt=0)
    retries: int = Field(2, ge=0)
    concurrency: int = Field(16, ge=1, description="in-flight LLM calls per worker")
    retry_backoff: float = Field(0.5, ge=0, description="first retry delay, doubled per retry, with jitter")
    retry_backoff_max: float = Field(8.0, ge=0)
    seed: int = Field(0, description="seed of the offline generator")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    options: dict[str, Any] = Field(default_factory=dict, description="extra BAML client options ([llm.options])")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    json_lines: bool = Field(False, alias="json")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


# The TOML file of the load in progress. pydantic-settings builds sources from the class, so
# the path chosen at run time travels in a context variable rather than a mutable class attribute.
_toml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_toml_file", default=None)


class Settings(BaseSettings):
    """Every setting of the daemon; see ``config.toml`` at the repository root for each key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        validate_default=True,
    )

    daemon: DaemonConfig = DaemonConfig()
    storage: StorageConfig = StorageConfig()
    writer: WriterConfig = WriterConfig()
    queue: QueueConfig = QueueConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    retention: RetentionConfig = RetentionConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    gateway: GatewayConfig = GatewayConfig()
    metrics: MetricsConfig = MetricsConfig()
    llm: LLMConfig = LLMConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _versions_outlive_a_stopped_worker(self) -> Settings:
        # A prune of versions an operation still uses can lose a commit that already reported
        # success (tests/test_version_window.py shows it): no process may come back from being
        # stopped mid-operation after its versions are gone. A hung worker is killed after
        # heartbeat_timeout, so the versions must outlive that.
        m = self.maintenance
        if m.min_version_age <= self.daemon.heartbeat_timeout:
            raise ValueError(
                f"[maintenance] min_version_age ({m.min_version_age:g}) must be greater than "
                f"[daemon] heartbeat_timeout ({self.daemon.heartbeat_timeout:g})"
            )
        if m.min_version_age > m.cleanup_older_than:  # the bounds of agentd.store.version_window
            raise ValueError(
                f"[maintenance] min_version_age ({m.min_version_age:g}) must not exceed "
                f"cleanup_older_than ({m.cleanup_older_than:g})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_file.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path, deep_merge=True))
        return tuple(sources)

    # Set by load_settings(): the file these settings were read from (None = defaults only).
    _source_file: Path | None = PrivateAttr(None)

    @property
    def source_file(self) -> Path | None:
        return self._source_file

    @property
    def control_socket_path(self) -> Path:
        """The control socket (the rule is ``agentd.paths.control_socket_path``); ConfigError if
        there is no private place for it."""
        return control_socket_path(self.daemon.control_socket, self.storage.uri)

    def effective(self) -> dict[str, Any]:
        """The merged settings as plain data, with derived paths filled in."""
        data = self.model_dump(mode="json", by_alias=True)
        data["daemon"]["control_socket"] = str(self.control_socket_path)
        if self.storage.is_local:
            data["storage"]["uri"] = str(self.storage.local_path)
        return data


def _describe_error(error: Any, path: Path | None) -> str:
    loc = [str(part) for part in error["loc"]]
    key = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else loc[0] if loc else "?"
    env_name = ENV_PREFIX + ENV_DELIMITER.join(loc).upper()
    if env_name in os.environ:
        origin = f"environment variable {env_name}"
    elif path is not None:
        origin = str(path)
    else:
        origin = "command line"
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling against config.toml)"
    value = error.get("input")
    shown = "" if error["type"] in ("extra_forbidden", "missing") else f" (got {value!r})"
    return f"{origin}: {key}: {message}{shown}"


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    db: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Load settings: defaults < config file < ``AGENTD_*`` environment < ``--db``/overrides.

    An unset or empty ``[storage] uri`` becomes ``default_storage_uri()`` here, once, as an
    absolute path: the children the supervisor starts get the resolved value, never a default
    of their own.

    Raises ConfigError with a message naming the file, the key and what is wrong.
    """
    path = find_config_file(config)
    if path is not None:
        try:
            with path.open("rb") as handle:
                tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    init: dict[str, Any] = dict(overrides or {})
    if db:
        init.setdefault("storage", {})
        init["storage"] = {**init["storage"], "uri": db}
    token = _toml_file.set(path)
    try:
        settings = Settings(**init)
    except ValidationError as exc:
        lines = [_describe_error(err, path) for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
    finally:
        _toml_file.reset(token)
    if not settings.storage.uri:
        settings.storage.uri = default_storage_uri()
    settings._source_file = path
    return settings
