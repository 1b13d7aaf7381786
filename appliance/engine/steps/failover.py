"""Failover: fence the failed blade, then bring the profile up on a spare of its domain.

fence → choose-spare → bind → set-vlans → grant-storage → apply-identity → set-boot →
power-on → await-boot → activate. The last eight are the stamp's own steps; what is new
is the fence, which must be confirmed before anything touches a spare (never two live
blades for one profile), and the choice of spare by the domain's plan (priority first;
the rest wait in line, visibly). Each step also writes the failover record's timeline.

Fencing, in order: power off through the BMC, confirmed by reading it back; else shut
every cabled switch port (and revoke the LUN access of a SAN-booted profile), confirmed
by reading them back; else the profile needs an operator, and the step waits for
``anvil failover confirm-fenced BLADE`` (the ``fence-confirmed`` job event).
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.boot.tokens import BOOT, open_attempt
from appliance.domain.failover import Action, FailoverEvent, FailoverState, FenceMethod, Policy, decide
from appliance.domain.profile import Profile
from appliance.domain.states import BladeState, ProfileState
from appliance.drivers.protocols import PowerAction, PowerState
from appliance.engine.model import JobKind, Step, StepContext, StepFailed, StepFn
from appliance.engine.steps.common import (
    blade_row,
    cabled_ports,
    live_binding,
    load_profile,
    move_blade,
    move_profile,
)
from appliance.engine.steps.stamp import (
    activate,
    apply_identity,
    await_boot,
    bind,
    candidates,
    clear_identity,
    grant_storage,
    lun_ref,
    park_vlans,
    power_off_undo,
    power_on,
    revoke_storage,
    set_boot,
    set_vlans,
    unbind,
)
from appliance.errors import AnvilError
from appliance.monitor.webhook import FAILOVER_FINISHED, FAILOVER_STARTED
from appliance.services.failover import advance_record, append_event, plan_for_domain
from appliance.store.tables import (
    BindingRow,
    BladeRow,
    BootTokenRow,
    FailoverDomainRow,
    FailoverRow,
    JobEventRow,
    ProfileRow,
)

DEFAULT_POOL = "spares"
WAIT_FOREVER = 7 * 24 * 3600.0   # an operator's confirmation or a new spare may take days


def _record(s: Session, ctx: StepContext) -> FailoverRow:
    row = s.get(FailoverRow, int(ctx.params["failover"]))
    if row is None:
        raise StepFailed(f"failover #{ctx.params['failover']} no longer exists")
    return row


def _notify(ctx: StepContext, event: str, data: dict[str, Any]) -> None:
    notifier = ctx.hw.notifier()
    if notifier is not None:
        who = f"{ctx.params['tenant']}/{ctx.params['profile']}"
        notifier.notify(str(ctx.params["domain"]), event, {"failover": ctx.params["failover"], "profile": who,
                                                            **data})


# ---- restart (policy restart) --------------------------------------------------------------


async def restart(ctx: StepContext) -> dict[str, Any]:
    """Policy ``restart``: power-cycle the same blade first, up to the domain's attempts; a boot
    callback of the binding after the cycle ends the failover there (the other steps then
    pass). Without an answering BMC, or when the cycles did not help, the profile moves."""
    if ctx.params.get("policy") != Policy.RESTART.value:
        return {"restart": "not the policy"}

    def _facts() -> tuple[str | None, int, int | None]:
        with ctx.store.read() as s:
            row = _record(s, ctx)
            domain = s.scalar(select(FailoverDomainRow).where(FailoverDomainRow.name == row.domain))
            prow = s.get(ProfileRow, row.profile_id) if row.profile_id is not None else None
            binding = live_binding(s, profile_id=prow.id) if prow is not None else None
            return row.from_blade, domain.restart_attempts if domain else 1, binding.id if binding else None

    blade, attempts, binding_id = await ctx.read(_facts)
    if blade is None or binding_id is None:
        return {"restart": "no blade to restart"}
    driver, bmc = ctx.hw.bmc(blade)
    done = int(ctx.data.get("restarts", 0))
    while True:
        try:
            async with asyncio.timeout(ctx.settings.fence_timeout):
                power = await driver.get_power(bmc)
            reachable = True
        except (AnvilError, TimeoutError):
            power, reachable = None, False
        decision = decide(Policy.RESTART, restarts_done=done, restart_attempts=attempts, bmc_reachable=reachable)
        if decision.action is not Action.RESTART:
            ctx.note(decision.reason)
            return {"restart": decision.reason}
        done += 1
        cycled_at = datetime.now(UTC)
        await ctx.checkpoint({"restarts": done})
        await ctx.db(functools.partial(_restarting, ctx, decision.reason))
        # The restarted OS calls back with a token of a boot attempt this job opens (DESIGN §8).
        await ctx.db(functools.partial(_open_restart_attempt, ctx, binding_id))
        await ctx.progress(f"{decision.reason} ({blade})")
        try:
            await driver.set_power(bmc, PowerAction.RESET if power is PowerState.ON else PowerAction.ON)
        except AnvilError as exc:
            ctx.note(f"power cycle of {blade} failed: {exc}")
            continue
        if await _booted_since(ctx, binding_id, cycled_at):
            await ctx.db(lambda: _restarted(ctx, blade))
            _notify(ctx, FAILOVER_FINISHED, {"state": "succeeded", "blade": blade, "restarted": True})
            return {"restarted": True, "blade": blade}


def _restarting(ctx: StepContext, why: str) -> None:
    with ctx.store.write() as s:
        row = _record(s, ctx)
        if row.state == FailoverState.DETECTED.value:
            advance_record(row, FailoverState.RESTARTING, job_id=ctx.job_id, event="restarting", detail=why)


def _open_restart_attempt(ctx: StepContext, binding_id: int) -> None:
    assert ctx.settings.boot_key is not None    # the Engine always sets one
    with ctx.store.write() as s:
        binding = s.get(BindingRow, binding_id)
        if binding is None or binding.state != "live":
            raise StepFailed(f"binding {binding_id} ended while its blade was being restarted")
        open_attempt(s, binding, ctx.settings.boot_key, job_id=ctx.job_id)


def _restarted(ctx: StepContext, blade: str) -> None:
    with ctx.store.write() as s:
        row = _record(s, ctx)
        append_event(row, FailoverEvent.RESTARTED.value, detail=blade, once=True)
        if row.state != FailoverState.SUCCEEDED.value:
            advance_record(row, FailoverState.SUCCEEDED, event=FailoverEvent.ACTIVE.value, detail=blade,
                           to_blade=blade)


async def _booted_since(ctx: StepContext, binding_id: int, since: datetime) -> bool:
    """The binding's boot token was spent after ``since``: the OS came back and called in."""
    def _seen() -> bool:
        with ctx.store.read() as s:
            used = s.scalars(select(BootTokenRow.used_at).where(BootTokenRow.binding_id == binding_id,
                                                                BootTokenRow.kind == BOOT,
                                                                BootTokenRow.used_at.is_not(None))).all()
            return any(_utc(u) >= since for u in used if u is not None)

    deadline = time.monotonic() + ctx.settings.boot_timeout
    for _ in range(int(ctx.settings.boot_timeout / ctx.settings.boot_poll) + 2):
        if await ctx.read(_seen):
            return True
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(ctx.settings.boot_poll)
    return False


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def unless_restarted(fn: StepFn) -> StepFn:
    """The step, skipped when the restart step already brought the profile back in place."""
    async def run(ctx: StepContext) -> dict[str, Any] | None:
        if ctx.data.get("restarted"):
            return {"skipped": "restarted in place"}
        return await fn(ctx)
    return run


