"""Stamp: bind a profile to a spare blade and bring it up as that server.

check-requirements → choose-blade → check-bios → check-firmware → allocate-identities → bind → set-vlans →
grant-storage → apply-identity → stage-bios → set-boot → power-on → await-boot → verify-bios
→ activate.
A fatal error undoes the completed steps in reverse.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.boot.tokens import open_attempt
from appliance.domain.placement import Placement
from appliance.domain.profile import Profile, from_dict, pool_refs
from appliance.domain.profile.model import IscsiSource
from appliance.domain.states import BladeState, ProfileState
from appliance.drivers.protocols import (
    BootDevice,
    BootMode,
    BootSetting,
    DiskSpec,
    FcBoot,
    IscsiBoot,
    LunRef,
    NicVlans,
    PortConfig,
    PowerState,
    StorageDriver,
    VirtualIdentities,
)
from appliance.engine.model import JobKind, NoSpareBlade, Step, StepContext, StepFailed
from appliance.engine.steps import bios, firmware
from appliance.engine.steps.common import (
    blade_row,
    cabled_ports,
    ensure_power,
    live_binding,
    load_profile,
    move_blade,
    move_profile,
    next_generation,
    profile_row,
    set_ports,
)
from appliance.errors import NotFound
from appliance.services import placement
from appliance.services.blade_pools import DEFAULT_POOL
from appliance.services.profiles import ProfileService
from appliance.services.racks import rack_down_reason
from appliance.sites.lease import HeldElsewhere, check_stampable
from appliance.store import changes
from appliance.store.tables import BindingRow, BladeRow, JobEventRow

NO_SPARE = placement.NO_SPARE
requirements = placement.requirements
candidates = placement.candidates
_explain = placement.explain


def dry_run(s: Session, profile: Profile, *, blade: str | None = None, pool: str = DEFAULT_POOL,
            tenant: str | None = None) -> Placement:
    """:func:`appliance.services.placement.dry_run` of spare blades only, failing the step for a
    blade not enrolled."""
    try:
        return placement.dry_run(s, profile, blade=blade, pool=pool, tenant=tenant, spare_only=True)
    except NotFound:
        raise StepFailed(f"blade {blade!r} is not enrolled") from None


async def check_requirements(ctx: StepContext) -> dict[str, Any]:
    def _check() -> dict[str, Any]:
        with ctx.store.read() as s:
            row = profile_row(s, ctx)
            binding = live_binding(s, profile_id=row.id)
            if binding is not None and binding.job_id != ctx.job_id:
                blade = s.get(BladeRow, binding.blade_id)
                raise StepFailed(f"profile {row.name} is already bound to blade {blade.name if blade else '?'}")
            if row.state not in (ProfileState.UNASSIGNED, ProfileState.FAILED, ProfileState.STAMPING):
                raise StepFailed(f"profile {row.name} is {row.state}")
            try:
                check_stampable(row)
            except HeldElsewhere as exc:
                raise StepFailed(str(exc)) from None
            req = requirements(from_dict(row.document))
            return {"requirements": {"minCpus": req.min_cpus, "minMemoryGiB": req.min_memory_gib, "nics": req.nics}}
    return await ctx.read(_check)


async def choose_blade(ctx: StepContext) -> dict[str, Any]:
    profile = await load_profile(ctx)

    def _choose() -> dict[str, Any]:
        with ctx.store.read() as s:
            if ctx.data.get("blade"):
                binding = s.scalar(select(BindingRow).where(BindingRow.job_id == ctx.job_id,
                                                            BindingRow.state == "live"))
                if binding is not None:
                    return {"blade": ctx.data["blade"]}
            pl = dry_run(s, profile, blade=ctx.params.get("blade"), pool=ctx.params.get("pool") or DEFAULT_POOL,
                         tenant=ctx.params.get("tenant"))
            if pl.best is None:
                raise NoSpareBlade(_explain(pl))
            return {"blade": pl.best, "candidates": list(pl.chosen[:10])}
    return await ctx.read(_choose)


async def allocate_identities(ctx: StepContext) -> dict[str, Any]:
    profile = await load_profile(ctx)
    if not pool_refs(profile):  # nothing to allocate: no write transaction
        return {"identities": {"macs": [n.mac for n in profile.spec.identity.nics],
                               "uuid": profile.spec.identity.uuid,
                               "iscsiInitiator": profile.spec.identity.iscsiInitiator}}

    def _alloc() -> dict[str, Any]:
        with ctx.store.write() as s:
            row = profile_row(s, ctx)
            done = ProfileService(ctx.store).allocate_pool_identities(s, row)
            return {"identities": {"macs": [n.mac for n in done.spec.identity.nics],
                                   "uuid": done.spec.identity.uuid,
                                   "iscsiInitiator": done.spec.identity.iscsiInitiator}}
    return await ctx.db(_alloc)


async def bind(ctx: StepContext) -> dict[str, Any]:
    """Create the live binding; the partial unique indexes make a double binding impossible."""
    profile = await load_profile(ctx)

    def _bind() -> dict[str, Any]:
        wanted = ctx.data["blade"]
        tried: set[str] = set()
        for _ in range(50):
            with ctx.store.write() as s:
                prow = profile_row(s, ctx)
                mine = live_binding(s, profile_id=prow.id)
                if mine is not None:
                    if mine.job_id != ctx.job_id:
                        raise StepFailed(f"profile {prow.name} was bound by another job")
                    blade = s.get(BladeRow, mine.blade_id)
                    assert blade is not None
                    return {"blade": blade.name, "generation": mine.generation}
                try:   # again here, in the transaction that binds: a lease taken meanwhile is seen
                    check_stampable(prow)
                except HeldElsewhere as exc:
                    raise StepFailed(str(exc)) from None
                brow = blade_row(s, wanted)
                if live_binding(s, blade_id=brow.id) is None and brow.state == BladeState.SPARE:
                    generation = next_generation(s, prow.id)
                    try:
                        with s.begin_nested():
                            s.add(BindingRow(profile_id=prow.id, blade_id=brow.id, generation=generation,
                                             job_id=ctx.job_id))
                            s.flush()
                    except IntegrityError:
                        pass  # lost a race for this blade; choose again below
                    else:
                        move_blade(brow, BladeState.STAMPING)
                        move_profile(prow, ProfileState.STAMPING)
                        return {"blade": brow.name, "generation": generation}
                tried.add(wanted)
                if ctx.params.get("blade"):
                    raise NoSpareBlade(f"blade {wanted} is no longer available "
                                       f"({'bound' if live_binding(s, blade_id=brow.id) else brow.state})")
                pl = dry_run(s, profile, pool=ctx.params.get("pool") or DEFAULT_POOL,
                             tenant=ctx.params.get("tenant"))
                left = [b for b in pl.chosen if b not in tried]
                if not left:
                    raise NoSpareBlade(_explain(pl))
                wanted = left[0]
        raise StepFailed("could not bind a blade after 50 attempts")
    return await ctx.db(_bind)


async def unbind(ctx: StepContext) -> None:
    def _unbind() -> None:
        with ctx.store.write() as s:
            prow = profile_row(s, ctx)
            binding = s.scalar(select(BindingRow).where(BindingRow.job_id == ctx.job_id,
                                                        BindingRow.state == "live"))
            if binding is not None:
                binding.state, binding.ended_at = "ended", _now()
                blade = s.get(BladeRow, binding.blade_id)
                if blade is not None and blade.state != BladeState.SPARE:
                    move_blade(blade, BladeState.SPARE)
            if prow.state == ProfileState.STAMPING:
                move_profile(prow, ProfileState.UNASSIGNED)
    await ctx.db(_unbind)


def _now() -> Any:
    from appliance.store.repos.jobs import now
    return now()


async def _port_plan(ctx: StepContext, *, park: bool) -> list[tuple[Any, PortConfig]]:
    profile = await load_profile(ctx)

    def _ports() -> list[Any]:
        with ctx.store.read() as s:
            return cabled_ports(s, blade_row(s, ctx.data["blade"]).id)
    ports = await ctx.read(_ports)
    plan = []
    for i, nic in enumerate(profile.spec.identity.nics):
        if i >= len(ports) or ports[i] is None:
            continue
        if park:
            plan.append((ports[i], PortConfig(native=ctx.settings.parking_vlan, tagged=frozenset(), up=True)))
        elif nic.vlans is not None:
            plan.append((ports[i], PortConfig(native=nic.vlans.native, tagged=frozenset(nic.vlans.tagged), up=True)))
    return plan


async def set_vlans(ctx: StepContext) -> dict[str, Any]:
    plan = await _port_plan(ctx, park=False)
    await set_ports(ctx, plan)
    _record_ports(ctx, plan, "set")
    return {"ports": [f"{p.switch}:{p.port}" for p, _ in plan]}


async def park_vlans(ctx: StepContext) -> None:
    plan = await _port_plan(ctx, park=True)
    await set_ports(ctx, plan)
    _record_ports(ctx, plan, "park")


def _record_ports(ctx: StepContext, plan: list[tuple[Any, PortConfig]], action: str) -> None:
    for port, want in plan:
        changes.hardware(ctx, changes.VLAN, f"{port.switch}:{port.port}", action,
                         {"native": want.native, "tagged": sorted(want.tagged), "up": want.up,
                          "blade": ctx.data.get("blade"),
                          "profile": None if action == "park" else f"{ctx.params['tenant']}/{ctx.params['profile']}"})


def lun_ref(src: IscsiSource) -> LunRef:
    return LunRef(target=src.target, lun=src.lun)


def _storage_plan(ctx: StepContext, profile: Profile) -> tuple[StorageDriver, IscsiSource, str] | None:
    """The storage driver, the profile's iSCSI source and its initiator; None when Anvil does not
    manage this profile's LUN (no iSCSI boot, or no storage driver configured)."""
    src = profile.spec.boot.source if profile.spec.boot else None
    storage = ctx.hw.storage()
    if storage is None or src is None or src.type != "iscsi":
        return None
    initiator = profile.spec.identity.iscsiInitiator
    if not initiator:
        raise StepFailed(f"profile {profile.metadata.name} boots from iSCSI but has no identity.iscsiInitiator")
    if initiator.startswith("pool:"):
        raise StepFailed(f"profile {profile.metadata.name}: its initiator was not allocated from {initiator}")
    return storage, src, initiator


