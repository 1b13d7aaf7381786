"""DR plans in the store: create, show, list, delete; the runs kept for them (`anvil dr report`).

Plans belong to the appliance, not to a tenant: they span tenants. A tenant-scoped caller sees
none (NotFound, as for a missing plan). A plan made here has ``origin_site`` NULL; a plan
replicated from its primary names that site (appliance.dr.replication).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from appliance.dr import plan as plans
from appliance.errors import Conflict, NotFound
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import (
    DrPlanRow,
    DrRunProfileRow,
    DrRunRow,
    HostPoolRow,
    HostRow,
    JobRow,
    ProfileRow,
)

APPLIANCE = Scope.appliance()


@dataclass(frozen=True, slots=True)
class PlanInfo:
    name: str
    recovery_site: str
    origin_site: str | None
    version: int
    document: dict[str, Any]
    created_by: str | None
    updated_at: datetime
    members: tuple[str, ...] = ()          # tenant/name, in recovery order (when asked for)
    waves: tuple[tuple[str, ...], ...] = ()

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "recoverySite": self.recovery_site, "originSite": self.origin_site,
                "version": self.version, "createdBy": self.created_by, "updatedAt": self.updated_at.isoformat(),
                "profiles": len(self.members), "waves": [list(w) for w in self.waves], "document": self.document}


@dataclass(frozen=True, slots=True)
class RunProfile:
    tenant: str
    name: str
    stamped_as: str
    wave: int
    pool: str | None
    blade: str | None
    state: str
    rto_seconds: float | None
    error: str | None

    def public(self) -> dict[str, Any]:
        return {"profile": f"{self.tenant}/{self.name}", "stampedAs": self.stamped_as, "wave": self.wave,
                "pool": self.pool, "blade": self.blade, "state": self.state, "rtoSeconds": self.rto_seconds,
                "error": self.error}


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: str
    plan: str
    kind: str
    state: str
    job_id: str | None
    created_by: str | None
    primary_lost: bool
    reason: str | None
    started_at: datetime
    finished_at: datetime | None
    rto_seconds: float | None
    error: str | None
    profiles: tuple[RunProfile, ...]

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "plan": self.plan, "kind": self.kind, "state": self.state, "job": self.job_id,
                "createdBy": self.created_by, "primaryLost": self.primary_lost, "reason": self.reason,
                "startedAt": self.started_at.isoformat(),
                "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
                "rtoSeconds": self.rto_seconds, "error": self.error,
                "profiles": [p.public() for p in self.profiles]}


def _info(row: DrPlanRow, order: list[list[plans.Member]] | None = None) -> PlanInfo:
    waves = tuple(tuple(m.key for m in w) for w in order or ())
    return PlanInfo(row.name, row.recovery_site, row.origin_site, row.version, dict(row.document), row.created_by,
                    row.updated_at, tuple(k for w in waves for k in w), waves)


def candidates(s: Session, *, held_by: Iterable[str | None] = (None,)) -> list[plans.Member]:
    """This site's profiles whose site lease is one of ``held_by`` (None: held here), as plan members."""
    held = list(held_by)
    leases = [h for h in held if h is not None]
    stmt = select(ProfileRow).where(ProfileRow.kind == "ServerProfile",
                                    or_(ProfileRow.site_lease.in_(leases),
                                        ProfileRow.site_lease.is_(None) if None in held else false()))
    pools = {r[0]: r[1] for r in s.execute(select(HostRow.profile_id, HostPoolRow.name)
                                           .join(HostPoolRow, HostPoolRow.id == HostRow.pool_id)
                                           .where(HostRow.profile_id.is_not(None)))}
    out = []
    for row in s.scalars(stmt):
        labels = (row.document.get("metadata") or {}).get("labels") or {}
        out.append(plans.Member(row.tenant, row.name, {str(k): str(v) for k, v in labels.items()},
                                pools.get(row.id)))
    return out


def plan_row(s: Session, scope: Scope, name: str) -> DrPlanRow:
    row = s.scalar(select(DrPlanRow).where(DrPlanRow.name == name)) if scope.unscoped else None
    if row is None:
        raise NotFound("dr plan", name)
    return row


def load(row: DrPlanRow) -> plans.Plan:
    return plans.from_dict(row.document, source=f"dr plan {row.name}")


