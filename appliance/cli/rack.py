"""anvil rack add|list|show|remove|rotate-token: rack controllers (boot roles registered with the region)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option

COLUMNS = ["name", "health", "lastSeenAt", "version", "networks", "bootUrl", "blades"]


def _write_token(path: Path, token: str) -> None:
    """The token to ``path``, readable by its owner only; an existing file is refused (it may be
    another rack's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.UsageError(f"--token-file {path}: the file exists; remove it or pick another path") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")


def _row(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "networks": ", ".join(data["reportedNetworks"] or data["networks"]),
            "blades": ", ".join(data["blades"])}


@click.group("rack")
def rack() -> None:
    """Rack controllers: boot services on each rack's provisioning network, registered with this appliance."""


@rack.command("add")
@click.argument("name")
@click.option("--network", "networks", multiple=True, metavar="CIDR",
              help="A provisioning network this rack controller serves (repeatable).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the rack's token there (0600) instead of printing it.")
@pass_ctx
def add(ctx: CliContext, name: str, networks: tuple[str, ...], token_file: Path | None) -> None:
    """Add a rack controller and print (or write) its token, the one credential it holds."""
    from appliance.services.racks import RackService

    if token_file is not None and token_file.exists():
        raise click.UsageError(f"--token-file {token_file}: the file exists; remove it or pick another path")
    info, token = RackService(ctx.store()).add(name, list(networks))
    if token_file is not None:
        _write_token(token_file, token)
        click.echo(f"added rack {info.name}; its token is in {token_file} (start it with: anvil serve --role boot "
                   f"--region https://THIS-APPLIANCE:8443 --rack-token {token_file} --region-ca CERT)")
    else:
        click.echo(f"added rack {info.name}; its token (shown once):\n{token}")


@rack.command("rotate-token")
@click.argument("name")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the new token there (0600) instead of printing it.")
@pass_ctx
def rotate_token(ctx: CliContext, name: str, token_file: Path | None) -> None:
    """Give a rack controller a new token; the old one stops working at once."""
    from appliance.services.racks import RackService

    if token_file is not None and token_file.exists():
        raise click.UsageError(f"--token-file {token_file}: the file exists; remove it or pick another path")
    token = RackService(ctx.store()).rotate_token(name)
    if token_file is not None:
        _write_token(token_file, token)
        click.echo(f"rack {name}: new token in {token_file}")
    else:
        click.echo(f"rack {name}: new token (shown once):\n{token}")


@rack.command("list")
@output_option()
@pass_ctx
def list_(ctx: CliContext, fmt: str) -> None:
    """List rack controllers: their networks, health (last heartbeat), version and blades."""
    if ctx.remote is not None:
        items = ctx.remote.json("GET", "/racks")["items"]
    else:
        from appliance.services.racks import RackService

        items = [i.public() for i in RackService(ctx.store()).list()]
    emit([_row(i) for i in items] if fmt in ("table", "wide") else items, fmt, columns=COLUMNS)


@rack.command("show")
@click.argument("name")
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, fmt: str) -> None:
    """Show one rack controller."""
    if ctx.remote is not None:
        data = ctx.remote.json("GET", f"/racks/{name}")
    else:
        from appliance.services.racks import RackService

        data = RackService(ctx.store()).get(name).public()
    emit(_row(data) if fmt in ("table", "wide") else data, fmt)


@rack.command("remove")
@click.argument("name")
@pass_ctx
def remove(ctx: CliContext, name: str) -> None:
    """Remove a rack controller that serves no blade; its token stops working."""
    from appliance.services.racks import RackService

    RackService(ctx.store()).remove(name)
    click.echo(f"removed rack {name}")