def _disk(ctx: StepContext, src: IscsiSource) -> DiskSpec:
    luns = ctx.settings.luns_dir
    if luns is None:
        raise StepFailed("no LUN directory is configured for the storage driver")
    seed = None
    if src.image:
        if ctx.settings.images_dir is None:
            raise StepFailed(f"boot LUN image {src.image}: no images directory is configured")
        seed = ctx.settings.images_dir / src.image
    size_mib = src.sizeMiB or ctx.settings.lun_size_mib
    return DiskSpec(path=backing_path(luns, src.target, src.lun), size=size_mib * 1024 * 1024, seed=seed)


def backing_path(luns: Path, target: str, lun: int) -> Path:
    """Where the storage driver keeps the backing file of ``target``'s ``lun`` (DR copies replicas there)."""
    name = re.sub(r"[^a-z0-9.-]+", "_", target.lower())
    return luns / f"{name}-lun{lun}.img"


async def grant_storage(ctx: StepContext) -> dict[str, Any]:
    if ctx.hw.storage() is None:
        return {"storage": "nothing to grant (no storage driver configured)"}
    profile = await load_profile(ctx)
    plan = _storage_plan(ctx, profile)
    if plan is None:
        why = "not an iSCSI boot" if ctx.hw.storage() is not None else "no storage driver configured"
        return {"storage": f"nothing to grant ({why})"}
    storage, src, initiator = plan
    if src.lun < 1:
        raise StepFailed(f"profile {profile.metadata.name}: boot LUN {src.lun} cannot be served by "
                         f"{storage.name} (its LUN 0 is the target's controller); use lun: 1")
    ref = lun_ref(src)
    await storage.ensure_lun(ref, _disk(ctx, src))
    # Only this profile's initiator: a grant left by an interrupted release of another is revoked.
    for other in await storage.bindings(ref) - {initiator}:
        await storage.unbind(ref, other)
    await storage.bind(ref, initiator)
    changes.hardware(ctx, changes.LUN, f"{src.target}#{src.lun}", "grant", {"initiators": [initiator]})
    return {"storage": f"{src.target} LUN {src.lun} open to {initiator} only"}


