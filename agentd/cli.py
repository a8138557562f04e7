"""The ``agentd`` command: run the daemon, the gateway, and check the configuration.

Group options come before the command (``agentd --config PATH --db URI COMMAND``) so that
every command sees the same settings. A bad config exits 2 with the file, key and problem.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from agentd.config import ConfigError, Settings, load_settings

__all__ = ["main"]

EXIT_CONFIG = 2


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
@click.option("--db", "db", metavar="URI", help="LanceDB directory or URI; overrides [storage] uri.")
@click.version_option(package_name="agentd")
@click.pass_context
def cli(ctx: click.Context, config: str | None, db: str | None) -> None:
    """agentd: a supervisor daemon for many long-lived agent sessions.

    \b
    Examples:
      agentd config check                 # print the effective configuration
      agentd --db /var/lib/agentd run     # run the daemon on that database
    """
    ctx.obj = Context(config, db)


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@pass_ctx
def config_check(obj: Context, as_json: bool) -> None:
    """Validate the configuration and print the effective settings.

    Shows the merged result of defaults, the config file, AGENTD_* environment variables and
    --db, with derived paths (storage directory, control socket) resolved. Exits 2 with the
    file, key and problem when something is invalid.

    \b
    Example:
      AGENTD_DAEMON__WORKERS=4 agentd --config ./config.toml config check
    """
    settings = obj.settings()
    data = settings.effective()
    source = str(settings.source_file) if settings.source_file else "(none: built-in defaults)"
    if as_json:
        click.echo(json.dumps({"config_file": source, "settings": data}, indent=2))
        return
    click.echo(f"# effective configuration; config file: {source}")
    for section, values in data.items():
        click.echo(f"\n[{section}]")
        for key, value in values.items():
            click.echo(f"{key} = {_toml_value(value)}")


def main() -> None:
    cli(prog_name="agentd")
