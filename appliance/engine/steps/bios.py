"""Stamp steps for a profile's BIOS settings (``spec.bios``).

check-bios (before anything changes: the chosen blade's registry must know every attribute,
or a blade that cannot take BIOS settings fails the stamp unless ``enforce: false``) →
stage-bios (written as pending settings, before power-on) → … boot … → verify-bios (read
back after the boot: the BIOS took them).
"""

from __future__ import annotations

from typing import Any

from appliance.domain import bios as dbios
from appliance.drivers.protocols import BiosDriver, BmcDriver
from appliance.engine.model import StepContext, StepFailed
from appliance.engine.steps.common import load_profile
from appliance.store import changes as change_records


def _bios_driver(driver: BmcDriver) -> BiosDriver | None:
    return driver if isinstance(driver, BiosDriver) else None


async def _wanted(ctx: StepContext) -> tuple[dict[str, str], bool]:
    profile = await load_profile(ctx)
    return dbios.wanted(profile.spec.bios), dbios.enforced(profile.spec.bios)


async def check_bios(ctx: StepContext) -> dict[str, Any]:
    want, enforce = await _wanted(ctx)
    if not want:
        return {"bios": "none asked for"}
    blade = ctx.data["blade"]
    driver, bmc = ctx.hw.bmc(blade)
    bios = _bios_driver(driver)
    if bios is None:
        if not enforce:
            return {"bios": f"not applied: blade {blade}'s BMC ({driver.name}) cannot set BIOS settings "
                            "and the profile says enforce: false"}
        raise StepFailed(f"profile {ctx.params['profile']} asks for BIOS settings ({', '.join(sorted(want))}) but "
                         f"blade {blade}'s BMC ({driver.name}) cannot set them; use a Redfish blade, or set "
                         "bios.enforce: false to stamp without them")
    _, problems = dbios.plan(want, await bios.bios_registry(bmc))
    if problems:
        raise StepFailed(f"profile {ctx.params['profile']} on blade {blade}: " + "; ".join(problems))
    return {"bios": f"{len(want)} setting(s) known to blade {blade}"}


async def stage_bios(ctx: StepContext) -> dict[str, Any]:
    want, _ = await _wanted(ctx)
    blade = ctx.data["blade"]
    driver, bmc = ctx.hw.bmc(blade)
    bios = _bios_driver(driver)
    if not want or bios is None:
        return {"biosStaged": {}}
    typed, problems = dbios.plan(want, await bios.bios_registry(bmc))
    if problems:   # the blade changed since check-bios (a firmware update, another blade bound)
        raise StepFailed(f"profile {ctx.params['profile']} on blade {blade}: " + "; ".join(problems))
    current = await bios.bios(bmc)
    changes = {k: v for k, v in typed.items() if not dbios.same(v, current.current.get(k))}
    if changes:
        await bios.set_bios(bmc, changes)
        change_records.hardware(ctx, change_records.BIOS, blade, "stage", {k: str(v) for k, v in changes.items()})
    return {"biosStaged": {k: str(v) for k, v in changes.items()}}


async def verify_bios(ctx: StepContext) -> dict[str, Any]:
    want, _ = await _wanted(ctx)
    blade = ctx.data["blade"]
    driver, bmc = ctx.hw.bmc(blade)
    bios = _bios_driver(driver)
    if not want or bios is None:
        return {"biosVerified": False}
    typed, _ = dbios.plan(want, await bios.bios_registry(bmc))
    wrong = dbios.differences(typed, (await bios.bios(bmc)).current)
    if wrong:
        shown = ", ".join(f"{k}={found} (wanted {w})" for k, (w, found) in sorted(wrong.items()))
        raise StepFailed(f"blade {blade} booted without the profile's BIOS settings: {shown}")
    return {"biosVerified": True, "bios": {k: str(v) for k, v in typed.items()}}