async def revoke_storage(ctx: StepContext) -> None:
    if ctx.hw.storage() is None:
        return
    profile = await load_profile(ctx)
    plan = _storage_plan(ctx, profile)
    if plan is None:
        return
    storage, src, initiator = plan
    if src.lun >= 1:
        await storage.unbind(lun_ref(src), initiator)
        changes.hardware(ctx, changes.LUN, f"{src.target}#{src.lun}", "revoke", {"initiators": []})


def virtual_identities(profile: Profile) -> VirtualIdentities:
    ident = profile.spec.identity
    iscsi = None
    src = profile.spec.boot.source if profile.spec.boot else None
    if src is not None and src.type == "iscsi" and ident.iscsiInitiator:
        iscsi = IscsiBoot(initiator=ident.iscsiInitiator, target=src.target, portal=src.portal, lun=src.lun)
    fc = tuple(FcBoot(wwpn=h.wwpn, wwnn=h.wwnn) for h in ident.hbas if h.wwpn and h.wwnn)
    uuid = ident.uuid if ident.uuid and not ident.uuid.startswith("pool:") else None
    vlans = tuple(NicVlans(native=n.vlans.native, tagged=tuple(n.vlans.tagged)) for n in ident.nics)
    return VirtualIdentities(macs=tuple(n.mac for n in ident.nics if n.mac), iscsi=iscsi, fc=fc, uuid=uuid,
                             vlans=vlans)