# ---- fence ---------------------------------------------------------------------------------


async def _power_fence(ctx: StepContext, blade: str) -> str | None:
    """Power the old blade off and read it back as off; None when done, else why not."""
    driver, bmc = ctx.hw.bmc(blade)
    deadline = time.monotonic() + ctx.settings.fence_timeout
    sent = False
    try:
        async with asyncio.timeout(ctx.settings.fence_timeout + 1.0):
            while True:
                if await driver.get_power(bmc) is PowerState.OFF:
                    return None
                if not sent:
                    await driver.set_power(bmc, PowerAction.OFF)
                    sent = True
                    ctx.note(f"power off sent to {blade} (fence)")
                if time.monotonic() >= deadline:
                    return f"the BMC did not read back off within {ctx.settings.fence_timeout:g} s"
                await asyncio.sleep(ctx.settings.poll_interval)
    except TimeoutError:
        return f"the BMC did not answer within {ctx.settings.fence_timeout:g} s"
    except AnvilError as exc:
        return str(exc)


async def _isolation_fence(ctx: StepContext, blade: str, profile: Profile) -> str | None:
    """Shut every cabled port of the old blade (and revoke an iSCSI boot's LUN access), read back.

    Not for a profile with FC HBAs: the fabric is not behind the Ethernet ports and Anvil has
    no zoning to revoke, so the blade could still write its LUNs; an operator must cut it off.
    """
    if profile.spec.identity.hbas:
        names = ", ".join(h.name for h in profile.spec.identity.hbas)
        return f"the profile's FC HBAs ({names}) reach the SAN past the switch ports, and no FC zoning is managed"

    def _ports() -> list[Any]:
        with ctx.store.read() as s:
            return cabled_ports(s, blade_row(s, blade).id)

    ports = [p for p in await ctx.read(_ports) if p is not None]
    if not ports:
        return "the blade has no cabled switch port to shut"
    try:
        async with asyncio.timeout(ctx.settings.fence_timeout + 1.0):
            for port in ports:
                driver, ref = ctx.hw.switch(port.switch)
                now = await driver.get_port(ref, port.port)
                await driver.set_port(ref, port.port, replace(now, up=False))
                if (await driver.get_port(ref, port.port)).up:
                    return f"port {port.switch}:{port.port} still reads up"
            src = profile.spec.boot.source if profile.spec.boot else None
            initiator = profile.spec.identity.iscsiInitiator
            storage = ctx.hw.storage()
            if src is not None and src.type == "iscsi":
                if storage is None or not initiator:
                    return "the profile boots from iSCSI and its LUN access cannot be revoked here"
                await storage.unbind(lun_ref(src), initiator)
                if initiator in await storage.bindings(lun_ref(src)):
                    return "the LUN still lists the profile's initiator"
    except TimeoutError:
        return f"the switch did not answer within {ctx.settings.fence_timeout:g} s"
    except AnvilError as exc:
        return str(exc)
    return None


