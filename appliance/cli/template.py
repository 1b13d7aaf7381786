"""anvil template instantiate|list."""

from __future__ import annotations

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.cli.profile import summary
from appliance.services.profiles import TEMPLATE, ProfileService


@click.group("template")
def template() -> None:
    """Profile templates: identities left as pool:<name>."""


@template.command("instantiate")
@click.argument("template_name")
@click.argument("names", nargs=-1, required=True)
@click.option("--tenant", default="default", show_default=True)
@pass_ctx
def instantiate(ctx: CliContext, template_name: str, names: tuple[str, ...], tenant: str) -> None:
    """Create profiles NAMES from TEMPLATE_NAME, allocating identities from its pools: all of
    them, or (a name taken, a pool exhausted) none."""
    for info in ProfileService(ctx.store()).instantiate_many(template_name, list(names), tenant=tenant):
        ids = ", ".join(f"{k}={v}" for _p, k, v in info.identities)
        click.echo(f"created ServerProfile {info.tenant}/{info.name} from {template_name}: {ids}")


@template.command("list")
@click.option("--tenant", default=None)
@output_option()
@pass_ctx
def list_(ctx: CliContext, tenant: str | None, fmt: str) -> None:
    """List templates."""
    rows = [summary(i) for i in ProfileService(ctx.store()).list(kind=TEMPLATE, tenant=tenant)]
    emit(rows, fmt, columns=["name", "tenant", "boot", "updated"])


COMMANDS = [template]
