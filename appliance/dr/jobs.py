"""DR jobs at the recovery site (issue 16 items 4 and 5): ``dr-rehearse``, ``dr-activate`` and
``dr-failback``, each a durable job of idempotent steps like the engine's others.

- rehearse: resolve → prepare-clones → recover → teardown → report. The plan's profiles come
  up as rehearsal clones (appliance.dr.mapping: own identities, rehearsal VLANs, a copy of each
  LUN replica) and are torn down again; production is not touched at either site.
- activate: resolve → fence-primary → take-lease → recover → report. The primary fences its
  servers and hands the lease over (appliance.dr.primary), or the operator declared it lost
  (audited at submission); only then does this site take the lease, map the profiles (VLANs,
  boot LUN replica) and stamp them.
- failback: resolve-active → release → hand-back → return-primary → report. Released here
  (power off confirmed) before the primary is told to stamp them again.

``recover`` stamps wave by wave through ordinary stamp jobs (idempotency keys tied to this
job, so a resumed step finds the jobs it submitted instead of submitting again) and records
each profile's RTO: from the run's start to its stamp job's success. Steps never raise for one
profile that does not come up: it is recorded, its dependents are skipped, and the run ends
failed; a rehearsal is always torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.domain.profile import from_dict, to_dict
from appliance.domain.states import FINAL_JOB_STATES, JobState
from appliance.dr import mapping, remote
from appliance.dr import plan as plans
from appliance.dr.service import APPLIANCE, candidates, load, plan_row
from appliance.drivers.protocols import LunRef
from appliance.engine.model import JobKind, Step, StepContext, StepFailed
from appliance.errors import AnvilError, Conflict
from appliance.secrets import SecretBox
from appliance.store.tables import BladeRow, DrPlanRow, DrRunProfileRow, DrRunRow, JobRow, ProfileRow

POLL = 0.5            # how often a waiting step reads its stamp jobs (a read, on a reader thread)
PRIMARY_POLL = 1.0    # how often the primary is asked again while it fences or stamps


def live_binding(s: Session, *, profile_id: int) -> Any:
    # engine.steps imports this module to register its kinds: its own modules are imported late
    from appliance.engine.steps.common import live_binding as live

    return live(s, profile_id=profile_id)


def backing_path(luns: Path, target: str, lun: int) -> Path:
    from appliance.engine.steps.stamp import backing_path as path

    return path(luns, target, lun)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _run(s: Session, ctx: StepContext) -> DrRunRow:
    row = s.get(DrRunRow, ctx.params["run"])
    if row is None:
        raise StepFailed(f"dr run {ctx.params['run']} is gone")
    return row


def _plan(s: Session, ctx: StepContext) -> tuple[DrPlanRow, plans.Plan]:
    row = plan_row(s, APPLIANCE, ctx.params["plan"])
    if row.origin_site is None:
        raise StepFailed(f"dr plan {row.name} was made at this site: it is rehearsed and activated at its "
                         f"recovery site {row.recovery_site}")
    return row, load(row)


def _profile(s: Session, tenant: str, name: str) -> ProfileRow | None:
    return s.scalar(select(ProfileRow).where(ProfileRow.kind == "ServerProfile", ProfileRow.tenant == tenant,
                                             ProfileRow.name == name))


def _tag(ctx: StepContext) -> str:
    """The rehearsal's short tag in clone names, identities and LUN copies."""
    return str(ctx.params["run"]).replace("-", "")[:8]


def _box(ctx: StepContext) -> SecretBox:
    box = getattr(ctx.hw, "box", None)
    if not isinstance(box, SecretBox):
        raise StepFailed("this engine has no secrets box to reach a paired site with")
    return box


# -- resolve ---------------------------------------------------------------------------------------------------

