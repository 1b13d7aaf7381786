"""anvil blade-pool create|list|show|add|remove|delete."""

from __future__ import annotations

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.services.blade_pools import PREFER, BladePoolInfo, BladePoolService


def _row(p: BladePoolInfo) -> dict[str, object]:
    return {"name": p.name, "tenant": p.tenant, "description": p.description, "blades": list(p.blades),
            "size": len(p.blades), "available": p.available, "prefer": p.prefer}


@click.group("blade-pool")
def blade_pool() -> None:
    """Blade pools that profiles are assigned from (`spares` holds every blade)."""


@blade_pool.command("create")
@click.argument("name")
@click.option("--tenant", default=None, help="Grant the pool to this tenant.")
@click.option("--description", default="")
@click.option("--prefer", type=click.Choice(PREFER), default="physical", show_default=True,
              help="Which blades placement tries first: physical (VM host slots last), virtual, or any.")
@pass_ctx
def create(ctx: CliContext, name: str, tenant: str | None, description: str, prefer: str) -> None:
    """Create an empty blade pool."""
    BladePoolService(ctx.store()).create(name, tenant=tenant, description=description, prefer=prefer)
    click.echo(f"created blade pool {name}")


@blade_pool.command("prefer")
@click.argument("name")
@click.argument("kind", type=click.Choice(PREFER))
@pass_ctx
def prefer_(ctx: CliContext, name: str, kind: str) -> None:
    """Set which blades of a pool placement tries first (physical, virtual or any)."""
    BladePoolService(ctx.store()).update(name, prefer=kind)
    click.echo(f"blade pool {name}: prefers {kind} blades")


@blade_pool.command("add")
@click.argument("name")
@click.argument("blades", nargs=-1, required=True)
@pass_ctx
def add(ctx: CliContext, name: str, blades: tuple[str, ...]) -> None:
    """Add BLADES to a pool."""
    info = BladePoolService(ctx.store()).add(name, blades)
    click.echo(f"blade pool {name}: {len(info.blades)} blades")


@blade_pool.command("remove")
@click.argument("name")
@click.argument("blades", nargs=-1, required=True)
@pass_ctx
def remove(ctx: CliContext, name: str, blades: tuple[str, ...]) -> None:
    """Take BLADES out of a pool."""
    info = BladePoolService(ctx.store()).remove(name, blades)
    click.echo(f"blade pool {name}: {len(info.blades)} blades")


@blade_pool.command("list")
@output_option()
@pass_ctx
def list_(ctx: CliContext, fmt: str) -> None:
    """List blade pools with their size and available blades."""
    emit([_row(p) for p in BladePoolService(ctx.store()).list()], fmt,
         columns=["name", "tenant", "size", "available", "prefer", "description"])


@blade_pool.command("show")
@click.argument("name")
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, fmt: str) -> None:
    """Show one blade pool."""
    emit(_row(BladePoolService(ctx.store()).get(name)), fmt)


@blade_pool.command("delete")
@click.argument("name")
@pass_ctx
def delete(ctx: CliContext, name: str) -> None:
    """Delete a blade pool (its blades stay enrolled)."""
    BladePoolService(ctx.store()).delete(name)
    click.echo(f"deleted blade pool {name}")


COMMANDS = [blade_pool]
