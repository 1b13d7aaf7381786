"""What the primary site does when its recovery site activates or fails back a plan.

Both are asked over the DR routes and polled until done; each call converges, so a call sent
twice (a retry, a resumed job) does no more than one.

- **fence**: the plan's profiles held here move their site lease to the recovery site first (from
  then on this site refuses to stamp them, failover included), then every one of them that is
  live is released: the unstamp job powers its blade off and confirms it by reading the power
  back, clears its identities, parks its ports and revokes its LUN. "fenced" once none is live.
  The profiles that were live are kept in a ``fence`` run: those are the ones a failback
  brings back.
- **return** (failback): the lease comes back here and the profiles the fence took down are
  stamped again here, wave by wave in the plan's order; "returned" once all are up.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.domain.states import ACTIVE_JOB_STATES, JobState, ProfileState
from appliance.dr import plan as plans
from appliance.dr.service import APPLIANCE, candidates, load, plan_row
from appliance.engine.steps.common import live_binding
from appliance.errors import Conflict
from appliance.services.jobs import JobService
from appliance.store import Store
from appliance.store.audit import record
from appliance.store.tables import BladeRow, DrPlanRow, DrRunRow, JobRow, ProfileRow


def _checked_plan(s: Session, name: str, site: str) -> tuple[DrPlanRow, plans.Plan]:
    row = plan_row(s, APPLIANCE, name)
    if row.origin_site is not None:
        raise Conflict(f"dr plan {name} was replicated here from site {row.origin_site}: this site is not its "
                       "primary")
    if row.recovery_site != site:
        raise Conflict(f"dr plan {name} recovers at site {row.recovery_site}, not at {site}")
    return row, load(row)


def _open_fence(s: Session, name: str) -> DrRunRow | None:
    """The plan's fence not yet returned (at most one)."""
    rows = s.scalars(select(DrRunRow).where(DrRunRow.plan == name, DrRunRow.kind == "fence")
                     .order_by(DrRunRow.started_at.desc()).limit(1))
    row = next(iter(rows), None)
    return row if row is not None and not row.detail.get("returned") else None


def _profile(s: Session, key: str) -> ProfileRow | None:
    tenant, _, name = key.partition("/")
    return s.scalar(select(ProfileRow).where(ProfileRow.kind == "ServerProfile", ProfileRow.tenant == tenant,
                                             ProfileRow.name == name))


def _active_job(s: Session, profile_id: int) -> JobRow | None:
    return s.scalar(select(JobRow).where(JobRow.profile_id == profile_id,
                                         JobRow.state.in_([st.value for st in ACTIVE_JOB_STATES])))


def fence(store: Store, name: str, site: str, *, created_by: str | None = None) -> dict[str, Any]:
    """Fence the plan's profiles for ``site`` (see the module docstring); the state of each."""
    now = datetime.now(UTC)
    with store.write() as s:
        _, plan = _checked_plan(s, name, site)
        chosen = plans.members(plan, candidates(s, held_by=(None, site)))
        run = _open_fence(s, name)
        if run is None:
            run = DrRunRow(id=str(uuid.uuid4()), plan=name, kind="fence", state="running", created_by=created_by,
                           started_at=now, profiles=len(chosen), detail={"site": site, "live": []})
            s.add(run)
            record(s, action="dr.fence", resource="dr_plan", name=name, after={"site": site, "run": run.id})
        live = set(run.detail.get("live", []))
        todo: list[tuple[str, str, int]] = []
        for m in chosen:
            prow = _profile(s, m.key)
            if prow is None:
                continue
            if prow.site_lease is None:
                prow.site_lease = site
            binding = live_binding(s, profile_id=prow.id)
            if binding is not None:
                live.add(m.key)
                todo.append((m.tenant, m.name, binding.generation))
        run.detail = dict(run.detail, live=sorted(live))
        run_id = run.id
    jobs = JobService(store)
    for tenant, pname, gen in todo:
        # Conflict: another job of this profile runs (a release already): its state is read below
        with contextlib.suppress(Conflict):
            jobs.submit_release(pname, tenant=tenant, idempotency_key=f"dr-fence:{run_id}:{tenant}/{pname}:{gen}",
                                created_by=created_by)
    return _fence_state(store, name, run_id, [m.key for m in chosen])


