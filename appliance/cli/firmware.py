"""anvil firmware baselines|compliance|update."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from appliance.cli.context import CliContext, local_who, pass_ctx
from appliance.cli.job import exit_for, follow
from appliance.cli.output import Column, emit, output_option
from appliance.services import firmware as sfw
from appliance.services.jobs import JobInfo, JobService

COLUMNS: list[Column] = ["blade", "baseline", "compliant", ("summary", "FIRMWARE")]


@click.group("firmware")
def firmware() -> None:
    """Firmware baselines, each blade's compliance, and rolling firmware updates."""


def _dirs(ctx: CliContext) -> tuple[Any, ...]:
    return sfw.baseline_dirs(ctx.settings.state_dir)


@firmware.command("baselines")
@output_option()
@pass_ctx
def baselines(ctx: CliContext, fmt: str) -> None:
    """List the firmware baselines (the state dir's firmware/baselines/, then the shipped ones)."""
    rows = []
    for name in sfw.baseline_names(_dirs(ctx)):
        b = sfw.load_baseline(_dirs(ctx), name)
        rows.append({"name": b.name, "components": ", ".join(f"{c.name} {c.version}" + (" (image)" if c.image else "")
                                                              for c in b.components)})
    emit(rows, fmt, columns=["name", "components"])


def _local_compliance(ctx: CliContext, baseline: str | None, blade: str | None,
                      pool: str | None) -> list[dict[str, Any]]:
    b = sfw.load_baseline(_dirs(ctx), sfw.baseline_name(ctx.store(), baseline, pool))
    target = sfw.targets(ctx.store(), blade=blade, pool=pool)

    async def run() -> list[sfw.BladeCompliance]:
        from appliance.services.hardware import Hardware  # drivers only when BMCs are asked

        async with Hardware(ctx.store(), ctx.box()) as hw:
            await asyncio.to_thread(hw.prefetch, list(target.blades))
            return await sfw.compliance_of(hw, target.blades, b)

    results = asyncio.run(run())
    sfw.record(ctx.store(), results)
    return [r.public() for r in results]


@firmware.command("compliance")
@click.option("--baseline", default=None, help="The baseline (firmware/baselines/NAME.yaml); default: the "
              "one --pool names.")
@click.option("--blade", default=None, help="A blade, or several separated by commas.")
@click.option("--pool", default=None, help="Every blade of this blade pool (spares: every blade).")
@output_option()
@pass_ctx
def compliance(ctx: CliContext, baseline: str | None, blade: str | None, pool: str | None, fmt: str) -> None:
    """Each blade's firmware against a baseline, read from its BMC (Redfish FirmwareInventory)."""
    if not blade and not pool:
        pool = "spares"
    if ctx.remote is not None:
        items = ctx.remote.json("GET", "/firmware/compliance",
                                query={"baseline": baseline, "blade": blade, "pool": pool})["items"]
    else:
        items = _local_compliance(ctx, baseline, blade, pool)
    emit(items, fmt, columns=COLUMNS)
    if fmt == "table":
        good = sum(1 for i in items if i["compliant"])
        named = baseline or (items[0]["baseline"] if items else "the pool's baseline")
        click.echo(f"{good} of {len(items)} blade(s) comply with {named}")


def _step_result(info: JobInfo, name: str) -> dict[str, Any]:
    return next((s.result or {} for s in info.steps if s.name == name), {})


def outcome_rows(info: JobInfo) -> list[dict[str, Any]]:
    """Per blade: compliance before, what the update did, compliance after."""
    before = _step_result(info, "compliance-before").get("before") or {}
    wave = _step_result(info, "update-wave").get("outcome") or {}
    after = _step_result(info, "compliance-after").get("after") or {}
    rows = []
    for blade in before or wave:
        got = wave.get(blade) or {}
        rows.append({"blade": blade, "before": before.get(blade, "-"), "update": got.get("state", "-"),
                     "detail": got.get("detail") or "", "after": after.get(blade, "-")})
    return rows


@firmware.command("update")
@click.option("--baseline", default=None, help="The baseline to bring the blades to; default: the one --pool names.")
@click.option("--blade", default=None, help="A blade, or several separated by commas.")
@click.option("--pool", default=None, help="Every blade of this blade pool (spares: every blade).")
@click.option("--wave", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Blades updated at once; the next ones wait for the whole group.")
@click.option("--failure-budget", "budget", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Failed blades tolerated; once more fail, the wave stops and the rest are skipped.")
@click.option("--no-wait", is_flag=True, help="Submit the job and return.")
@pass_ctx
def update(ctx: CliContext, baseline: str | None, blade: str | None, pool: str | None, wave: int, budget: int,
           no_wait: bool) -> None:
    """Update blades to a baseline: a durable job, one blade or a rolling wave with a failure budget."""
    if ctx.remote is not None:
        from appliance.cli.remote import job_from_public

        info = job_from_public(ctx.remote.json("POST", "/firmware/updates", json_body={
            "baseline": baseline, "blade": blade, "pool": pool, "wave": wave, "failureBudget": budget}))
        source: Any = ctx.remote
    else:
        b = sfw.load_baseline(_dirs(ctx), sfw.baseline_name(ctx.store(), baseline, pool))
        info = sfw.submit_update(ctx.store(), b, sfw.targets(ctx.store(), blade=blade, pool=pool), wave=wave,
                                 budget=budget, created_by=local_who())
        source = JobService(ctx.store())
    if no_wait:
        click.echo(f"job {info.id} submitted: {info.subject}")
        return
    info = follow(source, info.id)
    rows = outcome_rows(info)
    if rows:
        emit(rows, "table", columns=["blade", "update", "before", "after"])
        for row in rows:
            if row["update"] == "failed":
                click.echo(f"{row['blade']} failed: {row['detail']}")
        skipped = [r for r in rows if r["update"] == "skipped"]
        if skipped:
            click.echo(f"skipped ({skipped[0]['detail']}): {', '.join(r['blade'] for r in skipped)}")
    exit_for(info)
