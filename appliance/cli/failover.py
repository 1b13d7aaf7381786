"""anvil failover domain create|update|list|show|delete, list, show, queue, health,
confirm-fenced, clear.

The webhook secret is read from a file (or stdin), never taken as an argument, and
never printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.domain.failover import FailoverState
from appliance.drivers.protocols import Secret
from appliance.errors import Issue, ValidationError
from appliance.services.failover import DomainInfo, FailoverInfo, FailoverService

STATES = click.Choice([s.value for s in FailoverState])


def _service(ctx: CliContext, *, secrets: bool = False) -> FailoverService:
    return FailoverService(ctx.store(), ctx.box() if secrets else None)


def _read_secret(path: Path | None) -> Secret | None:
    if path is None:
        return None
    try:
        raw = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError([Issue("webhookSecretFile",
                                     f"{path}: cannot read it ({exc.__class__.__name__})")]) from None
    return Secret(raw.strip())


def _domain_row(d: DomainInfo) -> dict[str, Any]:
    data = d.public()
    data["profiles"] = [f"{p['tenant']}/{p['name']}" for p in data["profiles"]]
    return data


def _when(iso: str | None) -> str:
    return iso[11:19] if iso else "-"


def _failover_row(f: FailoverInfo) -> dict[str, Any]:
    return {**f.public(), "profile": f"{f.tenant}/{f.profile}",
            "events": " → ".join(f"{e['event']}@{_when(e.get('at'))}" for e in f.timeline)}


_FAILOVER_COLUMNS = ["id", "domain", "profile", "state", "fromBlade", "toBlade", "fence", "events"]


def _webhook_options(fn: Any) -> Any:
    fn = click.option("--webhook-secret-file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
                      default=None, help="File holding the HMAC secret that signs webhooks ('-' for stdin).")(fn)
    fn = click.option("--webhook-url", default=None,
                      help="Where failure and failover events are POSTed (http:// or https://).")(fn)
    return fn


@click.group("failover")
def failover() -> None:
    """Failover domains, failover history, blade health and manual fence confirmation."""


@failover.group("domain")
def domain() -> None:
    """Failover domains: profiles protected by a pool of spare blades."""


@domain.command("create")
@click.argument("name")
@click.option("--spare-pool", default="spares", show_default=True, help="Blade pool the spares come from.")
@click.option("--restart-attempts", type=int, default=1, show_default=True,
              help="Power cycles of the same blade before moving (policy restart).")
@click.option("--description", default="")
@click.option("--vm-host", "vm_hosts", multiple=True, help="A VM host whose free slots are spares of last "
              "resort, after every physical spare (repeatable).")
@_webhook_options
@pass_ctx
def domain_create(ctx: CliContext, name: str, spare_pool: str, restart_attempts: int, description: str,
                  vm_hosts: tuple[str, ...], webhook_url: str | None, webhook_secret_file: Path | None) -> None:
    """Create a failover domain; profiles join it through spec.failover.domain."""
    _service(ctx, secrets=True).create_domain(name, spare_pool=spare_pool, restart_attempts=restart_attempts,
                                              description=description, webhook_url=webhook_url,
                                              webhook_secret=_read_secret(webhook_secret_file), vm_hosts=vm_hosts)
    click.echo(f"created failover domain {name}")


@domain.command("update")
@click.argument("name")
@click.option("--spare-pool", default=None, help="Blade pool the spares come from.")
@click.option("--restart-attempts", type=int, default=None)
@click.option("--description", default=None)
@click.option("--vm-host", "vm_hosts", multiple=True, help="VM hosts whose free slots are spares of last resort "
              "(repeatable; replaces the list).")
@click.option("--no-vm-hosts", is_flag=True, help="No VM host slots as spares.")
@_webhook_options
@click.option("--remove-webhook", is_flag=True, help="Stop sending webhooks (drops the URL and the secret).")
@pass_ctx
def domain_update(ctx: CliContext, name: str, spare_pool: str | None, restart_attempts: int | None,
                  description: str | None, vm_hosts: tuple[str, ...], no_vm_hosts: bool, webhook_url: str | None,
                  webhook_secret_file: Path | None, remove_webhook: bool) -> None:
    """Change a failover domain; options not given stay as they are."""
    if vm_hosts and no_vm_hosts:
        raise click.UsageError("give --vm-host or --no-vm-hosts, not both")
    _service(ctx, secrets=True).update_domain(name, spare_pool=spare_pool, restart_attempts=restart_attempts,
                                              description=description, webhook_url=webhook_url,
                                              webhook_secret=_read_secret(webhook_secret_file),
                                              remove_webhook=remove_webhook,
                                              vm_hosts=[] if no_vm_hosts else (vm_hosts or None))
    click.echo(f"updated failover domain {name}")


@domain.command("list")
@output_option()
@pass_ctx
def domain_list(ctx: CliContext, fmt: str) -> None:
    """List failover domains with their spare pool and protected profiles."""
    emit([_domain_row(d) for d in _service(ctx).list_domains()], fmt,
         columns=["name", "sparePool", "vmHosts", "restartAttempts", "webhookUrl", "profiles"])


@domain.command("show")
@click.argument("name")
@output_option()
@pass_ctx
def domain_show(ctx: CliContext, name: str, fmt: str) -> None:
    """Show one failover domain (the webhook secret shows as ***)."""
    info = _service(ctx).get_domain(name)
    emit(info.public() if fmt != "table" else _domain_row(info), fmt)


@domain.command("delete")
@click.argument("name")
@pass_ctx
def domain_delete(ctx: CliContext, name: str) -> None:
    """Delete a failover domain that no profile names and no failover uses."""
    _service(ctx).delete_domain(name)
    click.echo(f"deleted failover domain {name}")


@failover.command("list")
@click.option("--domain", "domain_name", default=None, help="Only this failover domain.")
@click.option("--tenant", default=None)
@click.option("--profile", default=None)
@click.option("--state", type=STATES, default=None)
@click.option("--open", "open_only", is_flag=True, help="Only failovers still in progress.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@output_option()
@pass_ctx
def list_(ctx: CliContext, domain_name: str | None, tenant: str | None, profile: str | None, state: str | None,
          open_only: bool, limit: int, fmt: str) -> None:
    """Recent failovers, newest first, with their timelines."""
    rows = _service(ctx).list_failovers(domain=domain_name, tenant=tenant, profile=profile, state=state,
                                        open_only=open_only, limit=limit)
    emit([_failover_row(f) if fmt == "table" else f.public() for f in rows], fmt, columns=_FAILOVER_COLUMNS)


@failover.command("show")
@click.argument("failover_id", metavar="ID", type=int)
@output_option()
@pass_ctx
def show(ctx: CliContext, failover_id: int, fmt: str) -> None:
    """One failover with its whole timeline."""
    info = _service(ctx).get_failover(failover_id)
    if fmt != "table":
        emit(info.public(), fmt)
        return
    data = info.public()
    data.pop("timeline")
    emit(data, fmt)
    for e in info.timeline:
        detail = f"  {e['detail']}" if e.get("detail") else ""
        click.echo(f"  {e.get('at') or '-'}  {e['event']}{detail}")


@failover.command("queue")
@click.argument("domain_name", metavar="DOMAIN")
@output_option()
@pass_ctx
def queue(ctx: CliContext, domain_name: str, fmt: str) -> None:
    """Fenced profiles of DOMAIN: which spare each gets, and who waits (in order) and why."""
    plan = _service(ctx).spare_plan(domain_name)
    rows: list[dict[str, Any]] = [{"profile": a.profile, "blade": a.blade, "position": None,
                                   "reason": "spare chosen"} for a in plan.assignments]
    rows += [{"profile": w.profile, "blade": None, "position": w.position, "reason": w.reason} for w in plan.waiting]
    emit(rows, fmt, columns=["profile", "blade", "position", "reason"])


@failover.command("health")
@click.argument("blade")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@output_option()
@pass_ctx
def health(ctx: CliContext, blade: str, limit: int, fmt: str) -> None:
    """A blade's health history, newest first."""
    rows = [e.public() for e in _service(ctx).health_history(blade, limit=limit)]
    emit(rows, fmt, columns=["at", "source", "ok", "power", "health", "verdict", "detail"])


