"""anvil audit list|verify|export."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.services.audit import AuditFilter, AuditService

FILTERS = [
    click.option("--resource", default=None, help="profile, blade, job, user, token, …"),
    click.option("--name", default=None, help="The changed object's name."),
    click.option("--who", default=None, help="Entries whose actor contains this text."),
    click.option("--tenant", default=None, help="Only this tenant's entries."),
]


F = TypeVar("F", bound=Callable[..., Any])


def _filters(f: F) -> F:
    for opt in reversed(FILTERS):
        f = opt(f)
    return f


@click.group("audit")
def audit() -> None:
    """The append-only, hash-chained record of every change."""


@audit.command("list")
@_filters
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@output_option(wide=True)
@pass_ctx
def list_(ctx: CliContext, resource: str | None, name: str | None, who: str | None, tenant: str | None, limit: int,
          fmt: str) -> None:
    """List recent changes, newest first."""
    if ctx.remote is not None:
        rows = ctx.remote.json("GET", "/audit", query={"resource": resource, "name": name, "who": who,
                                                       "tenant": tenant, "limit": min(limit, 1000)})["items"]
    else:
        rows, _ = AuditService(ctx.store()).list(AuditFilter(tenant=tenant, resource=resource, name=name, who=who),
                                                 limit=limit)
    if fmt in ("table", "wide"):
        rows = [{**r, "when": r["at"][:19].replace("T", " ")} for r in rows]
    emit(rows, fmt, columns=["id", "when", "summary", "origin"],
         wide=["id", "at", "who", "origin", "action", "resource", "name", "tenant", "summary"])


@audit.command("verify")
@pass_ctx
def verify(ctx: CliContext) -> None:
    """Recompute the hash chain; exit non-zero naming the first entry that does not match."""
    res = AuditService(ctx.store()).verify()
    if not res.ok:
        where = f"at entry {res.first_bad}" if res.first_bad is not None else "at its end"
        raise click.ClickException(f"audit chain broken {where}: {res.reason}")
    head = (f"; signed head: {res.head.count} entries, last #{res.head.last_id} {res.head.last_hash}"
            if res.head is not None else "")
    click.echo(f"audit chain intact ({res.checked} entries, {res.keyed} keyed{head})")


@audit.command("export")
@_filters
@click.option("--file", "path", type=click.Path(dir_okay=False, writable=True), default="-", show_default=True,
              help="Write JSON lines here ('-': standard output).")
@pass_ctx
def export(ctx: CliContext, resource: str | None, name: str | None, who: str | None, tenant: str | None,
           path: str) -> None:
    """Export entries as JSON lines, oldest first."""
    lines = AuditService(ctx.store()).export(AuditFilter(tenant=tenant, resource=resource, name=name, who=who))
    with click.open_file(path, "w") as fh:
        for line in lines:
            fh.write(line + "\n")


COMMANDS = [audit]
