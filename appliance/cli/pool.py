"""anvil pool create|list|show|delete (identity pools)."""

from __future__ import annotations

import dataclasses

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.domain.pools import RANGE_FORMATS
from appliance.services.pools import PoolInfo, PoolService


def _row(p: PoolInfo) -> dict[str, object]:
    return {**dataclasses.asdict(p), "free": p.free}


@click.group("pool")
def pool() -> None:
    """Identity pools: ranges of MACs, WWPNs, WWNNs, UUIDs or IQNs."""


@pool.command("create", epilog="\b\nRanges, by kind:\n" + "\n".join(
    f"  {kind}: {what}\n      {example}" for kind, (what, example) in RANGE_FORMATS.items()))
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(["mac", "wwpn", "wwnn", "uuid", "iqn"]))
@click.option("--start", required=True, help="First identity (IQN pools: first suffix number); see below.")
@click.option("--end", required=True, help="Last identity, included (IQN pools: last suffix number).")
@click.option("--prefix", default=None, help="IQN pools only: the name before the number.")
@pass_ctx
def create(ctx: CliContext, name: str, kind: str, start: str, end: str, prefix: str | None) -> None:
    """Create an identity pool: the identities from --start to --end (both included), handed
    out once each."""
    info = PoolService(ctx.store()).create(name, kind, start, end, prefix)
    click.echo(f"created {info.kind} pool {info.name}: {info.size} identities")


@pool.command("list")
@output_option()
@pass_ctx
def list_(ctx: CliContext, fmt: str) -> None:
    """List identity pools with their use."""
    emit([_row(p) for p in PoolService(ctx.store()).list()], fmt,
         columns=["name", "kind", "start", "end", "prefix", "size", "used", "free"])


@pool.command("show")
@click.argument("name")
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, fmt: str) -> None:
    """Show one identity pool."""
    emit(_row(PoolService(ctx.store()).get(name)), fmt)


@pool.command("delete")
@click.argument("name")
@pass_ctx
def delete(ctx: CliContext, name: str) -> None:
    """Delete an identity pool that has no identity in use."""
    PoolService(ctx.store()).delete(name)
    click.echo(f"deleted pool {name}")


COMMANDS = [pool]