async def fence(ctx: StepContext) -> dict[str, Any]:
    profile = await load_profile(ctx)

    def _begin() -> tuple[str, str | None, str, bool]:
        with ctx.store.write() as s:
            row = _record(s, ctx)
            if FailoverState(row.state) in (FailoverState.DETECTED, FailoverState.RESTARTING):
                advance_record(row, FailoverState.FENCING, job_id=ctx.job_id)
            return row.state, row.from_blade, row.reason or "failure", row.drill

    state, blade, reason, planned = await ctx.db(_begin)
    if state == FailoverState.FENCING.value:
        _notify(ctx, FAILOVER_STARTED, {"blade": blade, "reason": reason})
    if state not in (FailoverState.FENCING.value, FailoverState.NEEDS_OPERATOR.value):
        return {"fence": "already fenced", "oldBlade": blade}    # a resumed job
    method: FenceMethod | None = None
    why: list[str] = []
    if blade is None:
        method = FenceMethod.POWER     # nothing was running the profile
    elif state == FailoverState.FENCING.value:
        await ctx.progress(f"fencing {blade}: power off, confirmed by the BMC")
        problem = await _power_fence(ctx, blade)
        if problem is None:
            method = FenceMethod.POWER
            # A dead blade's iSCSI session can linger on the target; revoking access closes it.
            await _revoke_quietly(ctx, profile)
            if planned:
                # The blade stays a spare: it must not keep the profile's identity (a VM slot
                # would otherwise hold the profile's UUID and MACs while another blade runs it).
                await _clear_identity_quietly(ctx, blade)
        else:
            why.append(f"power: {problem}")
            await ctx.progress(f"fencing {blade}: shutting its switch ports")
            problem = await _isolation_fence(ctx, blade, profile)
            if problem is None:
                method = FenceMethod.ISOLATION
            else:
                why.append(f"isolation: {problem}")
    if method is None:
        assert blade is not None
        await _wait_for_operator(ctx, blade, "; ".join(why))
        method = FenceMethod.OPERATOR
    return await ctx.db(lambda: _fenced(ctx, blade, method, reason))