def _fence_state(store: Store, name: str, run_id: str, keys: list[str]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    with store.write() as s:
        for key in keys:
            prow = _profile(s, key)
            if prow is None:
                continue
            binding = live_binding(s, profile_id=prow.id)
            job = _active_job(s, prow.id)
            last = s.scalar(select(JobRow).where(JobRow.profile_id == prow.id).order_by(JobRow.created_at.desc())
                            .limit(1))
            if binding is None and job is None:
                blade = (last.data or {}).get("blade") if last is not None else None
                out.append({"profile": key, "state": "off", "blade": blade, "lease": prow.site_lease})
            elif job is None and last is not None and last.state in (JobState.FAILED.value,
                                                                     JobState.ROLLED_BACK.value):
                out.append({"profile": key, "state": "failed", "error": last.error, "job": last.id})
            else:
                blade_row = s.get(BladeRow, binding.blade_id) if binding is not None else None
                out.append({"profile": key, "state": "fencing", "blade": blade_row.name if blade_row else None,
                            "job": job.id if job is not None else None})
        state = ("fenced" if all(p["state"] == "off" for p in out)
                 else "failed" if any(p["state"] == "failed" for p in out) else "fencing")
        run = s.get(DrRunRow, run_id)
        if run is not None and state != "fencing" and run.state == "running":
            run.state = "succeeded" if state == "fenced" else "failed"
            run.finished_at = datetime.now(UTC)
    return {"plan": name, "state": state, "run": run_id, "profiles": out}


def give_back(store: Store, name: str, site: str, *, created_by: str | None = None) -> dict[str, Any]:
    """Fail back: take the lease back from ``site`` and stamp the fenced profiles here again, wave
    by wave; the state of each. Conflict when the plan is not fenced."""
    with store.write() as s:
        _, plan = _checked_plan(s, name, site)
        run = _open_fence(s, name)
        if run is None:
            raise Conflict(f"dr plan {name} is not fenced here: nothing to fail back")
        chosen = plans.members(plan, candidates(s, held_by=(site, None)))
        for m in chosen:
            prow = _profile(s, m.key)
            if prow is not None and prow.site_lease == site:
                prow.site_lease = None
        if not run.detail.get("returning"):
            run.detail = dict(run.detail, returning=datetime.now(UTC).isoformat())
            record(s, action="dr.return", resource="dr_plan", name=name, after={"site": site, "run": run.id})
        live = set(run.detail.get("live", []))
        run_id = run.id
        order = plans.waves(plan, [m for m in chosen if m.key in live])
    jobs = JobService(store)
    out: list[dict[str, Any]] = []
    blocked = False
    for wave in order:
        wave_up = True
        for m in wave:
            if blocked:
                out.append({"profile": m.key, "state": "waiting"})
                continue
            entry = _return_one(store, jobs, run_id, m, created_by)
            out.append(entry)
            wave_up = wave_up and entry["state"] == "up"
        blocked = blocked or not wave_up
    state = ("returned" if all(p["state"] == "up" for p in out)
             else "failed" if any(p["state"] == "failed" for p in out) else "returning")
    if state == "returned":
        with store.write() as s:
            run = s.get(DrRunRow, run_id)
            if run is not None:
                run.detail = dict(run.detail, returned=datetime.now(UTC).isoformat())
    return {"plan": name, "state": state, "run": run_id, "profiles": out}


def _return_one(store: Store, jobs: JobService, run_id: str, m: plans.Member, created_by: str | None
                ) -> dict[str, Any]:
    with store.read() as s:
        prow = _profile(s, m.key)
        if prow is None:
            return {"profile": m.key, "state": "failed", "error": "the profile no longer exists here"}
        binding = live_binding(s, profile_id=prow.id)
        active = _active_job(s, prow.id)
        if binding is not None and active is None and prow.state == ProfileState.ACTIVE.value:
            blade = s.get(BladeRow, binding.blade_id)
            return {"profile": m.key, "state": "up", "blade": blade.name if blade else None}
        if active is not None or binding is not None:
            # bound but not up yet (a live binding comes before power-on and boot)
            return {"profile": m.key, "state": "stamping", "job": active.id if active else None}
    try:
        info = jobs.submit_assign(m.name, tenant=m.tenant, idempotency_key=f"dr-return:{run_id}:{m.key}",
                                  created_by=created_by)
    except Conflict as exc:
        return {"profile": m.key, "state": "stamping", "detail": str(exc)}
    if info.state in (JobState.FAILED.value, JobState.ROLLED_BACK.value, JobState.CANCELLED.value):
        return {"profile": m.key, "state": "failed", "error": info.error, "job": info.id}
    return {"profile": m.key, "state": "stamping", "job": info.id}

