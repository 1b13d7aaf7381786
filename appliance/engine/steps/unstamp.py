"""Unstamp: take a profile down and return its blade to the spares.

begin-release → power-off (confirmed) → clear-identity → park-ports →
revoke-storage → unbind. Forward-only: every step converges, so after a failure
running the release again finishes it. The profile keeps its identities.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from appliance.domain.states import BladeState, ProfileState
from appliance.drivers.protocols import PowerState
from appliance.engine.model import JobKind, Step, StepContext, StepFailed
from appliance.engine.steps.common import (
    blade_row,
    ensure_power,
    live_binding,
    move_blade,
    move_profile,
    profile_row,
)
from appliance.engine.steps.stamp import clear_identity, park_vlans
from appliance.engine.steps.stamp import revoke_storage as revoke_lun_access
from appliance.store.repos.jobs import now
from appliance.store.tables import BladeRow


async def begin_release(ctx: StepContext) -> dict[str, Any]:
    def _begin() -> dict[str, Any]:
        with ctx.store.write() as s:
            prow = profile_row(s, ctx)
            binding = live_binding(s, profile_id=prow.id)
            if binding is None:
                if ctx.data.get("blade"):
                    return {"blade": ctx.data["blade"]}
                raise StepFailed(f"profile {prow.name} is not bound to a blade")
            blade = s.get(BladeRow, binding.blade_id)
            assert blade is not None
            move_profile(prow, ProfileState.RELEASING)
            move_blade(blade, BladeState.RELEASING)
            return {"blade": blade.name, "generation": binding.generation}
    return await ctx.db(_begin)


async def power_off(ctx: StepContext) -> dict[str, Any]:
    return await ensure_power(ctx, ctx.data["blade"], PowerState.OFF, marker="power_off")


async def clear(ctx: StepContext) -> dict[str, Any]:
    await clear_identity(ctx)
    return {"identity": "cleared"}


async def park(ctx: StepContext) -> dict[str, Any]:
    await park_vlans(ctx)
    return {"parkingVlan": ctx.settings.parking_vlan}


async def revoke_storage(ctx: StepContext) -> dict[str, Any]:
    if ctx.hw.storage() is None:
        return {"storage": "no storage driver configured"}
    await revoke_lun_access(ctx)
    return {"storage": "initiator access revoked (the LUN and its data are kept)"}


async def end_binding(ctx: StepContext) -> dict[str, Any]:
    def _end() -> dict[str, Any]:
        with ctx.store.write() as s:
            prow = profile_row(s, ctx)
            binding = live_binding(s, profile_id=prow.id)
            if binding is not None:
                binding.state, binding.ended_at = "ended", now()
            blade = blade_row(s, ctx.data["blade"])
            if blade.state != BladeState.SPARE:
                move_blade(blade, BladeState.SPARE)
            if prow.state != ProfileState.UNASSIGNED:
                move_profile(prow, ProfileState.UNASSIGNED)
            return {"unbound": True}
    return await ctx.db(_end)


UNSTAMP = JobKind(
    name="unstamp",
    rollback=False,
    steps=(
        Step("begin-release", begin_release, attempts=1),
        Step("power-off", power_off, timeout=180),
        Step("clear-identity", clear),
        Step("park-ports", park),
        Step("revoke-storage", revoke_storage),
        Step("unbind", end_binding),
    ),
)

__all__ = ["UNSTAMP", "select"]