async def _revoke_quietly(ctx: StepContext, profile: Profile) -> None:
    src = profile.spec.boot.source if profile.spec.boot else None
    storage, initiator = ctx.hw.storage(), profile.spec.identity.iscsiInitiator
    if storage is not None and src is not None and src.type == "iscsi" and initiator and src.lun >= 1:
        try:
            await storage.unbind(lun_ref(src), initiator)
        except AnvilError as exc:
            ctx.note(f"LUN access of the fenced blade not revoked ({exc}); the new grant will")


async def _clear_identity_quietly(ctx: StepContext, blade: str) -> None:
    try:
        driver, bmc = ctx.hw.bmc(blade)
        if (await driver.capabilities(bmc)).any:
            await driver.clear(bmc)
    except AnvilError as exc:
        ctx.note(f"virtual identity of {blade} not cleared ({exc}); its next stamp replaces it")


async def _wait_for_operator(ctx: StepContext, blade: str, why: str) -> None:
    def _mark() -> bool:
        with ctx.store.write() as s:
            row = _record(s, ctx)
            if row.state == FailoverState.FENCING.value:
                advance_record(row, FailoverState.NEEDS_OPERATOR, reason=f"no fence could be confirmed: {why}",
                               event=FailoverEvent.FENCE_UNCONFIRMED.value, detail=why)
                prow = s.get(ProfileRow, row.profile_id) if row.profile_id is not None else None
                if prow is not None and prow.state != ProfileState.NEEDS_OPERATOR.value:
                    if prow.state == ProfileState.ACTIVE.value:
                        move_profile(prow, ProfileState.FAILED)
                    move_profile(prow, ProfileState.NEEDS_OPERATOR)
                return True
            return False

    if await ctx.db(_mark):
        _notify(ctx, "failover.needs-operator", {"blade": blade, "reason": why})
    await ctx.progress(f"needs operator: {blade} could not be fenced ({why}); after cutting it off by hand, "
                       f"run: anvil failover confirm-fenced {blade}")

    def _confirmed() -> bool:
        with ctx.store.read() as s:
            return s.scalar(select(JobEventRow.id).where(JobEventRow.job_id == ctx.job_id,
                                                         JobEventRow.kind == "fence-confirmed")) is not None

    deadline = time.monotonic() + WAIT_FOREVER
    for _ in range(int(WAIT_FOREVER)):   # one check a second, bounded by the step's own timeout too
        if await ctx.read(_confirmed):
            return
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(1.0)
    raise StepFailed(f"{blade} was never confirmed fenced")


