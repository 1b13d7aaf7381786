"""Firmware: the update job, and the stamp's check of a profile's baseline.

firmware-update: check-images → compliance-before → update-wave → compliance-after → conclude.
The wave updates ``wave`` blades at a time; after each group, when the failures so far exceed
``budget``, it stops and the blades not reached are left untouched (``skipped``). A blade being
updated is held in maintenance (no stamp chooses it); a blade holding a profile is skipped.

Per component: the image's SHA-256 is checked by Anvil, the BMC is told to fetch it from boot
HTTP (SimpleUpdate), its task is polled, and the version is read back from FirmwareInventory.
Restart-safe: each blade's outcome and each started task are checkpointed under their own key
(``fw:<blade>``, ``fwTask:<blade>:<component>``), so a resumed step polls a task it started
instead of starting it again, and never redoes a finished blade. The ask itself is checkpointed
first (``fwAsked:<blade>:<component>``): a step stopped between the BMC taking the update and
its handle being kept asks the BMC for the update it is running (the task whose payload targets
that component) before starting one.

check-firmware (stamp, after check-bios, before any change): a blade that does not comply with
the profile's ``firmware.baseline`` is reported (``policy: report``, the default), refused
(``refuse``) or updated first (``update-first``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from appliance.domain import firmware as fw
from appliance.domain.states import BladeState
from appliance.drivers.protocols import UpdateState
from appliance.engine.model import JobKind, Step, StepContext, StepFailed
from appliance.engine.steps.common import blade_row, load_profile, move_blade
from appliance.errors import AnvilError
from appliance.services import firmware as sfw
from appliance.services.blade_pools import PoolFirmware
from appliance.store import changes as change_records

UPDATED, FAILED, SKIPPED, COMPLIANT, UPDATING = "updated", "failed", "skipped", "compliant", "updating"


def _baseline(ctx: StepContext) -> fw.Baseline:
    cached = ctx.memo.get("baseline")
    if isinstance(cached, fw.Baseline):
        return cached
    baseline = fw.from_dict(ctx.params["baseline"])
    ctx.memo["baseline"] = baseline
    return baseline


async def _checked_images(ctx: StepContext, baseline: fw.Baseline) -> dict[str, str]:
    """Every image of the baseline checked against its SHA-256 (once per job run): component -> URL."""
    cached = ctx.memo.get("images")
    if isinstance(cached, dict):
        return cached
    comps = [c for c in baseline.components if c.image]
    if comps and not ctx.settings.boot_url:
        raise StepFailed("boot HTTP has no URL a BMC can fetch images from: set boot.advertise_url "
                         "(boot.listen is 0.0.0.0)")
    if comps and ctx.settings.images_dir is None:
        raise StepFailed("the appliance has no images folder to serve firmware images from")
    images_dir = ctx.settings.images_dir
    urls: dict[str, str] = {}
    for comp in comps:
        assert comp.image and images_dir is not None
        try:
            await asyncio.to_thread(sfw.check_image, images_dir, comp)
        except sfw.ImageProblem as exc:
            raise StepFailed(f"baseline {baseline.name}: {exc}") from None
        urls[comp.name] = sfw.image_url(ctx.settings.boot_url, comp.image)
    ctx.memo["images"] = urls
    return urls


async def update_blade(ctx: StepContext, blade: str, baseline: fw.Baseline) -> str:
    """Bring ``blade`` to ``baseline``: flash each component it runs another version of, then read
    the versions back. Returns what changed; StepFailed saying what went wrong."""
    driver, bmc = ctx.hw.bmc(blade)
    fwd = sfw.firmware_driver(driver)
    if fwd is None:
        raise StepFailed(f"blade {blade}'s BMC ({driver.name}) cannot update firmware")
    items = await fwd.firmware(bmc)
    findings = fw.compliance(baseline, items)
    if fw.compliant(findings):
        return "already compliant"
    todo = fw.updatable(baseline, findings)
    fixed = {c.name for c in todo}
    stuck = [f for f in findings if not f.ok and (f.component not in fixed or f.found is None)]
    if stuck:
        raise StepFailed(f"blade {blade}: " + "; ".join(
            f"{f.component} {'is not reported by the BMC' if f.found is None else f'runs {f.found}'} "
            f"(want {f.wanted}) and the baseline gives no image for it" if f.component not in fixed
            else f"{f.component} is not reported by the BMC" for f in stuck))
    urls = await _checked_images(ctx, baseline)
    by_name = {i.component.lower(): i for i in items}
    was = {f.component: f.found for f in findings}
    for comp in todo:
        item = by_name[comp.name.lower()]
        if not item.updateable:
            raise StepFailed(f"blade {blade}: its BMC says {comp.name} cannot be updated")
        key, asked = f"fwTask:{blade}:{comp.name}", f"fwAsked:{blade}:{comp.name}"
        handle = ctx.data.get(key)
        if not isinstance(handle, str) and ctx.data.get(asked):
            # Stopped after asking the BMC and before keeping its answer: the BMC may be flashing
            # it already (a second SimpleUpdate would flash it twice), so look for that task first.
            handle = await fwd.running_update(bmc, item)
            if handle is not None:
                await ctx.checkpoint({key: handle})
                ctx.note(f"{blade}: {comp.name} update to {comp.version} found running on the BMC")
        if not isinstance(handle, str):
            await ctx.progress(f"{blade}: {comp.name} {item.version} -> {comp.version}")
            await ctx.checkpoint({asked: True})
            handle = await fwd.start_update(bmc, item, urls[comp.name])
            await ctx.checkpoint({key: handle})
            ctx.note(f"{blade}: {comp.name} update to {comp.version} started")
        deadline = time.monotonic() + ctx.settings.firmware_timeout
        while True:
            progress = await fwd.update_progress(bmc, handle)
            if progress.state is UpdateState.DONE:
                break
            if progress.state is UpdateState.FAILED:
                raise StepFailed(f"blade {blade}: {comp.name} update to {comp.version} failed: {progress.message}")
            if time.monotonic() >= deadline:
                raise StepFailed(f"blade {blade}: {comp.name} update did not finish within "
                                 f"{ctx.settings.firmware_timeout:g} s")
            await asyncio.sleep(ctx.settings.firmware_poll)
        change_records.hardware(ctx, change_records.FIRMWARE, f"{blade}:{comp.name}", "update",
                                {"version": comp.version, "was": was.get(comp.name)}, tenant=None)
    after = fw.compliance(baseline, await fwd.firmware(bmc))
    if not fw.compliant(after):
        raise StepFailed(f"blade {blade}: the BMC finished the update but reports {fw.summary(after)}")
    return ", ".join(f"{c.name} {was.get(c.name)} -> {c.version}" for c in todo)


# ---- the firmware-update job -----------------------------------------------------------------------

def _blade_state(ctx: StepContext, blade: str) -> str | None:
    got = ctx.data.get(f"fw:{blade}")
    return str(got["state"]) if isinstance(got, dict) else None


async def check_images(ctx: StepContext) -> dict[str, Any]:
    baseline = _baseline(ctx)
    urls = await _checked_images(ctx, baseline)
    return {"images": urls, "blades": len(ctx.params["blades"])}


async def _compliance(ctx: StepContext) -> dict[str, str]:
    results = await sfw.compliance_of(ctx.hw, ctx.params["blades"], _baseline(ctx))
    await ctx.db(lambda: sfw.record(ctx.store, results))
    return {r.blade: r.summary for r in results}


async def compliance_before(ctx: StepContext) -> dict[str, Any]:
    before = await _compliance(ctx)
    return {"before": before, "compliantBefore": sum(v == "compliant" for v in before.values())}


def _hold(ctx: StepContext, blade: str) -> str:
    """Take a spare blade out of placement for its update: ``held``, ``as-is`` (in maintenance
    or failed already), or why it is skipped."""
    with ctx.store.write() as s:
        row = blade_row(s, blade)
        if row.state == BladeState.SPARE.value:
            move_blade(row, BladeState.MAINTENANCE)
            return "held"
        if row.state in (BladeState.MAINTENANCE.value, BladeState.FAILED.value):
            return "as-is"
        return f"blade is {row.state}: release its profile first"


def _unhold(ctx: StepContext, blade: str) -> None:
    with ctx.store.write() as s:
        row = blade_row(s, blade)
        if row.state == BladeState.MAINTENANCE.value:
            move_blade(row, BladeState.SPARE)


async def _one(ctx: StepContext, blade: str, baseline: fw.Baseline) -> bool:
    """Update one blade of the wave; False when it failed."""
    key = f"fw:{blade}"
    held = (ctx.data.get(key) or {}).get("held")
    if held is None:
        how = await ctx.db(lambda: _hold(ctx, blade))
        if how not in ("held", "as-is"):
            await ctx.checkpoint({key: {"state": SKIPPED, "detail": how}})
            return True
        held = how == "held"
        await ctx.checkpoint({key: {"state": UPDATING, "held": held}})
    try:
        detail = await update_blade(ctx, blade, baseline)
        state = COMPLIANT if detail == "already compliant" else UPDATED
    except AnvilError as exc:
        state, detail = FAILED, str(exc)
    if held:
        await ctx.db(lambda: _unhold(ctx, blade))
    await ctx.checkpoint({key: {"state": state, "detail": detail, "held": held}})
    ctx.note(f"{blade}: {state}: {detail}")
    return state != FAILED


async def update_wave(ctx: StepContext) -> dict[str, Any]:
    baseline = _baseline(ctx)
    blades: list[str] = list(ctx.params["blades"])
    wave, budget = int(ctx.params["wave"]), int(ctx.params["budget"])
    failures = sum(_blade_state(ctx, b) == FAILED for b in blades)
    todo = [b for b in blades if _blade_state(ctx, b) in (None, UPDATING)]
    stopped = ""
    for start in range(0, len(todo), wave):
        if failures > budget:
            break
        group = todo[start:start + wave]
        await ctx.progress(f"wave {start // wave + 1}: {', '.join(group)}")
        ok = await asyncio.gather(*(_one(ctx, b, baseline) for b in group))
        failures += sum(not x for x in ok)
    if failures > budget:
        stopped = f"stopped: {failures} failure(s) exceed the failure budget of {budget}"
        left = {f"fw:{b}": {"state": SKIPPED, "detail": f"not reached: the wave {stopped}"}
                for b in blades if _blade_state(ctx, b) in (None, UPDATING)}
        if left:
            await ctx.checkpoint(left)
    outcome = {b: {"state": _blade_state(ctx, b) or SKIPPED, "detail": (ctx.data.get(f"fw:{b}") or {}).get("detail")}
               for b in blades}
    return {"outcome": outcome, "stopped": stopped, "failures": failures}


async def compliance_after(ctx: StepContext) -> dict[str, Any]:
    after = await _compliance(ctx)
    return {"after": after, "compliantAfter": sum(v == "compliant" for v in after.values())}


async def conclude(ctx: StepContext) -> dict[str, Any]:
    """The job fails when a blade failed (or the wave stopped), after the compliance it left is recorded."""
    outcome = {b: _blade_state(ctx, b) or SKIPPED for b in ctx.params["blades"]}
    failed = sorted(b for b, s in outcome.items() if s == FAILED)
    skipped = sorted(b for b, s in outcome.items() if s == SKIPPED)
    if failed or ctx.data.get("stopped"):
        why = f"wave {ctx.data['stopped']}" if ctx.data.get("stopped") else "some blades failed"
        raise StepFailed(f"firmware update to {_baseline(ctx).name}: {why}; failed: {', '.join(failed) or '-'}; "
                         f"skipped: {', '.join(skipped) or '-'}")
    return {"updated": sum(s == UPDATED for s in outcome.values()), "skipped": len(skipped)}


FIRMWARE_UPDATE = JobKind(
    name="firmware-update",
    steps=(
        Step("check-images", check_images, attempts=1, timeout=600),
        Step("compliance-before", compliance_before, timeout=300),
        Step("update-wave", update_wave, timeout=24 * 3600, attempts=3),
        Step("compliance-after", compliance_after, timeout=300),
        Step("conclude", conclude, attempts=1),
    ),
    rollback=False,   # a flashed component is not un-flashed; running the job again converges
)


# ---- the stamp's check -------------------------------------------------------------------------

def _pool_baseline(ctx: StepContext, blade: str) -> PoolFirmware | None:
    """The baseline of the pool the stamp chose from, else of the pools ``blade`` is in; StepFailed
    when those pools disagree (the stamp cannot tell which one applies)."""
    from appliance.services.blade_pools import DEFAULT_POOL, blade_firmware, pool_firmware

    with ctx.store.read() as s:
        pool = ctx.params.get("pool") or DEFAULT_POOL
        if pool != DEFAULT_POOL:
            named = pool_firmware(s, pool)
            if named is not None:
                return named
        found = blade_firmware(s, blade)
    if len({(f.baseline, f.policy) for f in found}) > 1:
        raise StepFailed(f"blade {blade} is in blade pools naming different firmware: " + ", ".join(
            f"{f.pool} ({f.baseline}, {f.policy})" for f in found) + "; assign from one of them (--pool) or "
            "name a baseline in the profile")
    return found[0] if found else None


async def check_firmware(ctx: StepContext) -> dict[str, Any]:
    profile = await load_profile(ctx)
    blade = ctx.data["blade"]
    want = profile.spec.firmware
    whose = f"profile {ctx.params['profile']}"
    name: str
    policy: str
    if want is not None:
        name, policy = want.baseline, want.policy
    else:
        pooled = await ctx.read(lambda: _pool_baseline(ctx, blade))
        if pooled is None:
            return {"firmware": "no baseline asked for"}
        name, policy, whose = pooled.baseline, pooled.policy, f"blade pool {pooled.pool}"
    enforce = policy != "report"
    try:
        baseline = await ctx.read(lambda: sfw.load_baseline(ctx.settings.baselines, name))
    except AnvilError as exc:
        if not enforce:
            return {"firmware": f"not checked: {exc}"}
        raise StepFailed(f"{whose}: firmware: {exc}") from None
    found = await sfw.read_compliance(ctx.hw, blade, baseline)
    await ctx.db(lambda: sfw.record(ctx.store, [found]))
    if found.error:
        if not enforce:
            return {"firmware": f"not checked: blade {blade}: {found.error}"}
        raise StepFailed(f"{whose} needs firmware baseline {baseline.name} but blade "
                         f"{blade} cannot say what it runs: {found.error}")
    if found.compliant:
        return {"firmware": f"blade {blade} complies with {baseline.name}"}
    if not enforce:
        return {"firmware": f"blade {blade} does not comply with {baseline.name}: {found.summary} "
                            "(policy: report)"}
    if policy == "refuse":
        raise StepFailed(f"blade {blade} does not comply with firmware baseline {baseline.name}: {found.summary}; "
                         f"{whose} says policy: refuse (update-first would update it)")
    detail = await update_blade(ctx, blade, baseline)
    await ctx.db(lambda: sfw.record(ctx.store, [sfw.BladeCompliance(blade, baseline.name, tuple(
        fw.Finding(c.name, c.version, c.version) for c in baseline.components))]))
    return {"firmware": f"blade {blade} updated to {baseline.name}: {detail}"}
