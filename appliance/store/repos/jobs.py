"""Jobs, their steps and events. Every write is a short transaction of its own.

A job's lease is a compare-and-set on the row (rowcount checked), as Ironic's
node reservation, plus an expiry so a dead owner's jobs can be taken over.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.domain.states import ACTIVE_JOB_STATES, JOB_TRANSITIONS, JobState, transition
from appliance.errors import Conflict, IdempotencyMismatch, NotFound
from appliance.store.tables import JobEventRow, JobRow, JobStepRow

ACTIVE = [s.value for s in ACTIVE_JOB_STATES]


def now() -> datetime:
    return datetime.now(UTC)


def aware(t: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored in UTC."""
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _same_request(job: JobRow, request_hash: str | None) -> JobRow:
    if job.request_hash != request_hash:
        raise IdempotencyMismatch("the idempotency key was already used for a different request; use a new key")
    return job


def create(session: Session, *, kind: str, subject: str, profile_id: int | None, tenant: str | None,
           params: dict[str, Any], step_names: list[str], idempotency_key: str | None = None,
           request_hash: str | None = None, created_by: str | None = None) -> JobRow:
    """Insert a pending job with its steps. Raises Conflict if the profile already has an unfinished job."""
    if idempotency_key:
        existing = session.scalar(select(JobRow).where(JobRow.idempotency_key == idempotency_key))
        if existing is not None:
            return _same_request(existing, request_hash)
    job = JobRow(id=str(uuid.uuid4()), kind=kind, subject=subject, profile_id=profile_id, tenant=tenant,
                 state=JobState.PENDING.value, step_index=0, step_count=len(step_names), params=params, data={},
                 idempotency_key=idempotency_key, request_hash=request_hash, created_by=created_by)
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:
        if idempotency_key:
            existing = session.scalar(select(JobRow).where(JobRow.idempotency_key == idempotency_key))
            if existing is not None:
                return _same_request(existing, request_hash)
        running = session.scalar(
            select(JobRow).where(JobRow.profile_id == profile_id, JobRow.state.in_(ACTIVE))
        )
        which = f" ({running.kind} job {running.id})" if running else ""
        raise Conflict(f"{subject} already has a job in progress{which}") from None
    # Bulk inserts, not eleven ORM objects through the unit of work: this runs in the request's
    # write transaction, and under SQLite every other writer (the engine included) waits for it.
    session.execute(insert(JobStepRow), [{"job_id": job.id, "idx": idx, "name": name, "state": "pending",
                                          "attempts": 0} for idx, name in enumerate(step_names)])
    session.execute(insert(JobEventRow), [{"job_id": job.id, "kind": "submitted",
                                           "message": f"{kind} {subject} submitted"}])
    return job


def get(session: Session, job_id: str) -> JobRow:
    job = session.get(JobRow, job_id)
    if job is None:
        raise NotFound("job", job_id)
    return job


def steps(session: Session, job_id: str) -> list[JobStepRow]:
    return list(session.scalars(select(JobStepRow).where(JobStepRow.job_id == job_id).order_by(JobStepRow.idx)))


def events_after(session: Session, job_id: str, after: int = 0, limit: int = 500) -> list[JobEventRow]:
    return list(session.scalars(
        select(JobEventRow).where(JobEventRow.job_id == job_id, JobEventRow.id > after)
        .order_by(JobEventRow.id).limit(limit)
    ))


def add_event(session: Session, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
    session.add(JobEventRow(job_id=job_id, kind=kind, message=message, data=data))


def set_state(session: Session, job: JobRow, wanted: JobState) -> None:
    job.state = transition(JOB_TRANSITIONS, JobState(job.state), wanted, what=f"job {job.id}").value
    if wanted in (JobState.SUCCEEDED, JobState.FAILED, JobState.ROLLED_BACK, JobState.CANCELLED):
        job.finished_at = now()
        job.lease_owner = None
        job.lease_expires_at = None
        job.waiting_for = None


def runnable_ids(session: Session, owner: str, exclude: set[str], limit: int = 500) -> list[str]:
    stmt = (
        select(JobRow.id)
        .where(JobRow.state.in_(ACTIVE),
               or_(JobRow.lease_owner.is_(None), JobRow.lease_owner == owner, JobRow.lease_expires_at < now()))
        .order_by(JobRow.created_at)
        .limit(limit)
    )
    return [i for i in session.scalars(stmt) if i not in exclude]


def claim(session: Session, job_id: str, owner: str, ttl: float) -> bool:
    """Take the job's lease if it is free, ours, or expired; True when we hold it."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.state.in_(ACTIVE),
               or_(JobRow.lease_owner.is_(None), JobRow.lease_owner == owner, JobRow.lease_expires_at < now()))
        .values(lease_owner=owner, lease_expires_at=now() + timedelta(seconds=ttl), attempt=JobRow.attempt + 1)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def claim_many(session: Session, job_ids: list[str], owner: str, ttl: float) -> list[str]:
    """Take the leases of every job in ``job_ids`` that is free, ours or expired, in one
    statement; returns the ids now held."""
    if not job_ids:
        return []
    _lock_in_order(session, JobRow.id.in_(job_ids))
    session.execute(
        update(JobRow)
        .where(JobRow.id.in_(job_ids), JobRow.state.in_(ACTIVE),
               or_(JobRow.lease_owner.is_(None), JobRow.lease_owner == owner, JobRow.lease_expires_at < now()))
        .values(lease_owner=owner, lease_expires_at=now() + timedelta(seconds=ttl), attempt=JobRow.attempt + 1)
    )
    return list(session.scalars(select(JobRow.id).where(JobRow.id.in_(job_ids), JobRow.lease_owner == owner,
                                                        JobRow.state.in_(ACTIVE))))


def _lock_in_order(session: Session, *where: Any) -> list[str]:
    """Lock the job rows matching ``where`` in id order (a no-op on SQLite, whose writers are
    serialised) and return their ids. Every statement that changes several jobs' rows takes
    them this way first, as the engine's group commit advances them: writers taking the same
    rows in different orders deadlock, and PostgreSQL aborts one of them."""
    return list(session.scalars(select(JobRow.id).where(*where).order_by(JobRow.id).with_for_update()))


def renew(session: Session, owner: str, ttl: float) -> int:
    """Extend the leases of every unfinished job ``owner`` holds. The rows are locked in id
    order first: the engine's group commit advances several jobs in one transaction in that
    same order, and two writers taking the same rows in different orders deadlock (PostgreSQL
    aborts one of them)."""
    held = _lock_in_order(session, JobRow.lease_owner == owner, JobRow.state.in_(ACTIVE))
    if not held:
        return 0
    result = session.execute(
        update(JobRow).where(JobRow.id.in_(held), JobRow.lease_owner == owner, JobRow.state.in_(ACTIVE))
        .values(lease_expires_at=now() + timedelta(seconds=ttl))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def release_others(session: Session, owner: str) -> int:
    """Free the leases of every unfinished job not held by ``owner`` (a new leader takes over)."""
    _lock_in_order(session, JobRow.state.in_(ACTIVE), JobRow.lease_owner.is_not(None), JobRow.lease_owner != owner)
    result = session.execute(
        update(JobRow).where(JobRow.state.in_(ACTIVE), JobRow.lease_owner.is_not(None), JobRow.lease_owner != owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