def _fenced(ctx: StepContext, blade: str | None, method: FenceMethod, reason: str) -> dict[str, Any]:
    with ctx.store.write() as s:
        row = _record(s, ctx)
        if row.state in (FailoverState.FENCING.value, FailoverState.NEEDS_OPERATOR.value):
            advance_record(row, FailoverState.FENCED, fence=method,
                           detail=f"{blade or 'no blade'} by {method.value}")
        prow = s.get(ProfileRow, row.profile_id) if row.profile_id is not None else None
        if prow is None:
            raise StepFailed(f"profile {row.tenant}/{row.profile} no longer exists")
        if blade is not None:
            old = live_binding(s, profile_id=prow.id)
            brow = s.scalar(select(BladeRow).where(BladeRow.name == blade))
            if old is not None and brow is not None and old.blade_id == brow.id:
                old.state, old.ended_at = "ended", datetime.now(UTC)
            if brow is not None and brow.state != BladeState.FAILED.value:
                if brow.state != BladeState.FENCED.value:
                    move_blade(brow, BladeState.FENCED)
                if row.drill:
                    # A drill's blade is healthy: it goes back to the spares (the drill moves back to it).
                    move_blade(brow, BladeState.SPARE)
                    brow.state_reason = None
                else:
                    # Out of service for repair; only an admin returns it to the spares.
                    move_blade(brow, BladeState.FAILED)
                    brow.state_reason = f"failover #{row.id}: {reason}; fenced by {method.value}"
        if prow.state in (ProfileState.ACTIVE.value, ProfileState.STAMPING.value):
            move_profile(prow, ProfileState.FAILED)
        return {"fence": method.value, "oldBlade": blade}


# ---- choose a spare --------------------------------------------------------------------------


def _fitting(s: Session, row: Any, pool: str) -> list[str]:
    """Spare blades of ``pool`` the failover's profile fits on, best first (as placement ranks them)."""
    from appliance.domain.placement import place
    from appliance.domain.profile import from_dict
    from appliance.services.placement import requirements

    prow = s.get(ProfileRow, row.profile_id) if row.profile_id is not None else None
    if prow is None:
        return []
    found = [c for c in candidates(s, pool=pool, tenant=row.tenant) if c.bound_to is None]
    return list(place(requirements(from_dict(prow.document)), found).chosen)


def _why_not(s: Session, row: Any, blade: str) -> str:
    from appliance.domain.profile import from_dict
    from appliance.services.placement import dry_run

    prow = s.get(ProfileRow, row.profile_id) if row.profile_id is not None else None
    if prow is None:
        return "the profile is gone"
    pl = dry_run(s, from_dict(prow.document), blade=blade, tenant=row.tenant)
    return "; ".join(r.reason for r in pl.rejected) or "it is taken"


async def choose_spare(ctx: StepContext) -> dict[str, Any]:
    key = f"{ctx.params['tenant']}/{ctx.params['profile']}"
    deadline = time.monotonic() + WAIT_FOREVER

    def _choose() -> tuple[str | None, str]:
        with ctx.store.write() as s:
            row = _record(s, ctx)
            if row.state in (FailoverState.MOVING.value, FailoverState.BOOTING.value) and row.to_blade:
                return row.to_blade, ""
            wanted = ctx.params.get("to")
            if ctx.params.get("exact") and wanted:
                # A planned move (anvil failover move): exactly that blade, physical or virtual.
                if wanted not in _fitting(s, row, DEFAULT_POOL):
                    raise StepFailed(f"{wanted} cannot take {key}: {_why_not(s, row, wanted)}")
                advance_record(row, FailoverState.MOVING, to_blade=wanted,
                               event=FailoverEvent.SPARE_CHOSEN.value, detail=wanted)
                return wanted, ""
            plan = plan_for_domain(s, row.domain)
            blade = plan.blade_for(key)
            if blade is not None and plan.waiting and not row.drill:
                seen = row.detected_at if row.detected_at.tzinfo else row.detected_at.replace(tzinfo=UTC)
                if (datetime.now(UTC) - seen).total_seconds() < ctx.settings.spare_settle:
                    # Not yet: a failure seen a moment later may outrank this profile.
                    return None, (f"{len(plan.waiting) + len(plan.assignments)} failed profiles for "
                                  f"{len(plan.assignments)} spares: ranking them by priority")
            if row.drill and blade is not None:
                # Only blades of the domain's pool that meet the profile's requirements, best
                # first, and none the plan gives another profile.
                others = {a.blade for a in plan.assignments if a.profile != key}
                fits = [b for b in _fitting(s, row, str(ctx.params.get("pool") or "spares")) if b not in others]
                if wanted and wanted in fits:
                    blade = wanted      # moving back: the blade the drill came from, free again
                elif blade == row.from_blade:
                    # A drill must really move: never "back" onto the blade it just left.
                    blade = next((b for b in fits if b != row.from_blade), None)
            if blade is not None:
                advance_record(row, FailoverState.MOVING, to_blade=blade,
                               event=FailoverEvent.SPARE_CHOSEN.value, detail=blade)
                return blade, ""
            why = next((w.reason for w in plan.waiting if w.profile == key), "waiting for a spare")
            if row.state != FailoverState.WAITING.value:
                advance_record(row, FailoverState.WAITING, reason=why, detail=why)
            elif row.reason != why:
                row.reason = why
            return None, why

    for _ in range(int(WAIT_FOREVER)):
        blade, why = await ctx.db(_choose)
        if blade is not None:
            return {"blade": blade}
        await ctx.progress(why)
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(ctx.settings.spare_poll)
    raise StepFailed(f"no spare for {key}")