class PlanService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, text: str | bytes, *, source: str | None = None, replace: bool = False,
               created_by: str | None = None, scope: Scope = APPLIANCE) -> PlanInfo:
        """Validate and store a plan made at this site (its primary). ValidationError naming the
        bad field, or the profiles of a dependency cycle among this site's profiles; Conflict for
        a name taken (without ``replace``) or a plan replicated here from another site."""
        plan = plans.parse(text, source=source)
        if not scope.unscoped:
            raise NotFound("dr plan", plan.name)
        with self._store.write() as s:
            order = plans.waves(plan, plans.members(plan, candidates(s)))
            row = s.scalar(select(DrPlanRow).where(DrPlanRow.name == plan.name))
            if row is not None and row.origin_site is not None:
                raise Conflict(f"dr plan {plan.name} was replicated here from site {row.origin_site}; "
                               "change it there")
            if row is not None and not replace:
                raise Conflict(f"dr plan {plan.name} already exists (use --replace to update it)")
            if row is None:
                row = DrPlanRow(name=plan.name, recovery_site=plan.recovery_site, origin_site=None,
                                document=plan.document, version=1, created_by=created_by)
                s.add(row)
            else:
                row.document, row.recovery_site, row.version = plan.document, plan.recovery_site, row.version + 1
            s.flush()
            return _info(row, order)

    def get(self, name: str, *, scope: Scope = APPLIANCE) -> PlanInfo:
        """The plan with its members and waves as they stand now at this site (at the primary,
        the profiles held here; at the recovery site, those replicated from the primary)."""
        with self._store.read() as s:
            row = plan_row(s, scope, name)
            plan = load(row)
            held = (None,) if row.origin_site is None else (row.origin_site,)
            return _info(row, plans.waves(plan, plans.members(plan, candidates(s, held_by=held))))

    def list(self, *, scope: Scope = APPLIANCE) -> builtins.list[PlanInfo]:
        if not scope.unscoped:
            return []
        with self._store.read() as s:
            return [_info(r) for r in s.scalars(select(DrPlanRow).order_by(DrPlanRow.name))]

    def delete(self, name: str, *, scope: Scope = APPLIANCE) -> None:
        with self._store.write() as s:
            row = plan_row(s, scope, name)
            busy = s.scalar(select(DrRunRow.id).where(DrRunRow.plan == name, DrRunRow.state == "running"))
            if busy is not None:
                raise Conflict(f"dr plan {name} has a run in progress ({busy}); wait for it to end")
            s.delete(row)

    def runs(self, name: str, *, limit: int = 10, kind: str | None = None, scope: Scope = APPLIANCE
             ) -> builtins.list[RunInfo]:
        """The plan's runs here, newest first (the plan may be gone: its runs stay, as records)."""
        with self._store.read() as s:
            if not scope.unscoped:
                raise NotFound("dr plan", name)
            stmt = select(DrRunRow).where(DrRunRow.plan == name)
            if kind is not None:
                stmt = stmt.where(DrRunRow.kind == kind)
            rows = list(s.scalars(stmt.order_by(DrRunRow.started_at.desc()).limit(limit)))
            if not rows and s.scalar(select(DrPlanRow.id).where(DrPlanRow.name == name)) is None:
                raise NotFound("dr plan", name)
            return [run_info(s, r) for r in rows]

    def last_success(self, name: str, kind: str = "rehearsal", *, scope: Scope = APPLIANCE) -> RunInfo | None:
        with self._store.read() as s:
            if not scope.unscoped:
                raise NotFound("dr plan", name)
            row = s.scalar(select(DrRunRow).where(DrRunRow.plan == name, DrRunRow.kind == kind,
                                                  DrRunRow.state == "succeeded")
                           .order_by(DrRunRow.started_at.desc()).limit(1))
            return run_info(s, row) if row is not None else None


def run_info(s: Session, row: DrRunRow) -> RunInfo:
    profs = tuple(RunProfile(p.tenant, p.name, p.stamped_as, p.wave, p.pool, p.blade, p.state, p.rto_seconds,
                             p.error)
                  for p in s.scalars(select(DrRunProfileRow).where(DrRunProfileRow.run_id == row.id)
                                     .order_by(DrRunProfileRow.wave, DrRunProfileRow.tenant, DrRunProfileRow.name)))
    state, error = row.state, row.error
    if state == "running" and row.job_id:
        # A forward-only job (activation, failback) that failed leaves its run open for the
        # operator: the run is failed all the same.
        job = s.get(JobRow, row.job_id)
        if job is not None and job.state in ("failed", "rolled_back", "cancelled"):
            state, error = "failed", error or job.error
    return RunInfo(row.id, row.plan, row.kind, state, row.job_id, row.created_by, row.primary_lost, row.reason,
                   row.started_at, row.finished_at, row.rto_seconds, error, profs)

