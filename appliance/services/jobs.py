"""Submitting and reading jobs: assign (stamp) and release (unstamp) a profile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from appliance.domain.placement import Placement
from appliance.domain.profile import from_dict
from appliance.domain.states import ACTIVE_JOB_STATES, JobState
from appliance.engine.steps import FAILOVER, STAMP, UNSTAMP
from appliance.engine.steps.common import live_binding
from appliance.errors import Conflict, NotFound
from appliance.services import scope as lookup
from appliance.services.blade_pools import DEFAULT_POOL
from appliance.services.failover import open_record
from appliance.services.placement import dry_run
from appliance.services.scope import Scope
from appliance.sites.lease import check_stampable
from appliance.store import Store
from appliance.store.repos import jobs as repo
from appliance.store.tables import BindingRow, BladeRow, FailoverDomainRow, JobRow, JobStepRow, ProfileRow

# The CLI's local admin, and the engine and monitor: the whole appliance.
APPLIANCE = Scope.appliance()
Then = Callable[[Session, JobRow], None]


@dataclass(frozen=True, slots=True)
class StepInfo:
    index: int
    name: str
    state: str
    attempts: int
    error: str | None
    result: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class JobInfo:
    id: str
    kind: str
    subject: str
    tenant: str | None
    state: str
    step_index: int
    step_count: int
    waiting_for: str | None
    error: str | None
    data: dict[str, Any]
    steps: tuple[StepInfo, ...]
    created_at: datetime
    finished_at: datetime | None
    created_by: str | None = None

    @property
    def duration(self) -> float:
        """Seconds from submission to the end (or to now, for a job still going)."""
        end = self.finished_at or datetime.now(UTC)
        start = self.created_at if self.created_at.tzinfo else self.created_at.replace(tzinfo=UTC)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        return max(0.0, (end - start).total_seconds())

    @property
    def final(self) -> bool:
        return JobState(self.state) not in ACTIVE_JOB_STATES

    @property
    def current_step(self) -> str | None:
        return self.steps[self.step_index].name if self.step_index < len(self.steps) else None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "subject": self.subject, "tenant": self.tenant, "state": self.state,
            "progress": {"step": min(self.step_index + 1, self.step_count), "of": self.step_count,
                         "current": self.current_step, "waitingFor": self.waiting_for},
            "blade": self.data.get("blade"), "error": self.error,
            "steps": [{"name": s.name, "state": s.state, "attempts": s.attempts, "error": s.error,
                       "result": s.result} for s in self.steps],
            "createdAt": self.created_at.isoformat(),
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
            "createdBy": self.created_by, "durationSeconds": round(self.duration, 3),
        }


def duration_text(seconds: float) -> str:
    """``2.4s``, ``3.5m``: how long a job took, short enough for a table cell."""
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


# A job's steps as columns: the answer to every submit and show, where loading a dozen ORM
# objects cost more than the rest of the request's reads.
_S = JobStepRow.__table__.c
_STEPS = select(_S.idx, _S.name, _S.state, _S.attempts, _S.error, _S.result).where(
    _S.job_id == bindparam("job")).order_by(_S.idx)


def _info(s: Any, job: JobRow) -> JobInfo:
    steps = tuple(StepInfo(*r) for r in s.execute(_STEPS, {"job": job.id}).all())
    return JobInfo(job.id, job.kind, job.subject, job.tenant, job.state, job.step_index, job.step_count,
                   job.waiting_for, job.error, dict(job.data), steps, job.created_at, job.finished_at,
                   job.created_by)


class JobService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def submit_assign(self, profile: str, *, tenant: str | None = None, blade: str | None = None,
                      pool: str | None = None, idempotency_key: str | None = None,
                      created_by: str | None = None, scope: Scope = APPLIANCE, then: Then | None = None) -> JobInfo:
        """Submit a stamp of ``profile`` (in ``scope``'s tenant, or ``tenant`` for an unscoped caller).
        A pool or blade must be in the scope's sight (NotFound otherwise, as for a missing one).
        ``then(session, job)`` runs in the same transaction once a new job is created (a caller's
        own record of it is then written with the job, or not at all)."""
        if blade and pool:
            raise Conflict("give --blade or --pool, not both")
        home = scope.home(tenant)
        fingerprint = lookup.request_digest("assign", profile=profile, tenant=home, blade=blade, pool=pool)
        with self._store.write() as s:
            existing = lookup.job_for_key(s, scope, idempotency_key, fingerprint)
            if existing is not None:
                return _info(s, existing)
            if pool is not None:
                lookup.pool_members(s, scope, pool)  # NotFound for a pool out of sight
            prow = lookup.profile_row(s, scope, profile, tenant=tenant)
            bound = live_binding(s, profile_id=prow.id)
            if bound is not None:
                b = s.get(BladeRow, bound.blade_id)
                raise Conflict(f"profile {home}/{profile} is already assigned to blade {b.name if b else '?'}")
            check_stampable(prow)
            if blade is not None:
                lookup.blade_row(s, scope, blade)
            job = repo.create(s, kind=STAMP.name, subject=f"profile {home}/{profile}", profile_id=prow.id,
                              tenant=home, params={"profile": profile, "tenant": home, "blade": blade,
                                                   "pool": pool or "spares"},
                              step_names=STAMP.step_names,
                              idempotency_key=lookup.idempotency_digest(scope, idempotency_key)
                              if idempotency_key else None, request_hash=fingerprint, created_by=created_by)
            if then is not None:
                then(s, job)
            return _info(s, job)

    def submit_release(self, profile: str, *, tenant: str | None = None, idempotency_key: str | None = None,
                       created_by: str | None = None, scope: Scope = APPLIANCE, then: Then | None = None
                       ) -> JobInfo:
        home = scope.home(tenant)
        fingerprint = lookup.request_digest("release", profile=profile, tenant=home)
        with self._store.write() as s:
            existing = lookup.job_for_key(s, scope, idempotency_key, fingerprint)
            if existing is not None:
                return _info(s, existing)
            prow = lookup.profile_row(s, scope, profile, tenant=tenant)
            if live_binding(s, profile_id=prow.id) is None and prow.state == "unassigned":
                raise Conflict(f"profile {home}/{profile} is not assigned to a blade")
            job = repo.create(s, kind=UNSTAMP.name, subject=f"profile {home}/{profile}", profile_id=prow.id,
                              tenant=home, params={"profile": profile, "tenant": home},
                              step_names=UNSTAMP.step_names,
                              idempotency_key=lookup.idempotency_digest(scope, idempotency_key)
                              if idempotency_key else None, request_hash=fingerprint, created_by=created_by)
            if then is not None:
                then(s, job)
            return _info(s, job)

    def submit_failover(self, profile: str, *, tenant: str = "default", reason: str,
                        from_blade: str | None = None, drill: bool = False, to_blade: str | None = None,
                        detected_at: datetime | None = None, created_by: str | None = None) -> tuple[int, JobInfo]:
        """Open the profile's failover record and submit its job, in one transaction: a
        detected failure is never recorded without the job that handles it (or the reverse).
        Conflict when the profile already has an open failover or a job in progress."""
        with self._store.write() as s:
            row = open_record(s, tenant=tenant, profile=profile, reason=reason, from_blade=from_blade,
                              drill=drill, detected_at=detected_at)
            domain = s.scalar(select(FailoverDomainRow).where(FailoverDomainRow.name == row.domain))
            job = repo.create(s, kind=FAILOVER.name, subject=f"profile {tenant}/{profile}",
                              profile_id=row.profile_id, tenant=tenant,
                              params={"profile": profile, "tenant": tenant, "failover": row.id,
                                      "domain": row.domain, "policy": row.policy,
                                      "pool": domain.spare_pool if domain else DEFAULT_POOL, "to": to_blade},
                              step_names=FAILOVER.step_names, created_by=created_by)
            row.job_id = job.id
            return row.id, _info(s, job)

    def submit_move(self, profile: str, *, tenant: str = "default", to_blade: str, reason: str,
                    created_by: str | None = None) -> tuple[int, JobInfo]:
        """A planned move of ``tenant/profile`` to ``to_blade`` (physical or a VM slot): a failover
        of its domain that fences (powers off) its blade as a drill does, returning it to the
        spares, and stamps the profile on exactly ``to_blade`` — or fails saying why that blade
        cannot take it. NotFound for an unknown blade; Conflict when the profile is already there."""
        with self._store.read() as s:
            if s.scalar(select(BladeRow.id).where(BladeRow.name == to_blade)) is None:
                raise NotFound("blade", to_blade)
            here = s.scalar(select(BladeRow.name).join(BindingRow, BindingRow.blade_id == BladeRow.id)
                            .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                            .where(ProfileRow.tenant == tenant, ProfileRow.name == profile,
                                   BindingRow.state == "live"))
            prow = s.scalar(select(ProfileRow).where(ProfileRow.kind == "ServerProfile", ProfileRow.tenant == tenant,
                                                     ProfileRow.name == profile))
            if prow is None:
                raise NotFound("profile", profile, tenant=tenant)
            if here == to_blade:
                raise Conflict(f"profile {tenant}/{profile} is on {to_blade} already")
            # Refused before anything is fenced: a move that cannot land must not take the profile down.
            pl = dry_run(s, from_dict(prow.document), blade=to_blade, tenant=tenant)
            if to_blade not in pl.chosen:
                why = "; ".join(r.reason for r in pl.rejected) or "it is taken"
                raise Conflict(f"{to_blade} cannot take {tenant}/{profile}: {why}")
        with self._store.write() as s:
            row = open_record(s, tenant=tenant, profile=profile, reason=reason, drill=True)
            domain = s.scalar(select(FailoverDomainRow).where(FailoverDomainRow.name == row.domain))
            job = repo.create(s, kind=FAILOVER.name, subject=f"profile {tenant}/{profile}",
                              profile_id=row.profile_id, tenant=tenant,
                              params={"profile": profile, "tenant": tenant, "failover": row.id,
                                      "domain": row.domain, "policy": row.policy,
                                      "pool": domain.spare_pool if domain else DEFAULT_POOL, "to": to_blade,
                                      "exact": True},
                              step_names=FAILOVER.step_names, created_by=created_by)
            row.job_id = job.id
            return row.id, _info(s, job)

    def dry_run(self, profile: str, *, tenant: str | None = None, blade: str | None = None,
                pool: str | None = None, scope: Scope = APPLIANCE) -> Placement:
        with self._store.read() as s:
            prow = lookup.profile_row(s, scope, profile, tenant=tenant)
            if blade is not None:
                lookup.blade_row(s, scope, blade)
            if pool is not None:
                lookup.pool_members(s, scope, pool)
            return dry_run(s, from_dict(prow.document), blade=blade, pool=pool or DEFAULT_POOL,
                           tenant=prow.tenant)

    def get(self, job_id: str, *, scope: Scope = APPLIANCE) -> JobInfo:
        with self._store.read() as s:
            return _info(s, lookup.job_row(s, scope, job_id))

    def events(self, job_id: str, after: int = 0, *, scope: Scope = APPLIANCE) -> list[dict[str, Any]]:
        with self._store.read() as s:
            lookup.job_row(s, scope, job_id)
            return [{"id": e.id, "at": e.at.isoformat(), "kind": e.kind, "message": e.message, "data": e.data}
                    for e in repo.events_after(s, job_id, after)]

    def list(self, *, state: str | None = None, tenant: str | None = None, limit: int = 100,
             scope: Scope = APPLIANCE, kind: str | None = None, profile: str | None = None,
             blade: str | None = None) -> list[JobInfo]:
        """Newest first. ``profile`` is NAME or TENANT/NAME; ``blade`` the blade the job chose
        or was asked for."""
        tenant = scope.listing(tenant)
        with self._store.read() as s:
            stmt = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
            if state:
                stmt = stmt.where(JobRow.state == state)
            if tenant:
                stmt = stmt.where(JobRow.tenant == tenant)
            if kind:
                stmt = stmt.where(JobRow.kind == kind)
            if profile:
                stmt = stmt.where(JobRow.subject == f"profile {profile}" if "/" in profile
                                  else JobRow.subject.endswith(f"/{profile}", autoescape=True))
            if blade:
                stmt = stmt.where(or_(JobRow.data["blade"].as_string() == blade,
                                      JobRow.params["blade"].as_string() == blade))
            return [_info(s, j) for j in s.scalars(stmt)]