async def apply_identity(ctx: StepContext) -> dict[str, Any]:
    profile = await load_profile(ctx)
    driver, bmc = ctx.hw.bmc(ctx.data["blade"])
    caps = await driver.capabilities(bmc)
    if not caps.any:
        return {"identity": "boot-time (the BMC has no virtual identities)"}
    want = virtual_identities(profile)
    want = VirtualIdentities(macs=want.macs if caps.mac else (),
                             iscsi=want.iscsi if caps.iscsi_initiator else None,
                             fc=want.fc if caps.wwpn else (),
                             uuid=want.uuid if caps.uuid else None,
                             vlans=want.vlans if caps.vlans else ())
    await driver.apply(bmc, want)
    got = await driver.read(bmc)
    if got.macs[:len(want.macs)] != want.macs:
        raise StepFailed(f"{ctx.data['blade']}: virtual MACs read back {got.macs}, expected {want.macs}")
    if want.uuid is not None and (got.uuid or "").lower() != want.uuid.lower():
        raise StepFailed(f"{ctx.data['blade']}: system UUID reads back {got.uuid}, expected {want.uuid}")
    done: dict[str, Any] = {"identity": "virtual", "virtualMacs": list(want.macs)}
    if want.uuid is not None:
        done["virtualUuid"] = want.uuid
    return done


async def clear_identity(ctx: StepContext) -> None:
    driver, bmc = ctx.hw.bmc(ctx.data["blade"])
    if (await driver.capabilities(bmc)).any:
        await driver.clear(bmc)


async def set_boot(ctx: StepContext) -> dict[str, Any]:
    profile = await load_profile(ctx)
    src = profile.spec.boot.source.type if profile.spec.boot else "local"
    mode = BootMode.LEGACY if profile.spec.boot and profile.spec.boot.mode == "legacy" else BootMode.UEFI
    device = BootDevice.DISK if src == "local" else BootDevice.NETWORK
    driver, bmc = ctx.hw.bmc(ctx.data["blade"])
    await driver.set_next_boot(bmc, BootSetting(device=device, mode=mode, persistent=False))
    if device is BootDevice.NETWORK:
        # DESIGN §8: this boot attempt's token is opened here, by the engine, for this job (it voids
        # any left by an earlier try); serving the script only reads it.
        await ctx.db(lambda: _open_attempt(ctx))
    return {"boot": device.value, "bootMode": mode.value}


def _open_attempt(ctx: StepContext) -> None:
    assert ctx.settings.boot_key is not None    # the Engine always sets one
    with ctx.store.write() as s:
        binding = live_binding(s, profile_id=profile_row(s, ctx).id)
        if binding is None or binding.job_id != ctx.job_id:
            raise StepFailed(f"profile {ctx.params['profile']} is no longer bound by this job")
        open_attempt(s, binding, ctx.settings.boot_key, job_id=ctx.job_id)


async def power_on(ctx: StepContext) -> dict[str, Any]:
    return await ensure_power(ctx, ctx.data["blade"], PowerState.ON, marker="power_on")


async def power_off_undo(ctx: StepContext) -> None:
    await ensure_power(ctx, ctx.data["blade"], PowerState.OFF, marker="power_off")


def boot_signal_kind(profile: Profile) -> str:
    """What says this profile's blade has booted: ``callback`` (our image posts it), ``login``
    (the initiator logs in to its LUN: sanboot of the LUN's own loader), or ``power`` (a local
    or FC boot: nothing of ours runs, so confirmed power-on is all there is)."""
    src = profile.spec.boot.source if profile.spec.boot else None
    if src is None or src.type in ("local", "fc"):
        return "power"
    if src.type == "image" or (src.type == "iscsi" and src.kernel):
        return "callback"
    return "login"