@failover.command("run")
@click.argument("profile")
@click.option("--tenant", default="default", show_default=True)
@click.option("--reason", default="run by hand", show_default=True, help="Recorded on the failover.")
@click.option("--no-wait", is_flag=True, help="Return as soon as the job is submitted.")
@pass_ctx
def run(ctx: CliContext, profile: str, tenant: str, reason: str, no_wait: bool) -> None:
    """Fail a profile over now: fence its blade, move it to a spare of its domain."""
    from appliance.cli.job import exit_for, follow
    from appliance.cli.profile import _engine_running, _who
    from appliance.services.jobs import JobService

    _engine_running(ctx)
    jobs = JobService(ctx.store())
    failover_id, info = jobs.submit_failover(profile, tenant=tenant, reason=f"{reason} ({_who()})",
                                             created_by=_who())
    click.echo(f"failover #{failover_id} of {tenant}/{profile}: job {info.id}")
    if no_wait:
        return
    exit_for(follow(jobs, info.id))


@failover.command("move")
@click.argument("profile")
@click.option("--to", "to_blade", required=True, help="The blade to move to (a spare one): a physical blade or "
              "a VM host's slot.")
@click.option("--tenant", default="default", show_default=True)
@click.option("--no-wait", is_flag=True, help="Return as soon as the job is submitted.")
@pass_ctx
def move(ctx: CliContext, profile: str, to_blade: str, tenant: str, no_wait: bool) -> None:
    """A planned move of a profile to BLADE (physical or virtual): same identity, same LUN.

    The move is a failover of the profile's domain, planned: its blade is powered off
    (confirmed) and goes back to the spares, then the profile is stamped on BLADE."""
    from appliance.cli.job import exit_for, follow
    from appliance.cli.profile import _engine_running, _who
    from appliance.services.jobs import JobService

    _engine_running(ctx)
    jobs = JobService(ctx.store())
    failover_id, info = jobs.submit_move(profile, tenant=tenant, to_blade=to_blade,
                                         reason=f"planned move to {to_blade} ({_who()})", created_by=_who())
    click.echo(f"move #{failover_id} of {tenant}/{profile} to {to_blade}: job {info.id}")
    if no_wait:
        return
    exit_for(follow(jobs, info.id))


