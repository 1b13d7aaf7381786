"""The host pools' reconcile pass: converge every pool to its desired size, restart-safe.

One pass visits the pools that may need something (:meth:`Reconciler.due`), each in one
short write transaction (:meth:`Reconciler.visit`), which:

1. marks ``failed`` the requested hosts whose stamp job ended without them (a job that
   failed outright, without its undo) — the pool backs off before asking again;
2. evaluates the pool's SLA policy on its hosts' newest reports, recording any decision
   with its inputs, and moves the desired size;
3. decides (appliance.domain.hostpool.reconcile) what to add, release and replace, and
   does it: a new host is its row, its profile instantiated from the template (identities
   allocated: the host's identity exists from the moment it is requested), its stamp job
   and its ``host.requested`` event, all in this transaction; a host to release is marked
   ``releasing`` here and gets its release job as soon as no other job of its profile runs.

Nothing outside the transaction decides, and each pass counts what exists, so a crash at
any point loses nothing and never makes a host twice: after a restart the next pass sees
the hosts and jobs that were committed, and the engine resumes those jobs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.domain.failover import OPEN_FAILOVER_STATES
from appliance.domain.hostpool import (
    HOST_RELEASED,
    HOST_REPLACED,
    HOST_REQUESTED,
    HOST_TRANSITIONS,
    MAX_NEW_PER_PASS,
    HostState,
    HostView,
    Room,
    reconcile,
)
from appliance.domain.hostpool_policy import PolicyState, Sample, ScalePolicy, evaluate
from appliance.domain.states import ACTIVE_JOB_STATES, JobState, transition
from appliance.engine.steps.host import HOST_RELEASE, HOST_STAMP, mark_stamp_failed, move
from appliance.errors import AnvilError
from appliance.services import host_events, host_placement
from appliance.services.hostpools import quota_of
from appliance.services.profiles import ProfileService
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.repos import jobs as job_repo
from appliance.store.tables import (
    FailoverRow,
    HostMetricRow,
    HostPoolDecisionRow,
    HostPoolRow,
    HostRow,
    JobRow,
    ProfileRow,
)

log = logging.getLogger(__name__)

_ACTIVE = [s.value for s in ACTIVE_JOB_STATES]
_OPEN = [s.value for s in OPEN_FAILOVER_STATES]
_NOT_GONE = [HostState.REQUESTED.value, HostState.READY.value, HostState.FAILED.value, HostState.RELEASING.value]
RELEASE_RETRY = 30.0     # s before a failed release job is tried again
NAME_TRIES = 50          # profile names taken by someone else, skipped when naming a new host


@dataclass(frozen=True, slots=True)
class Visit:
    jobs: int = 0            # jobs submitted (the engine is woken for them)
    changed: bool = False


def _aware(t: datetime | None) -> datetime | None:
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC))


class Reconciler:
    """``clock``: Unix seconds (the SLA policy's windows and cool-downs; tests compress it)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # -- which pools --------------------------------------------------------------------------
    def due(self) -> list[int]:
        """Pools that may need a write: not at their size, hosts on their way in or out or
        failed, or an SLA policy to evaluate. A converged pool costs one grouped read."""
        with self.store.read() as s:
            counts: dict[int, dict[str, int]] = {}
            for pool_id, state, n in s.execute(select(HostRow.pool_id, HostRow.state, func.count())
                                               .where(HostRow.state.in_(_NOT_GONE))
                                               .group_by(HostRow.pool_id, HostRow.state)):
                counts.setdefault(pool_id, {})[state] = n
            out = []
            for pool_id, desired, policy in s.execute(select(HostPoolRow.id, HostPoolRow.desired,
                                                             HostPoolRow.policy).order_by(HostPoolRow.id)):
                c = counts.get(pool_id, {})
                settled = c.get(HostState.READY.value, 0) == desired and sum(c.values()) == desired
                if not settled or policy is not None:
                    out.append(pool_id)
            return out

    def run_once(self) -> Visit:
        """One pass over every pool that is due (each in its own transaction)."""
        jobs, changed = 0, False
        for pool_id in self.due():
            try:
                got = self.visit(pool_id)
            except AnvilError as exc:   # one pool's trouble (a template gone) must not stop the others
                log.warning("host pool %s: %s", pool_id, exc)
                continue
            jobs += got.jobs
            changed = changed or got.changed
        return Visit(jobs, changed)

    # -- one pool -------------------------------------------------------------------------------
    def visit(self, pool_id: int) -> Visit:
        now = datetime.fromtimestamp(self.clock(), UTC)
        with self.store.write() as s:
            pool = s.get(HostPoolRow, pool_id, with_for_update=True)
            if pool is None:
                return Visit()
            hosts = list(s.scalars(select(HostRow).where(HostRow.pool_id == pool.id,
                                                         HostRow.state.in_(_NOT_GONE)).order_by(HostRow.seq)))
            jobs = _jobs(s, hosts)
            changed = self._sweep(s, pool, hosts, jobs)
            changed = self._policy(s, pool, hosts, now) or changed
            active = _active_profiles(s, hosts)
            recovering = _recovering(s, hosts)
            views = [HostView(h.id, h.seq, HostState(h.state), job_active=h.profile_id in active,
                              recovering=h.profile_id in recovering) for h in hosts]
            live = sum(1 for h in hosts if h.state != HostState.RELEASING.value)
            short = pool.desired - live + sum(1 for v in views if v.state is HostState.FAILED and not v.recovering
                                              and not v.job_active)
            room = host_placement.room(s, pool, now=now, limit=min(short, MAX_NEW_PER_PASS)) if short > 0 \
                else Room(0)
            plan = reconcile(pool.desired, views, room)
            by_id = {h.id: h for h in hosts}
            for host_id in plan.release:
                _releasing(by_id[host_id], f"the pool's size dropped to {pool.desired}", pool.keep_profiles)
                changed = True
            added: list[HostRow] = []
            problem = None
            for _ in range(plan.add):
                try:
                    added.append(self._request(s, pool))
                except AnvilError as exc:     # an identity pool exhausted, a template gone: say it, stop
                    problem = f"cannot request a host: {exc}"
                    break
            for host_id, new in zip(plan.replace, added, strict=False):   # a request that failed: it waits
                old = by_id[host_id]
                old.replaced_by, new.replaces = new.id, old.id
                host_events.append(s, pool, old, HOST_REPLACED, replacement=new.id)
                _releasing(old, old.reason or "failed", pool.keep_profiles)
                changed = True
            for new in added:
                host_events.append(s, pool, new, HOST_REQUESTED)
            submitted = len(added) + self._release_jobs(s, pool, hosts, jobs, active, now)
            waiting = problem or plan.waiting
            if pool.waiting != waiting:
                pool.waiting, changed = waiting, True
            return Visit(submitted, changed or bool(added) or submitted > 0)

    def _sweep(self, s: Session, pool: HostPoolRow, hosts: list[HostRow], jobs: dict[str, JobRow]) -> bool:
        """Requested hosts whose stamp job ended without making them ready: failed."""
        changed = False
        for host in hosts:
            if host.state != HostState.REQUESTED.value:
                continue
            job = jobs.get(host.job_id or "")
            if job is None or JobState(job.state) in ACTIVE_JOB_STATES or job.kind != HOST_STAMP.name:
                continue
            if job.state == JobState.SUCCEEDED.value:
                continue     # host-ready found it released or replaced meanwhile; nothing to say
            mark_stamp_failed(s, host, pool, job.error or f"its stamp job {job.state}")
            changed = True
        return changed

    def _policy(self, s: Session, pool: HostPoolRow, hosts: list[HostRow], now: datetime) -> bool:
        if pool.policy is None:
            return False
        policy = ScalePolicy.from_public(pool.policy)
        state = PolicyState.from_public(pool.policy_state)
        ready = [h for h in hosts if h.state == HostState.READY.value]
        names = {h.id: h.name for h in ready}
        rows = s.scalars(select(HostMetricRow).where(HostMetricRow.host_id.in_(list(names))))
        samples = [Sample(names[r.host_id], (_aware(r.at) or now).timestamp(), r.cpu, r.memory, r.vms) for r in rows]
        quota = quota_of(s, pool.tenant)
        limit = None
        if quota is not None:
            others = int(s.scalar(select(func.coalesce(func.sum(HostPoolRow.desired), 0)).where(
                HostPoolRow.tenant == pool.tenant, HostPoolRow.id != pool.id)) or 0)
            limit = max(0, quota - others)
        decision, new_state = evaluate(policy, state, samples, now=now.timestamp(), size=pool.desired,
                                       min_size=pool.min_size, max_size=pool.max_size, ready=len(ready),
                                       limit=limit)
        changed = new_state != state
        if changed:
            pool.policy_state = new_state.public()
        if decision is not None:
            s.add(HostPoolDecisionRow(pool_id=pool.id, at=now, action=decision.action, size_from=decision.size_from,
                                      size_to=decision.size_to, reason=decision.reason, inputs=decision.inputs))
            if decision.action != "hold":
                log.info("host pool %s/%s: %s %d -> %d: %s", pool.tenant, pool.name, decision.action,
                         decision.size_from, decision.size_to, decision.reason)
                pool.desired = decision.size_to
            changed = True
        return changed

    def _request(self, s: Session, pool: HostPoolRow) -> HostRow:
        """A new host: its profile from the template (identities allocated), its row and its stamp job."""
        with s.begin_nested():
            for _ in range(NAME_TRIES):
                seq = pool.next_seq
                pool.next_seq += 1
                name = f"{pool.name}-{seq:03d}"
                taken = s.scalar(select(ProfileRow.id).where(ProfileRow.kind == "ServerProfile",
                                                             ProfileRow.tenant == pool.tenant,
                                                             ProfileRow.name == name))
                if taken is None:
                    break
            else:
                raise AnvilError(f"{NAME_TRIES} profile names after {pool.name}-{seq - NAME_TRIES + 1:03d} are "
                                 "taken by other profiles")
            info = ProfileService(self.store).instantiate_in(s, pool.template, name, tenant=pool.tenant,
                                                             scope=Scope.appliance())
            prow = s.scalar(select(ProfileRow).where(ProfileRow.kind == "ServerProfile",
                                                     ProfileRow.tenant == pool.tenant, ProfileRow.name == name))
            assert prow is not None
            ident = info.profile.spec.identity
            host = HostRow(id=str(uuid.uuid4()), pool_id=pool.id, tenant=pool.tenant, name=name, seq=seq,
                           profile_id=prow.id, state=HostState.REQUESTED.value, keep_profile=pool.keep_profiles,
                           identity={"uuid": ident.uuid, "macs": [n.mac for n in ident.nics if n.mac],
                                     "iqn": ident.iscsiInitiator},
                           management_address=next((n.ipv4.split("/", 1)[0] for n in ident.nics if n.ipv4), None))
            s.add(host)
            s.flush()
            job = job_repo.create(s, kind=HOST_STAMP.name, subject=f"profile {pool.tenant}/{name}",
                                  profile_id=prow.id, tenant=pool.tenant,
                                  params={"profile": name, "tenant": pool.tenant, "pool": pool.blade_pool,
                                          "blade": None, "host": host.id, "hostPool": pool.name},
                                  step_names=HOST_STAMP.step_names, created_by=f"host-pool:{pool.name}")
            host.job_id = job.id
            s.flush()
            return host

    def _release_jobs(self, s: Session, pool: HostPoolRow, hosts: list[HostRow], jobs: dict[str, JobRow],
                      active: set[int | None], now: datetime) -> int:
        """A release job for each releasing host that has none running (and no other job of its profile)."""
        n = 0
        for host in hosts:
            if host.state != HostState.RELEASING.value or host.profile_id in active:
                continue
            last = jobs.get(host.job_id or "")
            if last is not None and last.kind == HOST_RELEASE.name:
                if last.state == JobState.SUCCEEDED.value:
                    continue
                ended = _aware(last.finished_at)
                if ended is not None and (now - ended).total_seconds() < RELEASE_RETRY:
                    continue
            if host.profile_id is None:      # its profile is gone: nothing to take down
                job = None
            else:
                job = job_repo.create(s, kind=HOST_RELEASE.name, subject=f"profile {pool.tenant}/{host.name}",
                                      profile_id=host.profile_id, tenant=pool.tenant,
                                      params={"profile": host.name, "tenant": pool.tenant, "host": host.id,
                                              "hostPool": pool.name},
                                      step_names=HOST_RELEASE.step_names, created_by=f"host-pool:{pool.name}")
            if job is None:
                move(host, HostState.RELEASED)
                host.released_at = now
                host_events.append(s, pool, host, HOST_RELEASED, profileDeleted=False)
                continue
            host.job_id = job.id
            n += 1
        return n


def _releasing(host: HostRow, why: str, keep_profiles: bool) -> None:
    if host.state == HostState.RELEASING.value:
        return
    host.state = transition(HOST_TRANSITIONS, HostState(host.state), HostState.RELEASING,
                            what=f"host {host.name}").value
    host.reason = why[:2000]
    host.keep_profile = host.keep_profile or keep_profiles


def _jobs(s: Session, hosts: list[HostRow]) -> dict[str, JobRow]:
    ids = [h.job_id for h in hosts if h.job_id]
    return {j.id: j for j in s.scalars(select(JobRow).where(JobRow.id.in_(ids)))} if ids else {}


def _active_profiles(s: Session, hosts: list[HostRow]) -> set[int | None]:
    pids = [h.profile_id for h in hosts if h.profile_id is not None]
    if not pids:
        return set()
    return set(s.scalars(select(JobRow.profile_id).where(JobRow.profile_id.in_(pids), JobRow.state.in_(_ACTIVE))))


def _recovering(s: Session, hosts: list[HostRow]) -> set[int | None]:
    pids = [h.profile_id for h in hosts if h.profile_id is not None and h.state == HostState.FAILED.value]
    if not pids:
        return set()
    return set(s.scalars(select(FailoverRow.profile_id).where(FailoverRow.profile_id.in_(pids),
                                                              FailoverRow.state.in_(_OPEN))))