async def await_boot(ctx: StepContext) -> dict[str, Any]:
    profile = await load_profile(ctx)
    blade = ctx.data["blade"]
    kind = boot_signal_kind(profile)
    if kind == "login" and ctx.hw.storage() is None:
        kind = "power"
    if kind == "power":
        driver, bmc = ctx.hw.bmc(blade)
        if await driver.get_power(bmc) is not PowerState.ON:
            raise StepFailed(f"{blade} is no longer powered on")
        return {"booted": "power-on (this boot source sends no signal)"}
    generation = int(ctx.data["generation"])
    deadline = time.monotonic() + ctx.settings.boot_timeout
    checks = int(ctx.settings.boot_timeout / ctx.settings.boot_poll) + 2
    waiting_for = (f"boot signal from the image on {blade} (generation {generation})" if kind == "callback"
                   else f"{blade}'s initiator to log in to its boot LUN")
    await ctx.progress(waiting_for)
    pause = ctx.settings.boot_poll
    rack_problem: str | None = None
    for _ in range(checks):
        if kind == "callback":
            found, problem = await ctx.read(lambda: _boot_signal_or_rack(ctx, blade, generation))
            if found is not None:
                return {"booted": "callback", "bootFacts": found}
        else:
            if await _initiator_logged_in(ctx, profile):
                return {"booted": "initiator login"}
            problem = None
        if problem != rack_problem:
            # The rack controller that serves the blade is down: say so where the operator looks (anvil
            # job show), and keep waiting: once it is back the blade boots through it.
            await ctx.progress(f"{waiting_for}: {problem}" if problem else waiting_for)
            rack_problem = problem
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        # Quick at first (emulated blades call back within a second), then gently: a hundred
        # real servers take minutes to boot, and each look is a store read.
        pause = min(pause * 1.5, 4 * ctx.settings.boot_poll)
    what = "posted no boot callback" if kind == "callback" else "never logged in to its boot LUN"
    if rack_problem:
        raise StepFailed(f"{blade} {what} within {ctx.settings.boot_timeout:g} s of power-on: {rack_problem}")
    raise StepFailed(f"{blade} {what} within {ctx.settings.boot_timeout:g} s of power-on; check that it "
                     "reaches the boot service (DHCP, TFTP, HTTP) and its console")


def _boot_signal_or_rack(ctx: StepContext, blade: str, generation: int) -> tuple[dict[str, Any] | None, str | None]:
    """(the boot signal's facts or None; why the blade's rack controller cannot boot it, or None)."""
    found = _boot_signal(ctx, generation)
    if found is not None:
        return found, None
    with ctx.store.read() as s:
        blade_id = s.scalar(select(BladeRow.id).where(BladeRow.name == blade))
        return None, rack_down_reason(s, blade_id) if blade_id is not None else None


def _boot_signal(ctx: StepContext, generation: int) -> dict[str, Any] | None:
    with ctx.store.read() as s:
        rows = s.scalars(select(JobEventRow).where(JobEventRow.job_id == ctx.job_id,
                                                   JobEventRow.kind == "boot-signal")).all()
        for row in rows:
            data = row.data or {}
            if int(data.get("generation") or -1) == generation:
                facts = data.get("facts") or {}
                return {k: str(v)[:128] for k, v in facts.items()} if isinstance(facts, dict) else {}
    return None


async def _initiator_logged_in(ctx: StepContext, profile: Profile) -> bool:
    storage = ctx.hw.storage()
    src = profile.spec.boot.source if profile.spec.boot else None
    if storage is None or src is None or src.type != "iscsi" or not profile.spec.identity.iscsiInitiator:
        return False
    sessions = await storage.sessions(lun_ref(src))
    return profile.spec.identity.iscsiInitiator in sessions


async def activate(ctx: StepContext) -> dict[str, Any]:
    def _activate() -> dict[str, Any]:
        with ctx.store.write() as s:
            prow = profile_row(s, ctx)
            brow = blade_row(s, ctx.data["blade"])
            move_blade(brow, BladeState.ACTIVE)
            move_profile(prow, ProfileState.ACTIVE)
            return {"active": True}
    return await ctx.db(_activate)


STAMP = JobKind(
    name="stamp",
    steps=(
        Step("check-requirements", check_requirements, attempts=1),
        Step("choose-blade", choose_blade, attempts=1),
        Step("check-bios", bios.check_bios),
        Step("check-firmware", firmware.check_firmware, timeout=4 * 3600),
        Step("allocate-identities", allocate_identities),
        Step("bind", bind, undo=unbind, attempts=1),
        Step("set-vlans", set_vlans, undo=park_vlans),
        Step("grant-storage", grant_storage, undo=revoke_storage),
        Step("apply-identity", apply_identity, undo=clear_identity),
        Step("stage-bios", bios.stage_bios),
        Step("set-boot", set_boot),
        Step("power-on", power_on, undo=power_off_undo, timeout=180),
        Step("await-boot", await_boot, timeout=600),
        Step("verify-bios", bios.verify_bios),
        Step("activate", activate),
    ),
)
