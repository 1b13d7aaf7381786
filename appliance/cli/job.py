"""anvil job list|show|watch, and the progress display shared with profile assign/release."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import Column, emit, output_option
from appliance.errors import AnvilError
from appliance.services.jobs import JobInfo, JobService, duration_text

MARK = {"done": "✓", "failed": "✗", "undone": "↶", "running": "…", "undoing": "↶", "pending": " "}


def _bar(info: JobInfo, width: int = 24) -> str:
    done = sum(1 for s in info.steps if s.state == "done")
    filled = int(width * done / max(info.step_count, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{info.step_count}"


def _step_line(info: JobInfo, idx: int) -> str:
    s = info.steps[idx]
    detail = s.error if s.state == "failed" else ", ".join(f"{k}={v}" for k, v in (s.result or {}).items()
                                                           if not isinstance(v, dict | list))
    return f"  {MARK.get(s.state, '?')} {idx + 1:>2}/{info.step_count} {s.name:<20} {detail}".rstrip()


class _JobSource(Protocol):
    def get(self, job_id: str) -> JobInfo: ...


def follow(svc: _JobSource, job_id: str, *, timeout: float = 3600.0, interval: float = 0.25) -> JobInfo:
    """Print each step's outcome as it happens (a live bar on a terminal) until the job ends."""
    tty = sys.stdout.isatty()
    shown: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    info = svc.get(job_id)
    click.echo(f"job {info.id}: {info.kind} {info.subject}")
    while True:
        info = svc.get(job_id)
        for s in info.steps:
            if s.state in ("done", "failed", "undone") and shown.get(s.index) != s.state:
                if tty:
                    click.echo("\r\033[K", nl=False)
                click.echo(_step_line(info, s.index))
                shown[s.index] = s.state
        if info.final:
            break
        if tty:
            waiting = f" waiting for {info.waiting_for}" if info.waiting_for else ""
            click.echo(f"\r\033[K{_bar(info)} {info.current_step or ''}{waiting}"[:160], nl=False)
        if time.monotonic() > deadline:
            raise click.ClickException(f"job {job_id} still {info.state} after {timeout:g} s")
        time.sleep(interval)
    if tty:
        click.echo("\r\033[K", nl=False)
    blade = f" on blade {info.data['blade']}" if info.data.get("blade") else ""
    click.echo(f"job {info.id} {info.state}{blade}" + (f": {info.error}" if info.error else ""))
    return info


class JobFailed(AnvilError):
    """A job the command followed ended other than succeeded."""


def exit_for(info: JobInfo) -> None:
    """Exit non-zero, with the job's reason, unless it succeeded."""
    if info.state != "succeeded":
        raise JobFailed(f"job {info.id} {info.state}" + (f": {info.error}" if info.error else ""))


@click.group("job")
def job() -> None:
    """Durable jobs: stamp, unstamp, failover."""


JOB_COLUMNS: list[Column] = [("short", "JOB"), "kind", ("profile", "PROFILE"), "state", "blade", ("took", "TOOK"),
                             ("by", "BY"), ("why", "REASON / NOW")]
JOB_WIDE: list[Column] = ["id", "kind", "subject", "state", "step", "blade", ("took", "TOOK"), "createdBy",
                          "createdAt", ("why", "REASON / NOW")]


def job_row(p: dict[str, Any]) -> dict[str, Any]:
    """A job as a table row: its short id, what it is about, how long it took, who started it,
    and why it failed (or, while it runs, what it does now)."""
    prog = p["progress"]
    now = f"step {prog['step']}/{prog['of']} {prog['current'] or ''}".rstrip()
    if prog.get("waitingFor"):
        now += f", waiting for {prog['waitingFor']}"
    final = p["state"] in ("succeeded", "failed", "rolled_back", "cancelled")
    why = p["error"] if p["error"] else ("-" if final else now)
    return {**p, "short": p["id"][:8], "profile": p["subject"].removeprefix("profile "),
            "step": f"{prog['step']}/{prog['of']}", "took": duration_text(p.get("durationSeconds") or 0.0),
            "by": p.get("createdBy"), "why": why}


@job.command("list")
@click.option("--state", default=None, help="pending, running, waiting, succeeded, failed, rolled_back…")
@click.option("--kind", default=None, help="stamp, unstamp or failover.")
@click.option("--profile", default=None, help="NAME or TENANT/NAME.")
@click.option("--blade", default=None, help="The blade the job chose or was asked for.")
@click.option("--tenant", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@output_option(wide=True)
@pass_ctx
def list_(ctx: CliContext, state: str | None, kind: str | None, profile: str | None, blade: str | None,
          tenant: str | None, limit: int, fmt: str) -> None:
    """List recent jobs, newest first: what each is about, its blade and state, why it failed or
    rolled back, how long it took and who started it. `job show` takes the short id."""
    if ctx.remote is not None:
        items = ctx.remote.json("GET", "/jobs", query={"state": state, "tenant": tenant, "limit": limit,
                                                       "kind": kind, "profile": profile, "blade": blade})["items"]
    else:
        items = [j.public() for j in JobService(ctx.store()).list(state=state, tenant=tenant, limit=limit, kind=kind,
                                                                  profile=profile, blade=blade)]
    emit([job_row(p) for p in items] if fmt in ("table", "wide") else items, fmt, columns=JOB_COLUMNS,
         wide=JOB_WIDE)


@job.command("show")
@click.argument("job_id")
@output_option()
@pass_ctx
def show(ctx: CliContext, job_id: str, fmt: str) -> None:
    """Show a job with each step's result."""
    if ctx.remote is not None and fmt != "table":
        emit(ctx.remote.json("GET", f"/jobs/{job_id}"), fmt)
        return
    info = ctx.remote.get(job_id) if ctx.remote is not None else JobService(ctx.store()).get(job_id)
    if fmt != "table":
        emit(info.public(), fmt)
        return
    click.echo(f"job {info.id}: {info.kind} {info.subject} — {info.state} {_bar(info)}")
    if info.waiting_for:
        click.echo(f"  waiting for {info.waiting_for}")
    for s in info.steps:
        click.echo(_step_line(info, s.index))
    if info.error:
        click.echo(f"  error: {info.error}")


@job.command("watch")
@click.argument("job_id")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Give up after this many seconds.")
@pass_ctx
def watch(ctx: CliContext, job_id: str, timeout: float) -> None:
    """Follow a job live until it ends; exit 0 only if it succeeded."""
    exit_for(follow(ctx.remote if ctx.remote is not None else JobService(ctx.store()), job_id, timeout=timeout))


COMMANDS = [job]
