"""Failover bookkeeping: domains, blade health history, failover records and their timelines.

The engine's failover job and the monitor drive failovers; this module is what they
(and the CLI, API and console) read and write. The session-level functions
(:func:`open_record`, :func:`advance_record`, :func:`append_event`) work inside a
caller's transaction, so a job step can record its progress in the same commit as its
result; :class:`FailoverService` wraps each in a short transaction of its own.

Secrets: a domain's webhook secret is encrypted with the appliance key before it
reaches the store; nothing here returns or logs it, except
:meth:`FailoverService.webhook_target`, which hands it to the webhook sender as a
:class:`~appliance.drivers.protocols.Secret`.

"Needs operator": when no fence can be confirmed, the failover record goes to
``needs-operator`` with the reason and the profile to the existing profile state
``needs-operator``; ``confirm_fenced`` (an admin, by hand) records the fence and puts
both back on their way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from appliance.domain.failover import (
    FAILOVER_TRANSITIONS,
    FINAL_FAILOVER_STATES,
    OPEN_FAILOVER_STATES,
    FailedProfile,
    FailoverDomain,
    FailoverEvent,
    FailoverState,
    FenceMethod,
    Policy,
    SparePlan,
    domain_problems,
    is_event_name,
    plan_spares,
)
from appliance.domain.placement import Candidate
from appliance.domain.states import (
    BLADE_TRANSITIONS,
    PROFILE_TRANSITIONS,
    BladeState,
    InvalidTransition,
    ProfileState,
    transition,
)
from appliance.domain.suggest import close_names, did_you_mean
from appliance.drivers.protocols import Secret
from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.services import scope as lookup
from appliance.services.blade_pools import DEFAULT_POOL
from appliance.services.host_failover import on_failover
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.audit import current_actor, record
from appliance.store.tables import (
    BindingRow,
    BladeHealthRow,
    BladePoolRow,
    BladeRow,
    FailoverDomainRow,
    FailoverRow,
    JobEventRow,
    JobRow,
    ProfileRow,
)

log = logging.getLogger(__name__)

HISTORY_LIMIT = 200
_HEALTH_INSERT = insert(BladeHealthRow)
_BLADE_IDS = select(BladeRow.name, BladeRow.id).where(BladeRow.name.in_(bindparam("names", expanding=True)))
_IN_CHUNK = 900    # names per IN (…): below every SQLite's bound-parameter limit
HEALTH_SOURCES = frozenset({"poll", "event", "heartbeat", "probe"})
_OPEN = [s.value for s in OPEN_FAILOVER_STATES]
# The timeline event written when a record enters a state, unless the caller names another.
_STATE_EVENT = {
    FailoverState.FENCED: FailoverEvent.FENCED, FailoverState.NEEDS_OPERATOR: FailoverEvent.FENCE_UNCONFIRMED,
    FailoverState.WAITING: FailoverEvent.WAITING, FailoverState.MOVING: FailoverEvent.SPARE_CHOSEN,
    FailoverState.BOOTING: FailoverEvent.POWERED_ON, FailoverState.SUCCEEDED: FailoverEvent.ACTIVE,
    FailoverState.FAILED: FailoverEvent.FAILED, FailoverState.CANCELLED: FailoverEvent.CANCELLED,
}


def _aware(t: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored in UTC."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _iso(t: datetime | None) -> str | None:
    return _aware(t).isoformat() if t else None


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProtectedProfile:
    tenant: str
    name: str
    priority: int
    policy: str
    state: str
    blade: str | None


@dataclass(frozen=True, slots=True)
class DomainInfo:
    name: str
    spare_pool: str
    description: str
    restart_attempts: int
    webhook_url: str | None
    has_webhook_secret: bool
    profiles: tuple[ProtectedProfile, ...]
    created_at: datetime
    vm_hosts: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        """Plain data for output; the webhook secret is never part of it."""
        return {"name": self.name, "sparePool": self.spare_pool, "vmHosts": list(self.vm_hosts),
                "description": self.description,
                "restartAttempts": self.restart_attempts, "webhookUrl": self.webhook_url,
                "webhookSecret": "***" if self.has_webhook_secret else None,
                "profiles": [{"tenant": p.tenant, "name": p.name, "priority": p.priority, "policy": p.policy,
                              "state": p.state, "blade": p.blade} for p in self.profiles],
                "createdAt": _iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    domain: str
    url: str
    secret: Secret


@dataclass(frozen=True, slots=True)
class HealthSample:
    """One observation of a blade, as the monitor records it."""

    ok: bool
    source: str = "poll"
    at: datetime | None = None      # default: now
    power: str | None = None
    health: str | None = None
    verdict: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HealthEntry:
    blade: str
    at: datetime
    source: str
    ok: bool
    power: str | None
    health: str | None
    verdict: str | None
    detail: str

    def public(self) -> dict[str, Any]:
        return {"blade": self.blade, "at": _iso(self.at), "source": self.source, "ok": self.ok,
                "power": self.power, "health": self.health, "verdict": self.verdict, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class FailoverInfo:
    id: int
    tenant: str
    profile: str
    domain: str
    policy: str
    priority: int
    drill: bool
    from_blade: str | None
    to_blade: str | None
    state: str
    reason: str | None
    fence: str | None
    timeline: tuple[dict[str, Any], ...]   # {"event", "at" (ISO 8601), "detail"}
    job_id: str | None
    detected_at: datetime
    finished_at: datetime | None

    @property
    def final(self) -> bool:
        return FailoverState(self.state) in FINAL_FAILOVER_STATES

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "profile": self.profile, "domain": self.domain,
                "policy": self.policy, "priority": self.priority, "drill": self.drill, "fromBlade": self.from_blade,
                "toBlade": self.to_blade, "state": self.state, "reason": self.reason, "fence": self.fence,
                "timeline": [dict(e) for e in self.timeline], "jobId": self.job_id,
                "detectedAt": _iso(self.detected_at), "finishedAt": _iso(self.finished_at)}


def failover_info(row: FailoverRow) -> FailoverInfo:
    return FailoverInfo(row.id, row.tenant, row.profile, row.domain, row.policy, row.priority, row.drill,
                        row.from_blade, row.to_blade, row.state, row.reason, row.fence,
                        tuple(dict(e) for e in row.timeline or ()), row.job_id, _aware(row.detected_at),
                        _aware(row.finished_at) if row.finished_at else None)


# --- session-level operations (inside a caller's transaction) -------------------------


def _blade(s: Session, name: str) -> BladeRow:
    row = s.scalar(select(BladeRow).where(BladeRow.name == name))
    if row is None:   # appliance-level callers (the CLI, admins): every blade is in sight
        raise NotFound("blade", name, hint=lookup.blade_hint(s, Scope.appliance(), name))
    return row


def _domain_row(s: Session, name: str) -> FailoverDomainRow:
    row = s.scalar(select(FailoverDomainRow).where(FailoverDomainRow.name == name))
    if row is None:
        raise NotFound("failover domain", name, hint=did_you_mean(close_names(
            name, s.scalars(select(FailoverDomainRow.name)))))
    return row


def _failover_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    spec = doc.get("spec") or {}
    fo = spec.get("failover")
    return fo if isinstance(fo, dict) else None


def append_event(row: FailoverRow, event: str, *, detail: str | None = None, at: datetime | None = None,
                 once: bool = False) -> bool:
    """Add ``event`` to the record's timeline; with ``once``, not if it is already there
    (a re-run step converges). Returns whether it was added."""
    if not is_event_name(event):
        raise ValidationError([Issue("event", f"{event!r} is not an event name (lowercase, '-', ≤ 32)")])
    timeline = list(row.timeline or ())
    if once and any(e.get("event") == event for e in timeline):
        return False
    timeline.append({"event": event, "at": _iso(at or datetime.now(UTC)), "detail": detail})
    row.timeline = timeline  # a new list: the JSON column sees the change
    return True


def open_record(s: Session, *, tenant: str, profile: str, reason: str, from_blade: str | None = None,
                domain: str | None = None, drill: bool = False, job_id: str | None = None,
                detected_at: datetime | None = None) -> FailoverRow:
    """Start the record of a failover of ``tenant/profile``.

    The domain, policy and priority come from the profile's ``spec.failover`` (``domain``
    overrides it; a profile without one needs it). The old blade defaults to the one
    bound to the profile. Raises NotFound, ValidationError, or Conflict when the profile
    already has an open failover.
    """
    prow = s.scalar(select(ProfileRow).where(ProfileRow.kind == "ServerProfile", ProfileRow.tenant == tenant,
                                             ProfileRow.name == profile))
    if prow is None:
        raise NotFound("profile", profile, tenant=tenant)
    spec = _failover_spec(prow.document) or {}
    domain_name = domain or spec.get("domain")
    if not domain_name:
        raise ValidationError([Issue("domain", "the profile has no spec.failover; name a failover domain")],
                              source=f"profile {tenant}/{profile}")
    _domain_row(s, domain_name)
    if from_blade is not None:
        _blade(s, from_blade)
    else:
        from_blade = s.scalar(select(BladeRow.name).join(BindingRow, BindingRow.blade_id == BladeRow.id)
                              .where(BindingRow.profile_id == prow.id, BindingRow.state == "live"))
    at = detected_at or datetime.now(UTC)
    row = FailoverRow(profile_id=prow.id, tenant=tenant, profile=profile, domain=domain_name,
                      policy=str(spec.get("policy", Policy.N_PLUS_1.value)), priority=int(spec.get("priority", 0)),
                      drill=drill, from_blade=from_blade, state=FailoverState.DETECTED.value, reason=reason,
                      timeline=[], job_id=job_id, detected_at=at)
    append_event(row, FailoverEvent.DETECTED.value, detail=reason, at=at)
    try:
        with s.begin_nested():
            s.add(row)
            s.flush()
    except IntegrityError:
        other = s.scalar(select(FailoverRow).where(FailoverRow.profile_id == prow.id, FailoverRow.state.in_(_OPEN)))
        which = f" (#{other.id}, {other.state})" if other else ""
        raise Conflict(f"profile {tenant}/{profile} already has an open failover{which}") from None
    on_failover(s, row)     # a pool's host: host.failed, in this transaction
    log.info("failover #%s of %s/%s opened: %s", row.id, tenant, profile, reason,
             extra={"profile": f"{tenant}/{profile}", "blade": from_blade})
    return row


def advance_record(row: FailoverRow, state: FailoverState, *, event: str | None = None, detail: str | None = None,
                   reason: str | None = None, to_blade: str | None = None, fence: FenceMethod | None = None,
                   job_id: str | None = None, at: datetime | None = None) -> None:
    """Move a record to ``state`` (checked against the transition table), setting the fields
    given. Staying in the same state is allowed and adds no timeline entry, so a re-run
    step converges. Raises Conflict for a move the table forbids, ValidationError when
    entering ``fenced`` without a fence method or ``moving`` without a spare."""
    current = FailoverState(row.state)
    try:
        transition(FAILOVER_TRANSITIONS, current, state, what=f"failover #{row.id}")
    except InvalidTransition as exc:
        raise Conflict(str(exc)) from None
    if state is FailoverState.FENCED and fence is None and row.fence is None:
        raise ValidationError([Issue("fence", "entering fenced needs how the blade was fenced")])
    if state is FailoverState.MOVING and to_blade is None and row.to_blade is None:
        raise ValidationError([Issue("toBlade", "entering moving needs the chosen spare")])
    if event is not None and not is_event_name(event):
        raise ValidationError([Issue("event", f"{event!r} is not an event name (lowercase, '-', ≤ 32)")])
    if fence is not None:
        row.fence = fence.value
    if to_blade is not None:
        row.to_blade = to_blade
    if reason is not None:
        row.reason = reason
    if job_id is not None:
        row.job_id = job_id
    if state is not current:
        row.state = state.value
        name = event or (_STATE_EVENT[state].value if state in _STATE_EVENT else None)
        if name is not None:
            if detail is None and state is FailoverState.MOVING:
                detail = row.to_blade
            append_event(row, name, detail=detail if detail is not None else reason, at=at)
        if state in FINAL_FAILOVER_STATES:
            row.finished_at = at or datetime.now(UTC)
        session = object_session(row)
        if session is not None:
            on_failover(session, row)    # a pool's host keeps its id: host.ready again, or stays failed


def _move_profile(row: ProfileRow, wanted: ProfileState) -> None:
    """Through ``failed`` when there is no direct way (active → failed → needs-operator)."""
    current = ProfileState(row.state)
    what = f"profile {row.tenant}/{row.name}"
    try:
        if current is not wanted and wanted not in PROFILE_TRANSITIONS[current] \
                and ProfileState.FAILED in PROFILE_TRANSITIONS[current]:
            current = transition(PROFILE_TRANSITIONS, current, ProfileState.FAILED, what=what)
        row.state = transition(PROFILE_TRANSITIONS, current, wanted, what=what).value
    except InvalidTransition as exc:
        raise Conflict(str(exc)) from None


# --- the service ----------------------------------------------------------------------


class FailoverService:
    def __init__(self, store: Store, box: SecretBox | None = None, *, history_limit: int = HISTORY_LIMIT) -> None:
        self._store = store
        self._box = box
        self._history_limit = history_limit
        # Drops a blade's samples older than its newest ``history_limit`` (none while it has fewer).
        h = BladeHealthRow
        newest_kept = (select(h.id).where(h.blade_id == bindparam("blade")).order_by(h.id.desc())
                       .offset(history_limit - 1).limit(1).scalar_subquery())
        self._prune = delete(h).where(h.blade_id == bindparam("blade"), h.id < newest_kept)

    def _secret_box(self) -> SecretBox:
        if self._box is None:
            raise ValueError("FailoverService needs the SecretBox for webhook secrets")
        return self._box

    # -- domains ---------------------------------------------------------
    def create_domain(self, name: str, *, spare_pool: str = DEFAULT_POOL, description: str = "",
                      restart_attempts: int = 1, webhook_url: str | None = None,
                      webhook_secret: Secret | None = None, vm_hosts: Sequence[str] = ()) -> DomainInfo:
        value = FailoverDomain(name, spare_pool, restart_attempts, webhook_url or None, description)
        self._check(value, webhook_secret, secret_required=True)
        with self._store.write() as s:
            if s.scalar(select(FailoverDomainRow.id).where(FailoverDomainRow.name == name)) is not None:
                raise Conflict(f"failover domain {name!r} already exists")
            self._check_pool(s, spare_pool)
            hosts = self._check_vm_hosts(s, vm_hosts)
            row = FailoverDomainRow(name=name, spare_pool=spare_pool, description=description,
                                    restart_attempts=restart_attempts, webhook_url=value.webhook_url,
                                    webhook_secret_enc=self._encrypt(webhook_secret), vm_hosts=hosts)
            s.add(row)
            s.flush()
            info = self._info(s, row)
            record(s, action="create", resource="failover-domain", name=name, after=_audited(info))
            return info

    def update_domain(self, name: str, *, spare_pool: str | None = None, description: str | None = None,
                      restart_attempts: int | None = None, webhook_url: str | None = None,
                      webhook_secret: Secret | None = None, remove_webhook: bool = False,
                      vm_hosts: Sequence[str] | None = None) -> DomainInfo:
        """Change the fields given; ``remove_webhook`` drops the URL and the secret; ``vm_hosts``
        replaces the list of VM hosts (empty: none)."""
        if remove_webhook and (webhook_url or webhook_secret):
            raise ValidationError([Issue("webhookUrl", "give a new webhook or remove it, not both")])
        with self._store.write() as s:
            row = _domain_row(s, name)
            before = self._info(s, row)
            url = None if remove_webhook else (webhook_url or row.webhook_url)
            value = FailoverDomain(name, spare_pool or row.spare_pool,
                                   row.restart_attempts if restart_attempts is None else restart_attempts, url,
                                   row.description if description is None else description)
            keeps_secret = row.webhook_secret_enc is not None and not remove_webhook
            self._check(value, webhook_secret, secret_required=not keeps_secret)
            if spare_pool is not None:
                self._check_pool(s, spare_pool)
            if vm_hosts is not None:
                row.vm_hosts = self._check_vm_hosts(s, vm_hosts)
            row.spare_pool, row.description = value.spare_pool, value.description
            row.restart_attempts, row.webhook_url = value.restart_attempts, value.webhook_url
            if remove_webhook:
                row.webhook_secret_enc = None
            elif webhook_secret is not None:
                row.webhook_secret_enc = self._encrypt(webhook_secret)
            s.flush()
            info = self._info(s, row)
            record(s, action="update", resource="failover-domain", name=name, before=_audited(before),
                   after=_audited(info, secret_changed=webhook_secret is not None))
            return info

    def delete_domain(self, name: str) -> None:
        """Refused while profiles name the domain or a failover in it is open."""
        with self._store.write() as s:
            row = _domain_row(s, name)
            members = _members(s, name)
            if members:
                shown = ", ".join(f"{p.tenant}/{p.name}" for p in members[:5])
                more = f" and {len(members) - 5} more" if len(members) > 5 else ""
                raise Conflict(f"failover domain {name!r} still protects {len(members)} profile(s) "
                               f"({shown}{more}); change their spec.failover first")
            busy = s.scalar(select(FailoverRow.id).where(FailoverRow.domain == name, FailoverRow.state.in_(_OPEN)))
            if busy is not None:
                raise Conflict(f"failover domain {name!r} has an open failover (#{busy})")
            before = self._info(s, row)
            s.delete(row)
            record(s, action="delete", resource="failover-domain", name=name, before=_audited(before))

    def get_domain(self, name: str) -> DomainInfo:
        with self._store.read() as s:
            return self._info(s, _domain_row(s, name))

    def drill_target(self, domain: str, profile: str | None = None) -> ProtectedProfile:
        """The profile a drill of ``domain`` moves: the least important active one (or
        ``profile``, TENANT/NAME). Conflict when the domain has none to move."""
        members = [p for p in self.get_domain(domain).profiles if p.state == "active" and p.blade]
        if profile:
            members = [p for p in members if f"{p.tenant}/{p.name}" == profile]
        if not members:
            raise Conflict(f"domain {domain} has no active protected profile" + (f" named {profile}" if profile
                                                                                 else "") + " to drill with")
        return members[-1]     # members are most important first

    def list_domains(self) -> list[DomainInfo]:
        with self._store.read() as s:
            members = _members_by_domain(s)
            return [self._info(s, r, members.get(r.name, []))
                    for r in s.scalars(select(FailoverDomainRow).order_by(FailoverDomainRow.name))]

    def webhook_target(self, name: str) -> WebhookTarget | None:
        """The domain's webhook with its secret decrypted, for the sender; None without one."""
        with self._store.read() as s:
            row = _domain_row(s, name)
            url, enc = row.webhook_url, row.webhook_secret_enc
        if url is None or enc is None:
            return None
        return WebhookTarget(name, url, self._secret_box().decrypt(enc))

    def _check(self, value: FailoverDomain, secret: Secret | None, *, secret_required: bool) -> None:
        problems = domain_problems(value, webhook_secret=secret.reveal() if secret is not None else None,
                                   secret_required=secret_required)
        if problems:
            raise ValidationError([Issue(f, r) for f, r in problems], source=f"failover domain {value.name}")

    @staticmethod
    def _check_pool(s: Session, pool: str) -> None:
        if pool != DEFAULT_POOL and s.scalar(select(BladePoolRow.id).where(BladePoolRow.name == pool)) is None:
            raise ValidationError([Issue("sparePool", f"blade pool {pool!r} does not exist")])

    @staticmethod
    def _check_vm_hosts(s: Session, hosts: Sequence[str]) -> list[str]:
        """The VM hosts named, each enrolled, in order, once; ValidationError naming the others."""
        from appliance.store.tables import VmHostRow

        wanted = list(dict.fromkeys(hosts))
        known = set(s.scalars(select(VmHostRow.name).where(VmHostRow.name.in_(wanted))))
        missing = [h for h in wanted if h not in known]
        if missing:
            raise ValidationError([Issue("vmHosts", f"VM host {h!r} is not enrolled (anvil vm-host enroll)")
                                   for h in missing])
        return wanted

    def _encrypt(self, secret: Secret | None) -> str | None:
        return self._secret_box().encrypt(secret) if secret is not None else None

    @staticmethod
    def _info(s: Session, row: FailoverDomainRow, members: list[ProtectedProfile] | None = None) -> DomainInfo:
        if members is None:
            members = _members(s, row.name)
        return DomainInfo(row.name, row.spare_pool, row.description, row.restart_attempts, row.webhook_url,
                          row.webhook_secret_enc is not None, tuple(members), _aware(row.created_at),
                          tuple(row.vm_hosts or ()))

    # -- health history --------------------------------------------------
    def record_health(self, blade: str, sample: HealthSample) -> None:
        """Add one sample to the blade's history (the oldest beyond the limit are dropped)."""
        if self.record_health_many([(blade, sample)]) == 0:
            raise NotFound("blade", blade)

    def record_health_many(self, samples: Iterable[tuple[str, HealthSample]]) -> int:
        """Add many samples in one transaction (a poll round). Blades deleted since they were
        polled are skipped; returns how many samples were written. Invalid samples are
        refused before anything is written."""
        batch = list(samples)
        issues = [Issue(f"samples[{i}].source", f"{smp.source!r} is not one of {', '.join(sorted(HEALTH_SOURCES))}")
                  for i, (_, smp) in enumerate(batch) if smp.source not in HEALTH_SOURCES]
        if issues:
            raise ValidationError(issues)
        if not batch:
            return 0
        now = datetime.now(UTC)
        names = list({b for b, _ in batch})
        with self._store.write() as s:
            # Column inserts and one DELETE run per blade by the driver (executemany): a poll round
            # of 10,000 samples took ~2 s of CPU, and held the store's write lock ~3 s, as ORM
            # objects plus two statements per blade to prune; now a fraction of that.
            conn = s.connection()
            ids: dict[str, int] = {}
            for i in range(0, len(names), _IN_CHUNK):
                ids.update((str(r[0]), int(r[1])) for r in conn.execute(_BLADE_IDS, {"names": names[i:i + _IN_CHUNK]}))
            rows = [{"blade_id": ids[blade], "at": smp.at or now, "source": smp.source, "ok": smp.ok,
                     "power": _cut(smp.power, 16), "health": _cut(smp.health, 16),
                     "verdict": _cut(smp.verdict, 16), "detail": _cut(smp.detail, 512) or ""}
                    for blade, smp in batch if blade in ids]
            if rows:
                conn.execute(_HEALTH_INSERT, rows)
                conn.execute(self._prune, [{"blade": bid} for bid in dict.fromkeys(r["blade_id"] for r in rows)])
            return len(rows)

    def health_history(self, blade: str, *, limit: int = HISTORY_LIMIT) -> list[HealthEntry]:
        """The blade's samples, newest first (in the order recorded)."""
        with self._store.read() as s:
            row = _blade(s, blade)
            rows = s.scalars(select(BladeHealthRow).where(BladeHealthRow.blade_id == row.id)
                             .order_by(BladeHealthRow.id.desc()).limit(max(1, limit)))
            return [HealthEntry(blade, _aware(r.at), r.source, r.ok, r.power, r.health, r.verdict, r.detail)
                    for r in rows]

    # -- failover records ------------------------------------------------
    def open_failover(self, *, tenant: str, profile: str, reason: str, from_blade: str | None = None,
                      domain: str | None = None, drill: bool = False, job_id: str | None = None,
                      detected_at: datetime | None = None) -> FailoverInfo:
        """See :func:`open_record`."""
        with self._store.write() as s:
            return failover_info(open_record(s, tenant=tenant, profile=profile, reason=reason,
                                             from_blade=from_blade, domain=domain, drill=drill, job_id=job_id,
                                             detected_at=detected_at))

    def advance(self, failover_id: int, state: FailoverState, *, event: str | None = None,
                detail: str | None = None, reason: str | None = None, to_blade: str | None = None,
                fence: FenceMethod | None = None, job_id: str | None = None,
                at: datetime | None = None) -> FailoverInfo:
        """See :func:`advance_record`."""
        with self._store.write() as s:
            row = self._record(s, failover_id)
            advance_record(row, state, event=event, detail=detail, reason=reason, to_blade=to_blade, fence=fence,
                           job_id=job_id, at=at)
            return failover_info(row)

    def add_event(self, failover_id: int, event: str, *, detail: str | None = None, at: datetime | None = None,
                  once: bool = False) -> FailoverInfo:
        with self._store.write() as s:
            row = self._record(s, failover_id)
            append_event(row, event, detail=detail, at=at, once=once)
            return failover_info(row)

    def get_failover(self, failover_id: int, *, scope: Scope | None = None) -> FailoverInfo:
        """Failover ``failover_id``; NotFound also when it is out of ``scope``'s sight."""
        with self._store.read() as s:
            if scope is not None:
                return failover_info(lookup.failover_row(s, scope, failover_id))
            return failover_info(self._record(s, failover_id))

    def list_failovers(self, *, domain: str | None = None, tenant: str | None = None, profile: str | None = None,
                       state: str | None = None, open_only: bool = False, limit: int = 50) -> list[FailoverInfo]:
        """Newest first."""
        stmt = select(FailoverRow).order_by(FailoverRow.id.desc()).limit(max(1, limit))
        for col, val in ((FailoverRow.domain, domain), (FailoverRow.tenant, tenant), (FailoverRow.profile, profile),
                         (FailoverRow.state, state)):
            if val is not None:
                stmt = stmt.where(col == val)
        if open_only:
            stmt = stmt.where(FailoverRow.state.in_(_OPEN))
        with self._store.read() as s:
            return [failover_info(r) for r in s.scalars(stmt)]

    def mark_needs_operator(self, failover_id: int, reason: str) -> FailoverInfo:
        """No fence could be confirmed: hold the failover (from ``fencing``) and its profile
        (``needs-operator``, through ``failed`` from ``active``) until an admin confirms the
        fence by hand (:meth:`confirm_fenced`)."""
        with self._store.write() as s:
            row = self._record(s, failover_id)
            advance_record(row, FailoverState.NEEDS_OPERATOR, reason=reason)
            prow = s.get(ProfileRow, row.profile_id) if row.profile_id is not None else None
            if prow is not None:
                _move_profile(prow, ProfileState.NEEDS_OPERATOR)
            log.warning("failover #%s of %s/%s needs an operator: %s", row.id, row.tenant, row.profile, reason,
                        extra={"profile": f"{row.tenant}/{row.profile}", "blade": row.from_blade})
            return failover_info(row)

    def confirm_fenced(self, blade: str, *, by: str | None = None) -> FailoverInfo:
        """An admin confirms by hand that ``blade`` is cut off (powered off or unplugged).

        Only for a blade whose failover waits in ``needs-operator``. Records, in one
        transaction: the blade ``fenced`` (with who confirmed), the failover ``fenced``
        by ``operator`` with a ``fence-confirmed`` event, the profile back to ``failed``
        (on its way to a spare), and a ``fence-confirmed`` event on the failover's job,
        which the engine's waiting step reads.
        """
        actor = current_actor()
        who = by or (actor.who if actor else "unknown")
        with self._store.write() as s:
            brow = _blade(s, blade)
            row = s.scalar(select(FailoverRow).where(FailoverRow.from_blade == blade,
                                                     FailoverRow.state == FailoverState.NEEDS_OPERATOR.value)
                           .order_by(FailoverRow.id.desc()))
            if row is None:
                raise Conflict(f"blade {blade!r} has no failover waiting for a fence confirmation")
            try:
                brow.state = transition(BLADE_TRANSITIONS, BladeState(brow.state), BladeState.FENCED,
                                        what=f"blade {blade}").value
            except InvalidTransition as exc:
                raise Conflict(str(exc)) from None
            brow.state_reason = f"fence confirmed by hand by {who}"
            advance_record(row, FailoverState.FENCED, fence=FenceMethod.OPERATOR,
                           event=FailoverEvent.FENCE_CONFIRMED.value, detail=f"by {who}")
            prow = s.get(ProfileRow, row.profile_id) if row.profile_id is not None else None
            if prow is not None and prow.state == ProfileState.NEEDS_OPERATOR.value:
                _move_profile(prow, ProfileState.FAILED)
            if row.job_id and s.get(JobRow, row.job_id) is not None:
                s.add(JobEventRow(job_id=row.job_id, kind="fence-confirmed",
                                  message=f"blade {blade} confirmed fenced by hand by {who}",
                                  data={"blade": blade, "failover": row.id, "by": who}))
            record(s, action="confirm-fenced", resource="blade", name=blade,
                   after={"failover": row.id, "profile": f"{row.tenant}/{row.profile}"})
            log.warning("blade %s confirmed fenced by hand by %s (failover #%s)", blade, who, row.id,
                        extra={"blade": blade})
            return failover_info(row)

    def clear_failed(self, blade: str) -> None:
        """An admin returns a failed (or fenced) blade to the spares after repair."""
        with self._store.write() as s:
            brow = _blade(s, blade)
            if brow.state not in (BladeState.FAILED.value, BladeState.FENCED.value):
                raise Conflict(f"blade {blade!r} is {brow.state}, not failed or fenced")
            if s.scalar(select(BindingRow.id).where(BindingRow.blade_id == brow.id, BindingRow.state == "live")):
                raise Conflict(f"blade {blade!r} is still bound to a profile")
            busy = s.scalar(select(FailoverRow).where(FailoverRow.from_blade == blade, FailoverRow.state.in_(_OPEN)))
            if busy is not None:
                raise Conflict(f"blade {blade!r} is the failed blade of open failover #{busy.id} ({busy.state})")
            brow.state = transition(BLADE_TRANSITIONS, BladeState(brow.state), BladeState.SPARE,
                                    what=f"blade {blade}").value
            brow.state_reason = None

    def failback_candidate(self, blade: str) -> tuple[str, str] | None:
        """(tenant, profile) of the profile a failback to the repaired ``blade`` moves: the
        latest one whose own latest failover moved it off ``blade``, if it is active elsewhere.
        One only: the blade takes one profile, and older ones may have moved on since."""
        with self._store.read() as s:
            _blade(s, blade)
            latest = (select(FailoverRow.profile_id, func.max(FailoverRow.id).label("last"))
                      .where(FailoverRow.profile_id.is_not(None)).group_by(FailoverRow.profile_id).subquery())
            row = s.execute(
                select(ProfileRow.tenant, ProfileRow.name, BladeRow.name.label("host"))
                .join(latest, latest.c.profile_id == ProfileRow.id)
                .join(FailoverRow, FailoverRow.id == latest.c.last)
                .join(BindingRow, (BindingRow.profile_id == ProfileRow.id) & (BindingRow.state == "live"))
                .join(BladeRow, BladeRow.id == BindingRow.blade_id)
                .where(FailoverRow.from_blade == blade, FailoverRow.drill.is_(False),
                       FailoverRow.state == FailoverState.SUCCEEDED.value,
                       ProfileRow.state == ProfileState.ACTIVE.value)
                .order_by(FailoverRow.id.desc()).limit(1)).first()
        return (row.tenant, row.name) if row is not None and row.host != blade else None

    def spare_plan(self, domain: str) -> SparePlan:
        """Who gets which spare of the domain's pool now, and who waits (in order, with why).

        Covers the domain's failovers that are fenced and need a spare (``fenced``,
        ``waiting``). The plan is deterministic, so concurrent failover jobs of one
        domain that each take ``plan.blade_for(their profile)`` do not pick the same blade.
        """
        with self._store.read() as s:
            return plan_for_domain(s, domain)

    @staticmethod
    def _record(s: Session, failover_id: int) -> FailoverRow:
        row = s.get(FailoverRow, failover_id)
        if row is None:
            raise NotFound("failover", f"#{failover_id}")
        return row


