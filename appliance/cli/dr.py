"""anvil dr plan create|show|list|delete, dr rehearse|activate|failback, dr report."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option


def _who() -> str:
    return f"local:{getpass.getuser()}"


@click.group("dr")
def dr() -> None:
    """Disaster recovery: plans, rehearsals, activation and failback at the recovery site."""


@dr.group("plan")
def plan() -> None:
    """DR plans: this site's profiles mapped onto a recovery site's pools, VLANs and LUN replicas."""


def _plan_row(p: dict[str, Any]) -> dict[str, Any]:
    return {"name": p["name"], "recovery site": p["recoverySite"], "origin": p["originSite"] or "(here)",
            "version": p["version"], "updated": p["updatedAt"][:19]}


@plan.command("create")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Update the plan of that name.")
@pass_ctx
def create(ctx: CliContext, file: Path, replace: bool) -> None:
    """Create a DR plan from a YAML file (checked against this site's profiles: order, cycles)."""
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"{file}: {exc.strerror}") from None
    if ctx.remote is not None:
        _, _, raw = ctx.remote.request("POST", "/dr/plans", query={"replace": replace or None}, data=text,
                                       content_type="application/yaml")
        info = json.loads(raw)
    else:
        from appliance.dr.service import PlanService

        info = PlanService(ctx.store()).create(text, source=str(file), replace=replace, created_by=_who()).public()
    click.echo(f"{'updated' if replace else 'created'} dr plan {info['name']}: {info['profiles']} profiles in "
               f"{len(info['waves'])} waves, recovering at site {info['recoverySite']}")


@plan.command("list")
@output_option()
@pass_ctx
def list_(ctx: CliContext, fmt: str) -> None:
    """List DR plans (made here, or replicated here from their primary)."""
    if ctx.remote is not None:
        items = ctx.remote.json("GET", "/dr/plans")["items"]
    else:
        from appliance.dr.service import PlanService

        items = [p.public() for p in PlanService(ctx.store()).list()]
    emit(items if fmt != "table" else [_plan_row(p) for p in items], fmt)


@plan.command("show")
@click.argument("name")
@output_option("yaml")
@pass_ctx
def show(ctx: CliContext, name: str, fmt: str) -> None:
    """Show a plan and its profiles here in recovery order (waves)."""
    if ctx.remote is not None:
        info = ctx.remote.json("GET", f"/dr/plans/{name}")
    else:
        from appliance.dr.service import PlanService

        info = PlanService(ctx.store()).get(name).public()
    if fmt == "table":
        click.echo(f"dr plan {info['name']}: recovering at {info['recoverySite']}, "
                   f"primary {info['originSite'] or 'this site'}, version {info['version']}")
        for i, wave in enumerate(info["waves"], 1):
            click.echo(f"  wave {i}: {', '.join(wave)}")
        return
    emit(info, fmt)


@plan.command("delete")
@click.argument("name")
@pass_ctx
def delete(ctx: CliContext, name: str) -> None:
    """Delete a DR plan (its run records stay, for the auditors)."""
    if ctx.remote is not None:
        ctx.remote.request("DELETE", f"/dr/plans/{name}")
    else:
        from appliance.dr.service import PlanService

        PlanService(ctx.store()).delete(name)
    click.echo(f"deleted dr plan {name}")


def _start(ctx: CliContext, kind: str, name: str, no_wait: bool, *, primary_lost: bool = False,
           reason: str | None = None) -> None:
    from appliance.cli.job import exit_for, follow

    if ctx.remote is not None:
        path = {"rehearsal": "rehearse", "activation": "activate", "failback": "failback"}[kind]
        body = {"primaryLost": primary_lost, "reason": reason} if kind == "activation" else None
        got = ctx.remote.json("POST", f"/dr/plans/{name}/{path}", json_body=body)
        if no_wait:
            click.echo(got["job"])
            return
        exit_for(follow(ctx.remote, got["job"]))
        _summary(ctx, name, got["id"])
        return
    from appliance.dr import runs
    from appliance.engine.leader import leader_alive
    from appliance.services.jobs import JobService

    store = ctx.store()
    if not leader_alive(store):
        raise click.ClickException("no appliance is running (start `anvil serve`)")
    if kind == "activation" and not primary_lost:
        _check_primary(ctx, name)
    info = runs.submit(store, kind, name, created_by=_who(), primary_lost=primary_lost, reason=reason)
    if no_wait:
        click.echo(info.job_id)
        return
    assert info.job_id is not None
    job = follow(JobService(store), info.job_id, timeout=24 * 3600.0)
    _summary(ctx, name, info.id)
    exit_for(job)


