"""anvil config show."""

from __future__ import annotations

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit


@click.group("config")
def config() -> None:
    """The effective configuration."""


@config.command("show")
@click.option("-o", "--output", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@pass_ctx
def show(ctx: CliContext, fmt: str) -> None:
    """Print the effective configuration, secrets masked."""
    data = ctx.settings.masked()
    data["effective"] = {"store_url": data["store"]["url"], "secrets_key": str(ctx.settings.secrets_key_path)}
    emit(data, fmt)


COMMANDS = [config]
