"""anvil capacity | usage | changes: what the rack holds, what was used, and what changed."""

from __future__ import annotations

from typing import Any

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit

COUNTERS = ("total", "spare", "committed", "inUse", "failed", "maintenance")


def _rows(cap: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"scope": "all", "name": "", **cap["blades"], "cpus": cap["cpus"]["total"],
             "memGiB": cap["memoryGiB"]["total"]}] if cap.get("chassis") else []
    for scope, label in (("pools", "pool"), ("chassis", "chassis"), ("tenants", "tenant")):
        for t in cap[scope]:
            rows.append({"scope": label, "name": t["name"], **t["blades"], "cpus": t["cpus"]["total"],
                         "memGiB": t["memoryGiB"]["total"]})
    return rows


@click.command("capacity")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table",
              show_default=True, help="Output format.")
@pass_ctx
def capacity(ctx: CliContext, fmt: str) -> None:
    """Blades, CPUs and memory per blade pool, chassis and tenant: spare, committed, in use, failed."""
    if ctx.remote is not None:
        cap = ctx.remote.json("GET", "/capacity")
    else:
        from appliance.services.capacity import CapacityService
        from appliance.services.scope import Scope

        cap = CapacityService(ctx.store()).capacity(Scope.appliance()).public()
    if fmt != "table":
        emit(cap, fmt)
        return
    emit(_rows(cap), fmt, columns=["scope", "name", *COUNTERS, "cpus", "memGiB"])


@click.command("usage")
@click.option("--from", "start", required=True, help="Start, inclusive: 2026-12-01 or 2026-12-01T08:00:00Z.")
@click.option("--to", "end", required=True, help="End, exclusive (same forms as --from).")
@click.option("--tenant", default=None, help="Only this tenant's profiles.")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@pass_ctx
def usage(ctx: CliContext, start: str, end: str, tenant: str | None, fmt: str) -> None:
    """Blade-hours per profile, tenant and host pool in [--from, --to), from the binding change records."""
    from appliance.services.changes import ChangeService, parse_time

    if ctx.remote is not None:
        q = {"from": start, "to": end, "tenant": tenant}
        if fmt == "csv":
            click.echo(ctx.remote.request("GET", "/usage", query={**q, "format": "csv"}, accept="text/csv")[2]
                       .decode(), nl=False)
            return
        report: dict[str, Any] = ctx.remote.json("GET", "/usage", query=q)
    else:
        found = ChangeService(ctx.store()).usage(parse_time(start, "--from"), parse_time(end, "--to"), tenant=tenant)
        if fmt == "csv":
            click.echo(found.csv(), nl=False)
            return
        report = found.public()
    if fmt == "json":
        emit(report, "json")
        return
    rows = [{"tenant": p["tenant"], "profile": p["profile"], "hours": f"{p['bladeHours']:.4f}",
             "seconds": f"{p['bladeSeconds']:g}"} for p in report["profiles"]]
    rows += [{"tenant": t["tenant"], "profile": "(tenant total)", "hours": f"{t['bladeHours']:.4f}",
              "seconds": f"{t['bladeSeconds']:g}"} for t in report["tenants"]]
    rows += [{"tenant": h["tenant"], "profile": f"(host pool {h['hostPool']})", "hours": f"{h['bladeHours']:.4f}",
              "seconds": f"{h['bladeSeconds']:g}"} for h in report.get("hostPools") or ()]
    emit(rows, "table", columns=["tenant", "profile", "hours", "seconds"])


@click.command("changes")
@click.option("--resource", default=None, metavar="KIND[/NAME]",
              help="blade, profile, binding, vlan, lun, firmware or bios; a NAME of a profile or binding is "
                   "TENANT/NAME (binding/acme/web-01), of a port SWITCH:PORT.")
@click.option("--since", default=None, help="From this time, inclusive (2026-12-01T08:00:00Z or a date).")
@click.option("--until", default=None, help="Before this time (same forms as --since).")
@click.option("--tenant", default=None, help="Only this tenant's records.")
@click.option("--limit", type=click.IntRange(1, 10000), default=200, show_default=True,
              help="At most this many (not for -o jsonl, which exports every match).")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "jsonl"]), default="table",
              show_default=True, help="Output format (jsonl: JSON lines for a CMDB).")
@pass_ctx
def changes(ctx: CliContext, resource: str | None, since: str | None, until: str | None, tenant: str | None,
            limit: int, fmt: str) -> None:
    """Change records of blades, profiles, bindings, VLANs, LUN grants, firmware and BIOS, oldest first."""
    from appliance.services.changes import ChangeFilter, ChangeService, parse_resource, parse_time

    if ctx.remote is not None:
        q = {"resource": resource, "since": since, "until": until, "tenant": tenant}
        if fmt == "jsonl":
            click.echo(ctx.remote.request("GET", "/changes", query={**q, "format": "jsonl"},
                                          accept="application/jsonl")[2].decode(), nl=False)
            return
        rows = ctx.remote.json("GET", "/changes", query={**q, "limit": min(limit, 1000)})["items"]
    else:
        kind, name = parse_resource(resource, "--resource") if resource else (None, None)
        f = ChangeFilter(tenant=tenant, resource=kind, name=name,
                         since=parse_time(since, "--since") if since else None,
                         until=parse_time(until, "--until") if until else None)
        svc = ChangeService(ctx.store())
        if fmt == "jsonl":
            for line in svc.export(f):
                click.echo(line)
            return
        rows, _ = svc.list(f, limit=limit)
    if fmt == "json":
        emit(rows, "json")
        return
    table = [{"id": r["id"], "at": r["at"][:19].replace("T", " "), "who": r["who"],
              "what": f"{r['resource']}/{r['name']}", "action": r["action"],
              "change": _summary(r.get("before"), r.get("after")), "job": (r.get("job") or "")[:8]}
             for r in rows]
    emit(table, "table", columns=["id", "at", "who", "what", "action", "change", "job"])


def _summary(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    keys = sorted({*(before or {}), *(after or {})} - {"document", "facts"})
    parts = [f"{k}: {(before or {}).get(k, '-')} → {(after or {}).get(k, '-')}" for k in keys[:4]]
    return "; ".join(parts) + (" …" if len(keys) > 4 else "")