def _check_primary(ctx: CliContext, name: str) -> None:
    import asyncio

    from appliance.api.routes.dr import primary_reachable

    asyncio.run(primary_reachable(ctx.store(), ctx.box(), name))


def _summary(ctx: CliContext, name: str, run_id: str) -> None:
    runs = _runs(ctx, name, 20)
    run = next((r for r in runs["items"] if r["id"] == run_id), None)
    if run is None:
        return
    _print_run(run)


def _print_run(run: dict[str, Any]) -> None:
    rto = f"{run['rtoSeconds']:.1f} s" if run.get("rtoSeconds") is not None else "-"
    lost = f", primary declared lost: {run['reason']}" if run.get("primaryLost") else ""
    click.echo(f"{run['kind']} {run['id'][:8]} {run['state']} (started {run['startedAt'][:19]}, "
               f"by {run['createdBy']}{lost}): RTO {rto}, {len(run['profiles'])} profiles")
    for p in run["profiles"]:
        prto = f"{p['rtoSeconds']:.1f} s" if p.get("rtoSeconds") is not None else "-"
        err = f"  {p['error']}" if p.get("error") else ""
        click.echo(f"  wave {p['wave'] + 1}  {p['profile']:<40} {p['state']:<10} {p['blade'] or '-':<14} "
                   f"RTO {prto}{err}")


def _runs(ctx: CliContext, name: str, limit: int) -> dict[str, Any]:
    if ctx.remote is not None:
        got: dict[str, Any] = ctx.remote.json("GET", f"/dr/plans/{name}/report", query={"limit": limit})
        return got
    from appliance.dr.service import PlanService

    svc = PlanService(ctx.store())
    last = svc.last_success(name)
    return {"items": [r.public() for r in svc.runs(name, limit=limit)],
            "lastSuccessfulRehearsal": last.public() if last else None}


@dr.command("rehearse")
@click.argument("name")
@click.option("--no-wait", is_flag=True, help="Return as soon as the job is submitted (print its id).")
@pass_ctx
def rehearse(ctx: CliContext, name: str, no_wait: bool) -> None:
    """Rehearse a plan here: clones on the rehearsal VLANs and LUN copies, RTO reported, torn down."""
    _start(ctx, "rehearsal", name, no_wait)


@dr.command("activate")
@click.argument("name")
@click.option("--primary-lost", is_flag=True,
              help="The primary cannot be reached to fence its servers and is declared lost (needs --reason).")
@click.option("--reason", default=None, help="Why the primary is lost: written to the audit log with who said so.")
@click.option("--no-wait", is_flag=True, help="Return as soon as the job is submitted (print its id).")
@pass_ctx
def activate(ctx: CliContext, name: str, primary_lost: bool, reason: str | None, no_wait: bool) -> None:
    """Activate a plan here: fence the primary (or declare it lost), take the lease, stamp the profiles."""
    if reason and not primary_lost:
        raise click.UsageError("--reason goes with --primary-lost")
    _start(ctx, "activation", name, no_wait, primary_lost=primary_lost, reason=reason)


@dr.command("failback")
@click.argument("name")
@click.option("--no-wait", is_flag=True, help="Return as soon as the job is submitted (print its id).")
@pass_ctx
def failback(ctx: CliContext, name: str, no_wait: bool) -> None:
    """Fail a plan back: release its profiles here, hand the lease back, the primary stamps them again."""
    _start(ctx, "failback", name, no_wait)


@dr.command("report")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 100), default=5, show_default=True, help="How many runs.")
@output_option()
@pass_ctx
def report(ctx: CliContext, name: str, limit: int, fmt: str) -> None:
    """A plan's last runs here with each profile's RTO, and its last successful rehearsal."""
    got = _runs(ctx, name, limit)
    if fmt != "table":
        emit(got, fmt)
        return
    last = got.get("lastSuccessfulRehearsal")
    click.echo(f"last successful rehearsal: {last['id'][:8]} at {last['startedAt'][:19]}, RTO "
               f"{last['rtoSeconds']:.1f} s" if last else "last successful rehearsal: none")
    for run in got["items"]:
        _print_run(run)
    if not got["items"]:
        click.echo("no runs")

