"""Jobs of a host pool's hosts: stamp one host, release one host.

host-stamp: host-requested → the stamp's own steps, with the blade chosen by the pool's
spread (and recorded on the host row in the same transaction) → host-ready (the host and
its ``host.ready`` event in one commit). A fatal error rolls back as a stamp does; the
undo of the first step, which runs last, marks the host failed with the job's error
(``host.failed``), and the pool backs off before asking again.

host-release: host-drain → the unstamp's steps (skipped when the host was never bound) →
host-released: its profile deleted (its identities back to their pools) unless kept, the
host ``released`` with its ``host.released`` event. Forward-only, as the unstamp.

Both jobs are created by the reconcile loop in the transaction that creates or marks the
host, so a host never lacks its job and no job runs for a host that does not exist.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.domain.hostpool import (
    HOST_FAILED,
    HOST_READY,
    HOST_RELEASED,
    HOST_TRANSITIONS,
    HostState,
    backoff_seconds,
)
from appliance.domain.states import PROFILE_TRANSITIONS, ProfileState, transition
from appliance.engine.model import JobKind, NoSpareBlade, Step, StepContext, StepFailed, StepFn
from appliance.engine.steps import stamp, unstamp
from appliance.engine.steps.common import live_binding, load_profile
from appliance.services import host_events, host_placement
from appliance.store.repos import identities as ids
from appliance.store.tables import BindingRow, HostPoolRow, HostRow, JobRow, ProfileRow

BIND_TRIES = 10


def host_and_pool(s: Session, ctx: StepContext, *, lock: bool = False) -> tuple[HostRow, HostPoolRow]:
    host = s.get(HostRow, ctx.params["host"], with_for_update=lock)
    if host is None:
        raise StepFailed(f"host {ctx.params['host']} no longer exists")
    pool = s.get(HostPoolRow, host.pool_id, with_for_update=lock)
    assert pool is not None   # hosts go with their pool (ON DELETE CASCADE)
    return host, pool


def move(host: HostRow, wanted: HostState) -> None:
    host.state = transition(HOST_TRANSITIONS, HostState(host.state), wanted, what=f"host {host.name}").value


# ---- host-stamp --------------------------------------------------------------------------


async def host_requested(ctx: StepContext) -> dict[str, Any]:
    def _check() -> dict[str, Any]:
        with ctx.store.read() as s:
            host, _ = host_and_pool(s, ctx)
            if host.state != HostState.REQUESTED.value:
                raise StepFailed(f"host {host.name} is {host.state}, no longer requested")
            return {"host": host.id}
    return await ctx.read(_check)


async def host_stamp_failed(ctx: StepContext) -> None:
    """Undo of the first step, so it runs last in a rollback: the host failed; the pool backs off."""
    def _fail() -> None:
        with ctx.store.write() as s:
            job = s.get(JobRow, ctx.job_id)
            host, pool = host_and_pool(s, ctx, lock=True)
            mark_stamp_failed(s, host, pool, (job.error if job else None) or "its stamp job failed")
    await ctx.db(_fail)


def mark_stamp_failed(s: Session, host: HostRow, pool: HostPoolRow, why: str) -> None:
    """A requested host whose stamp failed: ``failed`` (the pool will replace it), said once."""
    if host.state != HostState.REQUESTED.value:
        return
    move(host, HostState.FAILED)
    host.reason = f"stamp failed: {why}"[:2000]
    if host.blade is not None and not _bound(s, host):
        host.blade = None
    pool.failures += 1
    pool.backoff_until = datetime.now(UTC) + timedelta(seconds=backoff_seconds(pool.failures))
    host_events.append(s, pool, host, HOST_FAILED, reason=host.reason)


def _bound(s: Session, host: HostRow) -> bool:
    return host.profile_id is not None and live_binding(s, profile_id=host.profile_id) is not None


def _choose(ctx: StepContext, profile: Any) -> str:
    with ctx.store.write() as s:
        host, pool = host_and_pool(s, ctx, lock=True)
        choice, pl = host_placement.choose_blade(s, pool, profile, host=host.id)
        if choice.blade is None:
            detail = stamp._explain(pl) if not pl.chosen else choice.reason
            raise NoSpareBlade(detail)
        host.blade = choice.blade
        return choice.blade


async def choose_blade(ctx: StepContext) -> dict[str, Any]:
    """The pool's spread decides among the spares placement ranks; the choice is kept on the host."""
    profile = await load_profile(ctx)
    if ctx.data.get("blade"):
        def _bound_here() -> bool:
            with ctx.store.read() as s:
                return s.scalar(select(BindingRow.id).where(BindingRow.job_id == ctx.job_id,
                                                            BindingRow.state == "live")) is not None
        if await ctx.read(_bound_here):
            return {"blade": ctx.data["blade"]}
    blade = await ctx.db(lambda: _choose(ctx, profile))
    return {"blade": blade}


async def forget_choice(ctx: StepContext) -> None:
    def _forget() -> None:
        with ctx.store.write() as s:
            host, _ = host_and_pool(s, ctx)
            if host.state == HostState.REQUESTED.value and not _bound(s, host):
                host.blade = None
    await ctx.db(_forget)