@failover.command("test")
@click.argument("domain_name", metavar="DOMAIN")
@click.option("--profile", "profile_name", default=None, help="tenant/name of the profile to move "
              "(default: the least important active one of the domain).")
@pass_ctx
def drill(ctx: CliContext, domain_name: str, profile_name: str | None) -> None:
    """A drill: move a protected profile to a spare and back, each move a real failover."""
    from appliance.cli.job import exit_for, follow
    from appliance.cli.profile import _engine_running, _who
    from appliance.services.jobs import JobService

    _engine_running(ctx)
    svc = _service(ctx)
    target = svc.drill_target(domain_name, profile_name)
    jobs = JobService(ctx.store())
    home = target.blade
    for leg, to in (("out", None), ("back", home)):
        failover_id, job = jobs.submit_failover(target.name, tenant=target.tenant, drill=True, to_blade=to,
                                                reason=f"drill {leg} ({_who()})", created_by=_who())
        click.echo(f"drill {leg}: failover #{failover_id} of {target.tenant}/{target.name}: job {job.id}")
        state = follow(jobs, job.id)
        if state.state != "succeeded":
            exit_for(state)
        done = svc.get_failover(failover_id)
        took = [f"{e['event']} {_when(e['at'])}" for e in done.timeline]
        click.echo(f"  {done.from_blade} -> {done.to_blade}: " + ", ".join(took))
    click.echo(f"drill done: {target.tenant}/{target.name} is back on {home}")


@failover.command("confirm-fenced")
@click.argument("blade")
@click.option("--yes", is_flag=True, help="Do not ask; you have made sure yourself.")
@pass_ctx
def confirm_fenced(ctx: CliContext, blade: str, yes: bool) -> None:
    """Confirm by hand that BLADE is powered off or cut off, so its failover can go on.

    Only for a blade whose failover waits for an operator because no fence could be
    confirmed. Confirming a blade that still runs can bring its profile up twice.
    """
    if not yes:
        click.confirm(f"Have you made sure blade {blade} is powered off, or cut off from its networks and "
                      "storage?", abort=True)
    info = _service(ctx).confirm_fenced(blade)
    click.echo(f"blade {blade} confirmed fenced; failover #{info.id} of {info.tenant}/{info.profile} goes on")


@failover.command("clear")
@click.argument("blade")
@click.option("--failback", is_flag=True, help="Then move back the profile whose last failover took it off "
              "this blade (a planned move, like a drill's: the blade it leaves stays a spare).")
@click.option("--no-wait", is_flag=True, help="With --failback: return once the move is submitted.")
@pass_ctx
def clear(ctx: CliContext, blade: str, failback: bool, no_wait: bool) -> None:
    """Return a repaired failed (or fenced) blade to the spares."""
    from appliance.cli.job import exit_for, follow
    from appliance.cli.profile import _engine_running, _who
    from appliance.services.jobs import JobService

    if failback:
        _engine_running(ctx)   # before changing anything: a failback needs the engine
    svc = _service(ctx)
    svc.clear_failed(blade)
    click.echo(f"blade {blade} is a spare again")
    if not failback:
        return
    found = svc.failback_candidate(blade)
    if found is None:
        click.echo(f"nothing to fail back: no active profile's last failover left {blade}")
        return
    tenant, name = found
    jobs = JobService(ctx.store())
    failover_id, info = jobs.submit_failover(name, tenant=tenant, drill=True, to_blade=blade,
                                             reason=f"failback to {blade} after repair ({_who()})", created_by=_who())
    click.echo(f"failback #{failover_id} of {tenant}/{name} to {blade}: job {info.id}")
    if not no_wait:
        exit_for(follow(jobs, info.id))


COMMANDS = [failover]
