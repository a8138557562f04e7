"""The ``agentd`` command: run the daemon, the gateway, and check the configuration.

Group options come before the command (``agentd --config PATH --db URI COMMAND``) so that
every command sees the same settings. A bad config exits 2 with the file, key and problem.

Every command starts by tightening the umask (``restrict_umask``), before anything creates a
file, so that the database, its files and logs are owner-only: sessions, guidance and
transcripts are private (issue 11, finding 13).
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import click

from agentd.config import ConfigError, Settings, load_settings

__all__ = ["PRIVATE_UMASK", "UMASK_ENV", "main", "mask_secrets", "restrict_umask", "settings_toml"]

EXIT_CONFIG = 2

# The umask agentd runs with unless the inherited one already keeps "other" users out.
PRIVATE_UMASK = 0o077
# Escape hatch that needs no config file (the config is read after files may exist): an octal
# umask, e.g. AGENTD_UMASK=022 for a world-readable database. Not a [section] key on purpose.
UMASK_ENV = "AGENTD_UMASK"
# Settings shown masked by `config check`: secrets that must not land in logs or terminals.
SECRET_MASK = "***"
_SECRET_WORDS = ("token", "key", "secret", "password", "authorization")


def restrict_umask(environ: Mapping[str, str] | None = None) -> int:
    """Set the process umask so that new files are owner-only; returns the umask now in force.

    Why not always 077: a umask that already masks every "other" bit was chosen deliberately
    (the systemd unit's ``UMask=0027`` lets the ``agentd`` group read the database), so it is
    kept. Anything looser (a login shell's 022) becomes 077. ``$AGENTD_UMASK`` overrides both.
    Children started by the supervisor inherit it.
    """
    env = os.environ if environ is None else environ
    wanted = env.get(UMASK_ENV, "").strip()
    current = os.umask(PRIVATE_UMASK)
    if wanted:
        try:
            chosen = int(wanted, 8)
        except ValueError:
            chosen = -1
        if not 0 <= chosen <= 0o777:
            os.umask(current)
            raise click.UsageError(f"${UMASK_ENV}={wanted!r} is not an octal umask such as 077 or 027")
    elif current & 0o007 == 0o007:
        chosen = current
    else:
        chosen = PRIVATE_UMASK
    os.umask(chosen)
    return chosen


def mask_secrets(data: dict[str, Any]) -> dict[str, Any]:
    """The effective settings with secrets replaced by ``***`` (empty ones stay empty: "not set")."""
    masked = copy.deepcopy(data)
    gateway = masked.get("gateway") or {}
    if gateway.get("token"):
        gateway["token"] = SECRET_MASK
    options = (masked.get("llm") or {}).get("options")
    if isinstance(options, dict):
        _mask_nested(options)
    return masked


def _mask_nested(values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _mask_nested(value)
        elif value and any(word in key.lower() for word in _SECRET_WORDS):
            values[key] = SECRET_MASK


class Context:
    """What the group options resolved to; settings load lazily so `--help` never fails."""

    def __init__(self, config: str | None, db: str | None) -> None:
        self.config = config
        self.db = db
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config, db=self.db)
            except ConfigError as exc:
                click.echo(f"agentd: {exc}", err=True)
                sys.exit(EXIT_CONFIG)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="AGENTD_CONFIG",
    help="Config file (default: $AGENTD_CONFIG, ./config.toml, /etc/agentd/config.toml, else built-in defaults).",
)
@click.option(
    "--db",
    "db",
    metavar="URI",
    help="LanceDB directory or URI; overrides [storage] uri (default: $XDG_DATA_HOME/agentd, ~/.local/share/agentd).",
)
@click.version_option(package_name="agentd")
@click.pass_context
def cli(ctx: click.Context, config: str | None, db: str | None) -> None:
    """agentd: a supervisor daemon for many long-lived agent sessions.

    \b
    Examples:
      agentd config check                 # print the effective configuration
      agentd --db /var/lib/agentd run     # run the daemon on that database
    """
    restrict_umask()
    ctx.obj = Context(config, db)


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_str(text: str) -> str:
    """A TOML basic string. Not json.dumps: JSON escapes astral characters as surrogate pairs
    and leaves DEL raw, both of which TOML rejects."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_str(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return _toml_str(str(value))


def _toml_table(name: str, values: dict[str, Any]) -> list[str]:
    """``[name]`` with its scalars, then each nested dict as its own ``[name.key]`` table.

    Why tables and not inline values: ``[llm.options]`` is what config.toml documents, and the
    output of ``config check`` must load back unchanged (it used to print ``options = "{}"``,
    a string the loader rejects). A None (only reachable through JSON in an environment
    variable) has no TOML form: it is shown as a comment and so loads back as "unset".
    """
    lines = [f"[{name}]"]
    nested = []
    for key, value in values.items():
        if isinstance(value, dict):
            nested.append((key, value))
        elif value is None:
            lines.append(f"# {_toml_key(key)} = (null: no TOML form)")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        lines += ["", *_toml_table(f"{name}.{_toml_key(key)}", value)]
    return lines


def settings_toml(data: dict[str, Any], header: str = "") -> str:
    """The settings as a TOML document that ``load_settings`` reads back to the same settings."""
    lines = [header] if header else []
    for section, values in data.items():
        lines += ["", *_toml_table(_toml_key(section), values)]
    return "\n".join(lines).lstrip("\n") + "\n"


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@pass_ctx
def config_check(obj: Context, as_json: bool) -> None:
    """Validate the configuration and print the effective settings.

    Shows the merged result of defaults, the config file, AGENTD_* environment variables and
    --db, with derived paths (storage directory, control socket) resolved. Secrets (the
    gateway token, key-like [llm.options]) print as "***" when set. Exits 2 with the file, key
    and problem when something is invalid.

    \b
    Example:
      AGENTD_DAEMON__WORKERS=4 agentd --config ./config.toml config check
    """
    settings = obj.settings()
    try:
        data = mask_secrets(settings.effective())
    except ConfigError as exc:
        click.echo(f"agentd: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    source = str(settings.source_file) if settings.source_file else "(none: built-in defaults)"
    if as_json:
        click.echo(json.dumps({"config_file": source, "settings": data}, indent=2))
        return
    click.echo(settings_toml(data, f"# effective configuration; config file: {source}"), nl=False)


def main() -> None:
    cli(prog_name="agentd")


@cli.command("run")
@pass_ctx
def run_command(obj: Context) -> None:
    """Run the daemon: supervise the worker processes and the gateway.

    Creates the database on first start, starts [daemon] workers worker processes (each
    hosting the sessions of its shards) and, when [gateway] enabled, the WebSocket gateway.
    Runs in the foreground and logs to stderr. SIGTERM/SIGINT stop it gracefully (a second
    SIGINT forces), SIGHUP reloads the config. Speaks sd_notify under systemd.

    \b
    Exit codes: 0 stopped cleanly; 1 a worker crash loop; 2 bad config, database or socket;
    75 another supervisor holds the database (or its object-store lease was lost).
    \b
    Examples:
      agentd run                          # database in $XDG_DATA_HOME/agentd (~/.local/share/agentd)
      agentd --db /srv/agentd/data run    # or any directory / object-store URI
    """
    from agentd.logsetup import configure_logging

    settings = obj.settings()
    try:
        settings.control_socket_path  # noqa: B018 - refuse a config without a private socket path
    except ConfigError as exc:
        click.echo(f"agentd: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    # Before the supervisor module imports lancedb: its Rust logger reads $LANCEDB_LOG at import.
    configure_logging(settings.logging, role="supervisor")
    import uvloop

    from agentd.supervision.supervisor import Supervisor

    supervisor = Supervisor(settings, config_path=_config_arg(obj), db_override=obj.db)
    sys.exit(uvloop.run(supervisor.run()))


@cli.command("gateway")
@click.option("--exit-with-parent", is_flag=True, hidden=True, help="Exit when the parent dies (set by agentd run).")
@pass_ctx
def gateway_command(obj: Context, exit_with_parent: bool) -> None:
    """Run the WebSocket gateway alone (the daemon also starts it when [gateway] enabled).

    Serves live session steps and conversation messages; see the README's protocol section.
    Binds [gateway] host:port (127.0.0.1:8765 by default); any other address needs a token.

    \b
    Example:
      agentd --config /etc/agentd/config.toml gateway
    """
    from agentd.logsetup import configure_logging

    settings = obj.settings()
    configure_logging(settings.logging, role="gateway")  # before lancedb is imported
    from agentd.gateway.process import run_gateway

    if exit_with_parent:
        # Started by the supervisor: never outlive it (a restarted daemon starts its own gateway).
        from agentd.orphans import exit_when_orphaned, set_parent_death_signal

        set_parent_death_signal()
        exit_when_orphaned()
        if os.getppid() == 1:
            sys.exit(0)
    sys.exit(run_gateway(settings))


EXIT_NOT_WRITTEN = 1
EXIT_CANNOT_START_YET = 3


@cli.command("install-systemd")
@click.option("--dest", default="/etc/systemd/system", show_default=True, type=click.Path(file_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the unit files instead of writing them (the checks still run).")
@click.option(
    "--agentd",
    "agentd_path",
    metavar="PATH",
    help="The agentd executable for ExecStart= (default: this one, e.g. /opt/agentd/bin/agentd).",
)
@click.option("--force", is_flag=True, help="Write the units even when ExecStart= is in a directory the unit hides.")
@pass_ctx
def install_systemd_command(obj: Context, dest: str, dry_run: bool, agentd_path: str | None, force: bool) -> None:
    """Write agentd.service and agentd-gateway.service for this installation.

    The units run this very `agentd` executable with --config (default
    /etc/agentd/config.toml). Then: systemctl daemon-reload && systemctl enable --now agentd.

    Before writing, it checks what would keep the service from starting, and says what to do:
    ExecStart= (the executable or its venv's Python) under /tmp or a home directory, which the
    unit's PrivateTmp= and ProtectHome= hide; the config file missing, unreadable by the agentd
    user or invalid; no agentd user or group; no gateway token (the gateway then stays down).

    \b
    Exit codes:
      0  units written (or printed), nothing found that keeps them from starting
      1  not written: ExecStart= would be hidden from the service (--force writes anyway),
         or the destination is not writable
      3  units written, but the service cannot start until the problems listed are fixed
    \b
    Example:
      sudo /opt/agentd/bin/agentd --config /etc/agentd/config.toml install-systemd
    """
    from pathlib import Path

    from agentd.install_systemd import check_install, find_agentd_executable, install_systemd, render_units

    config_path = str(Path(obj.config).resolve()) if obj.config else "/etc/agentd/config.toml"
    try:
        binary = os.path.abspath(agentd_path) if agentd_path else find_agentd_executable()
    except FileNotFoundError as exc:
        click.echo(f"agentd: {exc}", err=True)
        sys.exit(EXIT_NOT_WRITTEN)
    problems = check_install(agentd_path=binary, config_path=config_path)
    fatal = [p for p in problems if p.fatal]
    for problem in problems:
        click.echo(f"agentd: {'error' if problem.fatal else 'warning'}: {problem.message}", err=True)
    if fatal and not force:
        click.echo("agentd: units not written (--force writes them anyway)", err=True)
        sys.exit(EXIT_NOT_WRITTEN)
    if dry_run:
        for name, text in render_units(agentd_path=binary, config_path=config_path).items():
            click.echo(f"# {name}\n{text}")
    else:
        try:
            written = install_systemd(Path(dest), agentd_path=binary, config_path=config_path)
        except OSError as exc:
            click.echo(f"agentd: cannot write units to {dest}: {exc}", err=True)
            sys.exit(EXIT_NOT_WRITTEN)
        for path in written:
            click.echo(f"wrote {path}")
    if problems:
        click.echo(f"agentd: the service cannot start until the {len(problems)} problem(s) above are fixed", err=True)
        sys.exit(EXIT_CANNOT_START_YET)
    if not dry_run:
        click.echo("next: systemctl daemon-reload && systemctl enable --now agentd")


def _config_arg(obj: Context) -> str | None:
    """The config file to hand to children (they resolve the same file and environment)."""
    settings = obj.settings()
    return str(settings.source_file) if settings.source_file else None