def plan_for_domain(s: Session, domain: str) -> SparePlan:
    """:meth:`FailoverService.spare_plan` inside a caller's transaction."""
    # Imported here: placement imports the blade pools, which sit beside this module.
    from appliance.domain.profile import from_dict
    from appliance.services.placement import requirements

    drow = _domain_row(s, domain)
    # Failovers still fencing keep their place in line: a less important profile fenced a
    # moment earlier must not take the spare a more important one is about to need. (One
    # whose fence cannot be confirmed leaves the line: it needs an operator.)
    need = [FailoverState.DETECTED.value, FailoverState.FENCING.value, FailoverState.FENCED.value,
            FailoverState.WAITING.value]
    moving = [FailoverState.MOVING.value, FailoverState.BOOTING.value]
    failed = []
    reserved: set[str] = set()
    for row in s.scalars(select(FailoverRow).where(FailoverRow.domain == domain,
                                                   FailoverRow.state.in_(need + moving))):
        if row.state in moving:
            if row.to_blade:
                reserved.add(row.to_blade)   # chosen, not bound yet: nobody else's
            continue
        prow = s.get(ProfileRow, row.profile_id) if row.profile_id is not None else None
        if prow is None:
            continue
        failed.append(FailedProfile(f"{row.tenant}/{row.profile}", row.priority, _aware(row.detected_at),
                                    requirements(from_dict(prow.document))))
    return plan_spares(failed, domain_spares(s, drow, reserved))