async def resolve(ctx: StepContext) -> dict[str, Any]:
    """The plan's profiles replicated from its primary, in waves; one run row per profile."""
    rehearsal = ctx.kind == DR_REHEARSE.name
    tag = _tag(ctx)

    def _do() -> dict[str, Any]:
        with ctx.store.write() as s:
            prow, plan = _plan(s, ctx)
            origin = prow.origin_site
            chosen = plans.members(plan, candidates(s, held_by=(origin,)))
            if not chosen:
                raise StepFailed(f"dr plan {prow.name} selects no profile held by site {origin} here "
                                 "(not replicated yet, or already activated)")
            order = plans.waves(plan, chosen)
            after = plans.waits_for(plan, chosen)
            run = _run(s, ctx)
            existing = {(r.tenant, r.name): r for r in
                        s.scalars(select(DrRunProfileRow).where(DrRunProfileRow.run_id == run.id))}
            entries = []
            for wi, wave in enumerate(order):
                for m in wave:
                    stamped = mapping.rehearsal_name(tag, m.name) if rehearsal else m.name
                    pool = plans.pool_for(plan, m)
                    entries.append({"key": m.key, "tenant": m.tenant, "name": m.name, "as": stamped, "pool": pool,
                                    "wave": wi, "after": sorted(after[m.key])})
                    if (m.tenant, m.name) not in existing:
                        s.add(DrRunProfileRow(run_id=run.id, tenant=m.tenant, name=m.name, stamped_as=stamped,
                                              wave=wi, pool=pool, state="pending"))
            run.profiles = len(entries)
            return {"entries": entries, "origin": origin, "waves": len(order)}
    out = await ctx.db(_do)
    ctx.note(f"{len(out['entries'])} profiles in {out['waves']} waves")
    return out


# -- storage (the lab's stand-in for array replication) ---------------------------------------------------------