async def bind(ctx: StepContext) -> dict[str, Any]:
    """The stamp's bind, of the chosen blade only: when another stamp took it first, choose again
    by the pool's spread (the stamp's own fallback would ignore it)."""
    profile = await load_profile(ctx)
    for _ in range(BIND_TRIES):
        pinned = dataclasses.replace(ctx, params={**ctx.params, "blade": ctx.data["blade"]})
        try:
            return await stamp.bind(pinned)
        except NoSpareBlade:
            ctx.data["blade"] = await ctx.db(lambda: _choose(ctx, profile))
    raise NoSpareBlade(f"no blade could be bound after {BIND_TRIES} choices (spares taken as they were chosen)")


async def host_ready(ctx: StepContext) -> dict[str, Any]:
    profile = await load_profile(ctx)
    address = next((n.ipv4.split("/", 1)[0] for n in profile.spec.identity.nics if n.ipv4), None)
    facts = ctx.data.get("bootFacts") or {}
    address = address or (str(facts.get("ip")) if facts.get("ip") else None)

    def _ready() -> dict[str, Any]:
        with ctx.store.write() as s:
            host, pool = host_and_pool(s, ctx, lock=True)
            if host.state != HostState.REQUESTED.value:
                return {"ready": False, "hostState": host.state}    # released or replaced meanwhile
            move(host, HostState.READY)
            host.blade, host.reason = ctx.data["blade"], None
            host.ready_at = datetime.now(UTC)
            host.management_address = address
            pool.failures, pool.backoff_until = 0, None
            host_events.append(s, pool, host, HOST_READY)
            return {"ready": True}
    return await ctx.db(_ready)


HOST_STAMP = JobKind(
    name="host-stamp",
    steps=(
        Step("host-requested", host_requested, undo=host_stamp_failed, attempts=1),
        Step("check-requirements", stamp.check_requirements, attempts=1),
        Step("choose-blade", choose_blade, undo=forget_choice, attempts=1),
        Step("allocate-identities", stamp.allocate_identities),
        Step("bind", bind, undo=stamp.unbind, attempts=1),
        Step("set-vlans", stamp.set_vlans, undo=stamp.park_vlans),
        Step("grant-storage", stamp.grant_storage, undo=stamp.revoke_storage),
        Step("apply-identity", stamp.apply_identity, undo=stamp.clear_identity),
        Step("set-boot", stamp.set_boot),
        Step("power-on", stamp.power_on, undo=stamp.power_off_undo, timeout=180),
        Step("await-boot", stamp.await_boot, timeout=600),
        Step("activate", stamp.activate),
        Step("host-ready", host_ready),
    ),
)


# ---- host-release -------------------------------------------------------------------------


async def host_drain(ctx: StepContext) -> dict[str, Any]:
    """Begin the release when the host's profile is bound; otherwise there is nothing to take down."""
    def _bound_now() -> bool:
        with ctx.store.read() as s:
            host, _ = host_and_pool(s, ctx)
            return _bound(s, host)
    if not await ctx.read(_bound_now):
        return {"bound": False}
    return {"bound": True, **await unstamp.begin_release(ctx)}


def if_bound(fn: StepFn) -> StepFn:
    async def run(ctx: StepContext) -> dict[str, Any] | None:
        if not ctx.data.get("bound"):
            return {"skipped": "the host was never bound"}
        return await fn(ctx)
    return run


def _to_unassigned(prow: ProfileRow) -> None:
    """An unbound profile back to ``unassigned`` (through ``failed`` where there is no direct way)."""
    state = ProfileState(prow.state)
    what = f"profile {prow.tenant}/{prow.name}"
    if state is not ProfileState.UNASSIGNED and ProfileState.UNASSIGNED not in PROFILE_TRANSITIONS[state]:
        state = transition(PROFILE_TRANSITIONS, state, ProfileState.FAILED, what=what)
    prow.state = transition(PROFILE_TRANSITIONS, state, ProfileState.UNASSIGNED, what=what).value


async def host_released(ctx: StepContext) -> dict[str, Any]:
    def _released() -> dict[str, Any]:
        with ctx.store.write() as s:
            host, pool = host_and_pool(s, ctx, lock=True)
            if host.state == HostState.RELEASED.value:
                return {"released": True}
            deleted = False
            prow = s.get(ProfileRow, host.profile_id) if host.profile_id is not None else None
            if prow is not None:
                if live_binding(s, profile_id=prow.id) is not None:
                    raise StepFailed(f"profile {prow.tenant}/{prow.name} is still bound; release it first")
                _to_unassigned(prow)
                if not host.keep_profile:
                    s.execute(delete(BindingRow).where(BindingRow.profile_id == prow.id))
                    ids.release_profile(s, prow.id)
                    s.delete(prow)
                    host.profile_id, deleted = None, True
            move(host, HostState.RELEASED)
            host.released_at = datetime.now(UTC)
            host_events.append(s, pool, host, HOST_RELEASED, profileDeleted=deleted)
            return {"released": True, "profileDeleted": deleted}
    return await ctx.db(_released)


HOST_RELEASE = JobKind(
    name="host-release",
    rollback=False,
    steps=(
        Step("host-drain", host_drain, attempts=1),
        Step("power-off", if_bound(unstamp.power_off), timeout=180),
        Step("clear-identity", if_bound(unstamp.clear)),
        Step("park-ports", if_bound(unstamp.park)),
        Step("revoke-storage", if_bound(unstamp.revoke_storage)),
        Step("unbind", if_bound(unstamp.end_binding)),
        Step("host-released", host_released),
    ),
)