async def give_back_spare(ctx: StepContext) -> None:
    """Undo of choose-spare: the move failed; the record says so (the profile stays fenced off)."""
    def _fail() -> None:
        with ctx.store.write() as s:
            row = _record(s, ctx)
            if row.state not in (FailoverState.SUCCEEDED.value, FailoverState.FAILED.value,
                                 FailoverState.CANCELLED.value):
                advance_record(row, FailoverState.FAILED, reason=f"the move to {row.to_blade} failed; see job "
                                                                  f"{ctx.job_id}")
    await ctx.db(_fail)
    _notify(ctx, FAILOVER_FINISHED, {"state": "failed"})


# ---- the stamp's steps, with the record's timeline --------------------------------------------


async def power_on_spare(ctx: StepContext) -> dict[str, Any]:
    result = await power_on(ctx)

    def _mark() -> None:
        with ctx.store.write() as s:
            row = _record(s, ctx)
            if row.state == FailoverState.MOVING.value:
                advance_record(row, FailoverState.BOOTING, event=FailoverEvent.POWERED_ON.value,
                               detail=ctx.data["blade"])
    await ctx.db(_mark)
    return result


async def await_boot_spare(ctx: StepContext) -> dict[str, Any]:
    result = await await_boot(ctx)

    def _mark() -> None:
        with ctx.store.write() as s:
            append_event(_record(s, ctx), FailoverEvent.BOOTED.value, detail=str(result.get("booted")), once=True)
    await ctx.db(_mark)
    return result


async def activate_spare(ctx: StepContext) -> dict[str, Any]:
    result = await activate(ctx)

    def _done() -> None:
        with ctx.store.write() as s:
            row = _record(s, ctx)
            if row.state != FailoverState.SUCCEEDED.value:
                advance_record(row, FailoverState.SUCCEEDED, event=FailoverEvent.ACTIVE.value,
                               detail=ctx.data["blade"])
    await ctx.db(_done)
    _notify(ctx, FAILOVER_FINISHED, {"state": "succeeded", "blade": ctx.data["blade"]})
    return result


FAILOVER = JobKind(
    name="failover",
    steps=(
        Step("restart", restart, timeout=WAIT_FOREVER, attempts=3),
        Step("fence", unless_restarted(fence), timeout=WAIT_FOREVER, attempts=3),
        Step("choose-spare", unless_restarted(choose_spare), undo=give_back_spare, timeout=WAIT_FOREVER,
             attempts=3),
        Step("bind", unless_restarted(bind), undo=unbind, attempts=1),
        Step("set-vlans", unless_restarted(set_vlans), undo=park_vlans),
        Step("grant-storage", unless_restarted(grant_storage), undo=revoke_storage),
        Step("apply-identity", unless_restarted(apply_identity), undo=clear_identity),
        Step("set-boot", unless_restarted(set_boot)),
        Step("power-on", unless_restarted(power_on_spare), undo=power_off_undo, timeout=180),
        Step("await-boot", unless_restarted(await_boot_spare), timeout=600),
        Step("activate", unless_restarted(activate_spare)),
    ),
)