def domain_spares(s: Session, drow: FailoverDomainRow, reserved: set[str] | frozenset[str] = frozenset()
                  ) -> list[Candidate]:
    """The domain's spares as placement sees them: the blades of its spare pool, less VM slots
    of hosts it does not list, plus the slots of the VM hosts it lists (ranked after every
    physical blade: spares of last resort)."""
    from appliance.services.placement import VIRTUAL_DRIVER, candidates

    listed = set(drow.vm_hosts or ())
    host_of = dict(s.execute(select(BladeRow.name, BladeRow.chassis).where(BladeRow.driver == VIRTUAL_DRIVER)).all())
    spares = [c for c in candidates(s, pool=drow.spare_pool)
              if c.name not in reserved and (not c.virtual or host_of.get(c.name) in listed)]
    if listed:
        have = {c.name for c in spares}
        spares += [replace(c, in_pool=True) for c in candidates(s) if c.virtual and c.name not in have
                   and c.name not in reserved and host_of.get(c.name) in listed]
    return spares


def _members_by_domain(s: Session) -> dict[str, list[ProtectedProfile]]:
    """Profiles by their ``spec.failover.domain``, most important first. Profiles carry the
    domain in their document, so this reads every profile once."""
    bound = {pid: name for pid, name in s.execute(select(BindingRow.profile_id, BladeRow.name)
                                                 .join(BladeRow, BladeRow.id == BindingRow.blade_id)
                                                 .where(BindingRow.state == "live"))}
    out: dict[str, list[ProtectedProfile]] = {}
    for row in s.scalars(select(ProfileRow).where(ProfileRow.kind == "ServerProfile")):
        spec = _failover_spec(row.document)
        if spec is not None and isinstance(spec.get("domain"), str):
            out.setdefault(spec["domain"], []).append(ProtectedProfile(
                row.tenant, row.name, int(spec.get("priority", 0)), str(spec.get("policy", "")), row.state,
                bound.get(row.id)))
    for members in out.values():
        members.sort(key=lambda p: (-p.priority, p.tenant, p.name))
    return out


def _members(s: Session, domain: str) -> list[ProtectedProfile]:
    return _members_by_domain(s).get(domain, [])


def _audited(info: DomainInfo, *, secret_changed: bool = False) -> dict[str, Any]:
    data = info.public()
    data.pop("profiles")
    if secret_changed:
        data["webhookSecret"] = "*** (changed)"
    return data


def _cut(value: str | None, n: int) -> str | None:
    return value[:n] if value is not None else None