def _copy(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` whole or not at all (a temporary file renamed into place)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".dr-part")
    shutil.copyfile(src, part)
    part.replace(dest)


def _storage_copies(ctx: StepContext, plan: plans.Plan, docs: list[dict[str, Any]], tag: str | None
                    ) -> list[tuple[Path, Path]]:
    """(from, to) backing-file copies the profiles' boot LUNs need at this site: the replica from
    ``copyFrom`` for an activation; a rehearsal's own copy of the replica for a rehearsal."""
    luns = ctx.settings.luns_dir
    out: list[tuple[Path, Path]] = []
    if luns is None:
        return out
    seen: set[str] = set()
    for doc in docs:
        src = ((doc.get("spec") or {}).get("boot") or {}).get("source") or {}
        if src.get("type") != "iscsi":
            continue
        rule = mapping.storage_rule(plan, src["target"], int(src.get("lun", 0)))
        if rule is None or rule.replica.name in seen:
            continue
        seen.add(rule.replica.name)
        replica = backing_path(luns, rule.replica.target, rule.replica.lun)
        if tag is None:
            if rule.copyFrom:
                out.append((Path(rule.copyFrom), replica))
        else:
            origin = Path(rule.copyFrom) if rule.copyFrom else replica
            if origin.exists():
                out.append((origin, backing_path(luns, mapping.rehearsal_target(tag, rule.replica.target),
                                                 rule.replica.lun)))
    return out


async def _do_copies(ctx: StepContext, copies: list[tuple[Path, Path]]) -> None:
    for src, dest in copies:
        if not src.is_file():
            raise StepFailed(f"storage map: {src} (copyFrom) is not a file")
        await asyncio.to_thread(_copy, src, dest)
        ctx.note(f"copied {src} to {dest}")


# -- rehearsal ---------------------------------------------------------------------------------------------------

async def prepare_clones(ctx: StepContext) -> dict[str, Any]:
    """Each profile's rehearsal clone (saved here, site lease held here) and its LUN copy."""
    from appliance.services.profiles import ProfileService

    tag = _tag(ctx)

    def _docs() -> tuple[plans.Plan, list[dict[str, Any]]]:
        with ctx.store.read() as s:
            _, plan = _plan(s, ctx)
            docs = []
            for e in ctx.data["entries"]:
                row = _profile(s, e["tenant"], e["name"])
                if row is None:
                    raise StepFailed(f"profile {e['key']} is gone")
                docs.append(dict(row.document))
            return plan, docs
    plan, docs = await ctx.read(_docs)
    clones = [from_dict(mapping.recovery_document(d, plan, rehearsal_run=tag)) for d in docs]
    await _do_copies(ctx, _storage_copies(ctx, plan, docs, tag))
    profiles = ProfileService(ctx.store)
    for clone in clones:
        await ctx.db(partial(profiles.save, clone, replace=True, source="dr rehearsal"))
    return {"clones": len(clones)}


async def teardown(ctx: StepContext) -> dict[str, Any]:
    """Release every clone, delete it (its identities go), remove the LUN copies."""
    from appliance.services.jobs import JobService
    from appliance.services.profiles import PROFILE, ProfileService

    entries = ctx.data["entries"]
    jobs = JobService(ctx.store)
    for e in entries:
        await ctx.db(partial(_release, jobs, e, f"dr-teardown:{ctx.job_id}:{e['key']}"))
    await _wait_unbound(ctx, entries)
    profiles = ProfileService(ctx.store)

    def _delete(e: dict[str, Any]) -> None:
        with ctx.store.read() as s:
            if _profile(s, e["tenant"], e["as"]) is None:
                return
        profiles.delete(PROFILE, e["tenant"], e["as"])
    for e in entries:
        await ctx.db(partial(_delete, e))
    removed = await _remove_rehearsal_luns(ctx)

    def _mark() -> None:
        with ctx.store.write() as s:
            for r in s.scalars(select(DrRunProfileRow).where(DrRunProfileRow.run_id == ctx.params["run"],
                                                             DrRunProfileRow.state == "up")):
                r.state = "torn-down"
    await ctx.db(_mark)
    return {"torn_down": len(entries), "luns_removed": removed}


async def _remove_rehearsal_luns(ctx: StepContext) -> int:
    tag = _tag(ctx)

    def _targets() -> list[tuple[str, int]]:
        with ctx.store.read() as s:
            _, plan = _plan(s, ctx)
            return [(mapping.rehearsal_target(tag, r.replica.target), r.replica.lun) for r in plan.storage]
    removed = 0
    storage = ctx.hw.storage()
    for target, lun in await ctx.read(_targets):
        remove = getattr(storage, "remove_lun", None)
        if remove is not None:
            await remove(LunRef(target=target, lun=lun))
        if ctx.settings.luns_dir is not None:
            path = backing_path(ctx.settings.luns_dir, target, lun)
            if path.exists():
                await asyncio.to_thread(path.unlink)
                removed += 1
    return removed


# -- activation --------------------------------------------------------------------------------------------------

async def fence_primary(ctx: StepContext) -> dict[str, Any]:
    """Ask the primary to fence the plan's profiles and hand their lease over; poll until it says
    fenced. Skipped when the operator declared the primary lost (audited at submission)."""
    if ctx.params.get("primary_lost"):
        ctx.note(f"primary declared lost by {ctx.params.get('by')}: {ctx.params.get('reason')}")
        return {"fence": "skipped: primary declared lost"}
    if remote.local_site(ctx.store) is None:
        raise StepFailed("this appliance has no site name (pair it with `anvil site pair` first)")
    origin = ctx.data["origin"]
    path = remote.FENCE.format(plan=ctx.params["plan"])
    box = _box(ctx)
    while True:
        answer = await remote.call(ctx.store, box, origin, path, {})
        state = answer.get("state") if isinstance(answer, dict) else None
        if state == "fenced":
            profiles = answer.get("profiles", [])
            ctx.note(f"site {origin} fenced {len(profiles)} profiles (powered off, read back off)")
            return {"fence": "confirmed", "fenced": [p.get("profile") for p in profiles],
                    "fenced_blades": [p.get("blade") for p in profiles if p.get("blade")]}
        if state == "failed":
            bad = [p for p in answer.get("profiles", []) if p.get("state") == "failed"]
            raise StepFailed(f"site {origin} could not fence: " + "; ".join(
                f"{p.get('profile')}: {p.get('error')}" for p in bad[:5]))
        await ctx.progress(f"site {origin} fencing: "
                           f"{sum(1 for p in answer.get('profiles', []) if p.get('state') == 'off')} off")
        await asyncio.sleep(PRIMARY_POLL)


async def take_lease(ctx: StepContext) -> dict[str, Any]:
    """Copy the LUN replicas (lab), then in one transaction: keep each profile's document as
    replicated (for failback), map it for this site, and take its lease."""
    def _docs() -> tuple[plans.Plan, list[dict[str, Any]], dict[str, Any]]:
        with ctx.store.read() as s:
            _, plan = _plan(s, ctx)
            run = _run(s, ctx)
            originals = dict(run.detail.get("originals", {}))
            docs = []
            for e in ctx.data["entries"]:
                row = _profile(s, e["tenant"], e["name"])
                if row is None:
                    raise StepFailed(f"profile {e['key']} is gone")
                docs.append(originals.get(e["key"], dict(row.document)))
            return plan, docs, originals
    plan, docs, originals = await ctx.read(_docs)
    mapped = {}
    for e, doc in zip(ctx.data["entries"], docs, strict=True):
        originals.setdefault(e["key"], doc)
        mapped[e["key"]] = to_dict(from_dict(mapping.recovery_document(doc, plan)))
    await _do_copies(ctx, _storage_copies(ctx, plan, docs, None))

    def _take() -> None:
        with ctx.store.write() as s:
            run = _run(s, ctx)
            run.detail = dict(run.detail, originals=originals)
            for e in ctx.data["entries"]:
                row = _profile(s, e["tenant"], e["name"])
                if row is None:
                    raise StepFailed(f"profile {e['key']} is gone")
                if row.site_lease not in (None, ctx.data["origin"]):
                    raise StepFailed(f"profile {e['key']} is held by site {row.site_lease}")
                row.document = mapped[e["key"]]
                row.site_lease = None
    await ctx.db(_take)
    return {"lease": f"{len(mapped)} profiles held here"}


# -- recover (shared) --------------------------------------------------------------------------------------------

def _submit(jobs: Any, e: dict[str, Any], key: str, by: str | None) -> str | None:
    """Submit (or find) the stamp of ``e``; its job id, or None when it is live already."""
    try:
        return str(jobs.submit_assign(e["as"], tenant=e["tenant"], pool=e["pool"], idempotency_key=key,
                                      created_by=by).id)
    except Conflict as exc:
        if "already assigned" in str(exc):
            return None
        raise


def _wave_state(s: Session, run_id: str, started: datetime, wave: list[dict[str, Any]],
                ids: dict[str, str | None]) -> tuple[bool, dict[str, str]]:
    """Record each profile of the wave whose stamp job ended; (all ended, key -> state)."""
    states: dict[str, str] = {}
    for e in wave:
        row = s.scalar(select(DrRunProfileRow).where(DrRunProfileRow.run_id == run_id,
                                                     DrRunProfileRow.tenant == e["tenant"],
                                                     DrRunProfileRow.name == e["name"]))
        jid = ids.get(e["key"])
        job = s.get(JobRow, jid) if jid else None
        if job is not None and JobState(job.state) not in FINAL_JOB_STATES:
            states[e["key"]] = "running"
            continue
        prow = _profile(s, e["tenant"], e["as"])
        binding = live_binding(s, profile_id=prow.id) if prow is not None else None
        ok = binding is not None and (job is None or job.state == JobState.SUCCEEDED.value)
        states[e["key"]] = "up" if ok else "failed"
        if row is not None and row.state == "pending":
            row.state = states[e["key"]]
            row.job_id = jid
            if ok and binding is not None:
                blade = s.get(BladeRow, binding.blade_id)
                row.blade = blade.name if blade else None
                end = _aware(job.finished_at) if job is not None and job.finished_at else datetime.now(UTC)
                row.rto_seconds = round((end - _aware(started)).total_seconds(), 3)
            else:
                row.error = (job.error if job is not None else None) or "not live after its stamp"
    return all(v != "running" for v in states.values()), states


async def recover(ctx: StepContext) -> dict[str, Any]:
    """Stamp the entries wave by wave (see the module docstring)."""
    from appliance.services.jobs import JobService

    entries: list[dict[str, Any]] = ctx.data["entries"]
    waves_n = int(ctx.data["waves"])
    run_id = str(ctx.params["run"])
    jobs = JobService(ctx.store)
    by = ctx.params.get("by")

    def _started() -> datetime:
        with ctx.store.read() as s:
            return _run(s, ctx).started_at
    started = await ctx.read(_started)
    failed: set[str] = set()
    for wi in range(waves_n):
        wave = [e for e in entries if e["wave"] == wi]
        runnable = []
        for e in wave:
            blocked = [d for d in e["after"] if d in failed]
            if blocked:
                failed.add(e["key"])
                await ctx.db(partial(_skip, ctx, e, f"skipped: {', '.join(blocked)} did not come up"))
            else:
                runnable.append(e)
        ids: dict[str, str | None] = {}
        for e in runnable:
            try:
                ids[e["key"]] = await ctx.db(partial(_submit, jobs, e, f"dr:{ctx.job_id}:{e['key']}", by))
            except AnvilError as exc:
                failed.add(e["key"])
                await ctx.db(partial(_skip, ctx, e, str(exc)))
        runnable = [e for e in runnable if e["key"] in ids]
        while True:
            done, states = await ctx.db(partial(_wave_state_tx, ctx, run_id, started, runnable, ids))
            up = sum(1 for v in states.values() if v == "up")
            await ctx.progress(f"wave {wi + 1}/{waves_n}: {up}/{len(runnable)} up")
            if done:
                failed.update(k for k, v in states.items() if v == "failed")
                break
            await asyncio.sleep(POLL)
    return {"up": len(entries) - len(failed), "failed": sorted(failed)}


def _wave_state_tx(ctx: StepContext, run_id: str, started: datetime, wave: list[dict[str, Any]],
                   ids: dict[str, str | None]) -> tuple[bool, dict[str, str]]:
    with ctx.store.write() as s:
        return _wave_state(s, run_id, started, wave, ids)


def _skip(ctx: StepContext, e: dict[str, Any], why: str) -> None:
    with ctx.store.write() as s:
        row = s.scalar(select(DrRunProfileRow).where(DrRunProfileRow.run_id == ctx.params["run"],
                                                     DrRunProfileRow.tenant == e["tenant"],
                                                     DrRunProfileRow.name == e["name"]))
        if row is not None and row.state == "pending":
            row.state, row.error = "failed", why[:1000]


# -- failback ----------------------------------------------------------------------------------------------------

async def resolve_active(ctx: StepContext) -> dict[str, Any]:
    """The plan's last successful activation here: its profiles and the documents it replaced."""
    def _do() -> dict[str, Any]:
        with ctx.store.write() as s:
            prow, _ = _plan(s, ctx)
            act = s.scalar(select(DrRunRow).where(DrRunRow.plan == prow.name, DrRunRow.kind == "activation",
                                                  DrRunRow.state == "succeeded")
                           .order_by(DrRunRow.started_at.desc()).limit(1))
            if act is None or act.detail.get("failed_back"):
                raise StepFailed(f"dr plan {prow.name} is not active here: nothing to fail back")
            rows = list(s.scalars(select(DrRunProfileRow).where(DrRunProfileRow.run_id == act.id)
                                  .order_by(DrRunProfileRow.wave)))
            entries = [{"key": f"{r.tenant}/{r.name}", "tenant": r.tenant, "name": r.name, "as": r.name,
                        "wave": r.wave} for r in rows]
            run = _run(s, ctx)
            have = {(r.tenant, r.name) for r in
                    s.scalars(select(DrRunProfileRow).where(DrRunProfileRow.run_id == run.id))}
            for r in rows:
                if (r.tenant, r.name) not in have:
                    s.add(DrRunProfileRow(run_id=run.id, tenant=r.tenant, name=r.name, stamped_as=r.name,
                                          wave=r.wave, pool=None, state="pending"))
            run.profiles = len(entries)
            return {"entries": entries, "origin": prow.origin_site, "activation": act.id}
    return await ctx.db(_do)


def _release(jobs: Any, e: dict[str, Any], key: str) -> None:
    # Conflict: not assigned (never came up, or released already), or its release runs
    with contextlib.suppress(Conflict):
        jobs.submit_release(e["as"], tenant=e["tenant"], idempotency_key=key)


async def _wait_unbound(ctx: StepContext, entries: list[dict[str, Any]]) -> None:
    """Until none of ``entries`` (as stamped) is live here or has a job running. StepFailed when a
    release ended without unbinding."""
    def _state() -> tuple[list[str], list[str]]:
        busy, stuck = [], []
        with ctx.store.read() as s:
            for e in entries:
                prow = _profile(s, e["tenant"], e["as"])
                if prow is None:
                    continue
                running = s.scalar(select(JobRow.id).where(JobRow.profile_id == prow.id, JobRow.state.in_(
                    [JobState.PENDING.value, JobState.RUNNING.value, JobState.WAITING.value,
                     JobState.ROLLING_BACK.value])))
                if running is not None:
                    busy.append(e["key"])
                elif live_binding(s, profile_id=prow.id) is not None:
                    stuck.append(e["key"])
        return busy, stuck
    while True:
        busy, stuck = await ctx.read(_state)
        if not busy:
            if stuck:
                raise StepFailed(f"still live after their release: {', '.join(stuck[:10])}")
            return
        await ctx.progress(f"releasing: {len(busy)} to go")
        await asyncio.sleep(POLL)


async def release_here(ctx: StepContext) -> dict[str, Any]:
    """Release every profile of the activation here (power off confirmed by each unstamp job)."""
    from appliance.services.jobs import JobService

    jobs = JobService(ctx.store)
    for e in ctx.data["entries"]:
        await ctx.db(partial(_release, jobs, e, f"dr-failback:{ctx.job_id}:{e['key']}"))
    await _wait_unbound(ctx, ctx.data["entries"])
    return {"released": len(ctx.data["entries"])}


async def hand_back(ctx: StepContext) -> dict[str, Any]:
    """Put back the documents as replicated and give the lease back to the primary."""
    def _do() -> None:
        with ctx.store.write() as s:
            act = s.get(DrRunRow, ctx.data["activation"])
            originals = act.detail.get("originals", {}) if act is not None else {}
            for e in ctx.data["entries"]:
                row = _profile(s, e["tenant"], e["name"])
                if row is None:
                    continue
                if e["key"] in originals:
                    row.document = originals[e["key"]]
                row.site_lease = ctx.data["origin"]
            if act is not None:
                act.detail = dict(act.detail, failed_back=ctx.params["run"])
    await ctx.db(_do)
    return {"lease": f"held by site {ctx.data['origin']} again"}


async def return_primary(ctx: StepContext) -> dict[str, Any]:
    """Ask the primary to stamp its profiles again; poll until it says returned."""
    origin = ctx.data["origin"]
    path = remote.RETURN.format(plan=ctx.params["plan"])
    box = _box(ctx)
    while True:
        answer = await remote.call(ctx.store, box, origin, path, {})
        state = answer.get("state") if isinstance(answer, dict) else None
        profiles = answer.get("profiles", []) if isinstance(answer, dict) else []
        if state == "returned":
            return {"returned": len(profiles)}
        if state == "failed":
            bad = [p for p in profiles if p.get("state") == "failed"]
            raise StepFailed(f"site {origin} could not stamp: " + "; ".join(
                f"{p.get('profile')}: {p.get('error')}" for p in bad[:5]))
        await ctx.progress(f"site {origin}: {sum(1 for p in profiles if p.get('state') == 'up')}"
                           f"/{len(profiles)} up")
        await asyncio.sleep(PRIMARY_POLL)


# -- report ------------------------------------------------------------------------------------------------------

async def report(ctx: StepContext) -> dict[str, Any]:
    """Close the run: succeeded when every profile came up; the plan's RTO is the last one's."""
    def _do() -> dict[str, Any]:
        with ctx.store.write() as s:
            run = _run(s, ctx)
            rows = list(s.scalars(select(DrRunProfileRow).where(DrRunProfileRow.run_id == run.id)))
            bad = [r for r in rows if r.state in ("failed", "pending")]
            rtos = [r.rto_seconds for r in rows if r.rto_seconds is not None]
            run.rto_seconds = max(rtos) if rtos and not bad else None
            run.state = "failed" if bad else "succeeded"
            run.error = "; ".join(f"{r.tenant}/{r.name}: {r.error}" for r in bad[:5])[:2000] or None
            run.finished_at = datetime.now(UTC)
            return {"run": run.state, "rto_seconds": run.rto_seconds, "failed": len(bad)}
    return await ctx.db(_do)


async def close_failback(ctx: StepContext) -> dict[str, Any]:
    """Close the run: every profile is back at the primary (its return said so)."""
    def _do() -> dict[str, Any]:
        with ctx.store.write() as s:
            run = _run(s, ctx)
            for r in s.scalars(select(DrRunProfileRow).where(DrRunProfileRow.run_id == run.id)):
                r.state = "returned"
            run.state, run.finished_at = "succeeded", datetime.now(UTC)
            run.profiles = len(ctx.data["entries"])
            run.rto_seconds = round((run.finished_at - _aware(run.started_at)).total_seconds(), 3)
            return {"run": run.state}
    return await ctx.db(_do)


async def fail_run(ctx: StepContext) -> None:
    """The undo of ``resolve``: a job that fails before its end marks its run failed."""
    def _do() -> None:
        with ctx.store.write() as s:
            run = s.get(DrRunRow, ctx.params["run"])
            if run is not None and run.state == "running":
                run.state, run.finished_at = "failed", datetime.now(UTC)
                run.error = run.error or "the job failed (see it with `anvil job show`)"
    await ctx.db(_do)


LONG = 4 * 3600.0
DR_REHEARSE = JobKind("dr-rehearse", (
    Step("resolve", resolve, undo=fail_run, attempts=1),
    Step("prepare-clones", prepare_clones, undo=teardown, timeout=1800),
    Step("recover", recover, undo=teardown, timeout=LONG),
    Step("teardown", teardown, timeout=LONG),
    Step("report", report),
))
DR_ACTIVATE = JobKind("dr-activate", (
    Step("resolve", resolve, undo=fail_run, attempts=1),
    Step("fence-primary", fence_primary, timeout=1800),
    Step("take-lease", take_lease, timeout=1800),
    Step("recover", recover, timeout=LONG),
    Step("report", report),
), rollback=False)
DR_FAILBACK = JobKind("dr-failback", (
    Step("resolve-active", resolve_active, undo=fail_run, attempts=1),
    Step("release", release_here, timeout=LONG),
    Step("hand-back", hand_back),
    Step("return-primary", return_primary, timeout=LONG),
    Step("report", close_failback),
), rollback=False)
KINDS = {k.name: k for k in (DR_REHEARSE, DR_ACTIVATE, DR_FAILBACK)}
