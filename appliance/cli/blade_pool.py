"""anvil blade-pool create|list|show|add|remove|delete."""

from __future__ import annotations

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.domain.firmware import POLICIES
from appliance.services.blade_pools import PREFER, BladePoolInfo, BladePoolService
from appliance.services.firmware import baseline_dirs


def _row(p: BladePoolInfo) -> dict[str, object]:
    return {"name": p.name, "tenant": p.tenant, "description": p.description, "blades": list(p.blades),
            "size": len(p.blades), "available": p.available, "prefer": p.prefer,
            "firmware": p.firmware_baseline and f"{p.firmware_baseline} ({p.firmware_policy})"}


@click.group("blade-pool")
def blade_pool() -> None:
    """Blade pools that profiles are assigned from (`spares` holds every blade)."""


@blade_pool.command("create")
@click.argument("name")
@click.option("--tenant", default=None, help="Grant the pool to this tenant.")
@click.option("--description", default="")
@click.option("--prefer", type=click.Choice(PREFER), default="physical", show_default=True,
              help="Which blades placement tries first: physical (VM host slots last), virtual, or any.")
@click.option("--firmware-baseline", "baseline", default=None,
              help="The firmware baseline a stamp onto the pool's blades checks when the profile names none.")
@click.option("--firmware-policy", "policy", type=click.Choice(POLICIES), default=None,
              help="What that stamp does with a blade that does not comply (default: report).")
@pass_ctx
def create(ctx: CliContext, name: str, tenant: str | None, description: str, prefer: str, baseline: str | None,
           policy: str | None) -> None:
    """Create an empty blade pool."""
    BladePoolService(ctx.store()).create(name, tenant=tenant, description=description, prefer=prefer,
                                         firmware_baseline=baseline, firmware_policy=policy,
                                         baselines=baseline_dirs(ctx.settings.state_dir))
    click.echo(f"created blade pool {name}")


@blade_pool.command("firmware")
@click.argument("name")
@click.argument("baseline", required=False)
@click.option("--policy", type=click.Choice(POLICIES), default=None,
              help="What a stamp does with a blade that does not comply (default: report).")
@click.option("--none", "clear", is_flag=True, help="The pool names no baseline any more.")
@pass_ctx
def firmware_(ctx: CliContext, name: str, baseline: str | None, policy: str | None, clear: bool) -> None:
    """Name the firmware baseline of a pool: firmware compliance/update --pool and stamps onto its blades use it."""
    if bool(baseline) == clear:
        raise click.UsageError("give a BASELINE or --none")
    info = BladePoolService(ctx.store()).set_firmware(name, baseline, policy,
                                                      baselines=baseline_dirs(ctx.settings.state_dir))
    if info.firmware_baseline:
        click.echo(f"blade pool {name}: firmware baseline {info.firmware_baseline} (policy {info.firmware_policy})")
    else:
        click.echo(f"blade pool {name}: no firmware baseline")


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
         columns=["name", "tenant", "size", "available", "prefer", "firmware", "description"])


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
