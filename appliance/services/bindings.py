"""Forgetting the bindings of blades whose hardware is gone, in the store only.

A release is a job: it powers the blade off, clears its identities, parks its ports and
revokes its LUN access through the drivers. When the blades themselves are going away
(``anvil lab down --force`` stopping the emulators a crashed session left running) there
is nothing left to talk to, so only the store is set straight, in one transaction: each
live binding of those blades ends, its profile is unassigned (it keeps its identities, as
after a release), the unfinished jobs of that profile or blade and the open failovers
from or to the blade end with the reason given, and each blade goes back to ``spare`` so
it can be deleted. Every change goes through the state tables and is audited as the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from appliance.domain.failover import OPEN_FAILOVER_STATES, FailoverState
from appliance.domain.states import (
    ACTIVE_JOB_STATES,
    BLADE_TRANSITIONS,
    PROFILE_TRANSITIONS,
    BladeState,
    JobState,
    ProfileState,
    transition,
)
from appliance.services.failover import advance_record
from appliance.store import Store
from appliance.store.repos import jobs as job_repo
from appliance.store.tables import BindingRow, BladeRow, FailoverRow, JobRow, ProfileRow

S = TypeVar("S", bound=StrEnum)

# Blade states BladeService.delete accepts as they are.
_DELETABLE = frozenset({BladeState.SPARE, BladeState.MAINTENANCE, BladeState.FAILED})


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What was set straight for one blade."""

    blade: str
    profile: str | None          # tenant/name of the profile that was bound to it
    jobs: tuple[str, ...] = ()   # its unfinished jobs, ended
    failovers: tuple[int, ...] = ()   # its open failovers, ended


def _through_failed(table: Mapping[S, frozenset[S]], current: S, wanted: S, failed: S, what: str) -> S:
    """``wanted``, by way of ``failed`` where the table has no direct move (active → failed → spare)."""
    if current is not wanted and wanted not in table[current] and failed in table[current]:
        current = transition(table, current, failed, what=what)
    return transition(table, current, wanted, what=what)


def _end_jobs(s: Session, jobs: list[JobRow], reason: str) -> tuple[str, ...]:
    for job in jobs:
        job_repo.set_state(s, job, JobState.CANCELLED if job.state == JobState.PENDING else JobState.FAILED)
        job.error, job.wait_event, job.deadline_at = reason, None, None
        job_repo.add_event(s, job.id, "forgotten", reason)
    return tuple(job.id for job in jobs)


def _forget_one(s: Session, blade: BladeRow, active_jobs: list[JobRow], reason: str, now: datetime) -> Forgotten:
    prow = None
    binding = s.scalar(select(BindingRow).where(BindingRow.blade_id == blade.id, BindingRow.state == "live")
                       .with_for_update())
    if binding is not None:
        binding.state, binding.ended_at = "ended", now
        prow = s.get(ProfileRow, binding.profile_id, with_for_update=True)
    if prow is not None:
        prow.state = _through_failed(PROFILE_TRANSITIONS, ProfileState(prow.state), ProfileState.UNASSIGNED,
                                     ProfileState.FAILED, f"profile {prow.tenant}/{prow.name}").value
    mine = [j for j in active_jobs
            if (prow is not None and j.profile_id == prow.id) or (j.data or {}).get("blade") == blade.name]
    jobs = _end_jobs(s, mine, reason)
    about = [FailoverRow.from_blade == blade.name, FailoverRow.to_blade == blade.name]
    if prow is not None:
        about.append(FailoverRow.profile_id == prow.id)
    failovers = list(s.scalars(select(FailoverRow).where(
        FailoverRow.state.in_([f.value for f in OPEN_FAILOVER_STATES]), or_(*about))))
    for record in failovers:
        advance_record(record, FailoverState.FAILED, reason=reason, at=now)
    if BladeState(blade.state) not in _DELETABLE:
        blade.state = _through_failed(BLADE_TRANSITIONS, BladeState(blade.state), BladeState.SPARE,
                                      BladeState.FAILED, f"blade {blade.name}").value
    return Forgotten(blade.name, f"{prow.tenant}/{prow.name}" if prow is not None else None, jobs,
                     tuple(r.id for r in failovers))


def forget_blades(store: Store, names: Sequence[str], *, reason: str) -> list[Forgotten]:
    """Set the store straight for the named blades, whose hardware is gone (see the module doc).

    Nothing but those blades, their live bindings, the profiles bound to them, the
    unfinished jobs of those profiles or blades and the open failovers from or to them is
    touched. Returns one entry per blade that had something to forget; unknown names and
    spare blades with nothing open are skipped, so running it again changes nothing.
    """
    now = datetime.now(UTC)
    out = []
    with store.write() as s:
        blades = s.scalars(select(BladeRow).where(BladeRow.name.in_(list(names))).order_by(BladeRow.name)
                           .with_for_update()).all()
        active = list(s.scalars(select(JobRow).where(JobRow.state.in_([j.value for j in ACTIVE_JOB_STATES]))))
        for blade in blades:
            was = blade.state
            done = _forget_one(s, blade, active, reason, now)
            active = [j for j in active if j.id not in done.jobs]
            if done.profile is not None or done.jobs or done.failovers or blade.state != was:
                out.append(done)
    return out
