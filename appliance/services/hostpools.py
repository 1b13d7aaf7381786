"""Host pools: create, show, size, release hosts, report utilisation, set tenant quotas.

What the API, CLI and console call. Nothing here starts a job or requests a host: a pool's
desired size is changed (checked against its min/max and the tenant's quota) and the
engine's reconcile loop (appliance.services.host_reconcile) converges to it, as DESIGN §8
settles. Releasing one host marks it ``releasing`` (the loop submits its release job);
every look-up goes through appliance.services.scope, so another tenant's pools and hosts
answer as missing ones.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.domain.hostpool import (
    HOST_TRANSITIONS,
    LIVE_HOST_STATES,
    HostState,
    Spread,
    pool_name_problem,
    quota_refusal,
    size_problems,
    size_refusal,
)
from appliance.domain.hostpool_policy import ScalePolicy, policy_problems
from appliance.domain.states import transition
from appliance.errors import Conflict, Issue, ValidationError
from appliance.services import scope as lookup
from appliance.services.blade_pools import DEFAULT_POOL
from appliance.services.host_events import HostInfo, events_after, feed_item, host_info, iso, last_cursor
from appliance.services.scope import TEMPLATE, Scope
from appliance.store import Store
from appliance.store.audit import record
from appliance.store.tables import (
    HostEventRow,
    HostMetricRow,
    HostPoolDecisionRow,
    HostPoolRow,
    HostQuotaRow,
    HostRow,
    HostWebhookRow,
)

APPLIANCE = Scope.appliance()
DECISIONS_SHOWN = 10
DEFAULT_MAX = 100


@dataclass(frozen=True, slots=True)
class PoolInfo:
    name: str
    tenant: str
    template: str
    blade_pool: str
    spread: str
    min_size: int
    max_size: int
    size: int
    keep_profiles: bool
    hosts: dict[str, int]                 # state → hosts (released ones not counted)
    waiting: str | None
    policy: dict[str, Any] | None
    decisions: tuple[dict[str, Any], ...]
    webhooks: int
    cursor: int
    created_at: datetime

    @property
    def converged(self) -> bool:
        return self.hosts.get("ready", 0) == self.size and sum(self.hosts.values()) == self.size

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "tenant": self.tenant, "template": self.template, "bladePool": self.blade_pool,
                "spread": self.spread, "min": self.min_size, "max": self.max_size, "size": self.size,
                "keepProfiles": self.keep_profiles, "hosts": dict(self.hosts), "ready": self.hosts.get("ready", 0),
                "converged": self.converged, "waiting": self.waiting, "policy": self.policy,
                "decisions": list(self.decisions), "webhooks": self.webhooks, "cursor": self.cursor,
                "createdAt": iso(self.created_at)}


def decision_view(row: HostPoolDecisionRow) -> dict[str, Any]:
    return {"at": iso(row.at), "action": row.action, "from": row.size_from, "to": row.size_to, "reason": row.reason,
            "inputs": row.inputs}


def _pool_info(s: Session, row: HostPoolRow) -> PoolInfo:
    counts = dict(s.execute(select(HostRow.state, func.count()).where(HostRow.pool_id == row.id,
                                                                      HostRow.state != HostState.RELEASED.value)
                            .group_by(HostRow.state)).all())
    decisions = s.scalars(select(HostPoolDecisionRow).where(HostPoolDecisionRow.pool_id == row.id)
                          .order_by(HostPoolDecisionRow.id.desc()).limit(DECISIONS_SHOWN))
    hooks = s.scalar(select(func.count()).select_from(HostWebhookRow).where(HostWebhookRow.pool_id == row.id))
    return PoolInfo(row.name, row.tenant, row.template, row.blade_pool, row.spread, row.min_size, row.max_size,
                    row.desired, row.keep_profiles, {str(k): int(v) for k, v in counts.items()}, row.waiting,
                    row.policy, tuple(decision_view(d) for d in decisions), int(hooks or 0),
                    last_cursor(s, row.id), row.created_at)


def quota_of(s: Session, tenant: str) -> int | None:
    return s.scalar(select(HostQuotaRow.max_hosts).where(HostQuotaRow.tenant == tenant))


def check_quota(s: Session, pool: HostPoolRow, size: int) -> None:
    """Conflict when the tenant's pools would hold more hosts than its quota with ``pool`` at ``size``."""
    sizes = dict(s.execute(select(HostPoolRow.name, HostPoolRow.desired).where(HostPoolRow.tenant == pool.tenant))
                 .all())
    sizes[pool.name] = size
    why = quota_refusal(pool.tenant, quota_of(s, pool.tenant), sizes)
    if why is not None:
        raise Conflict(why)


def _spread(value: str) -> Spread:
    try:
        return Spread(value)
    except ValueError:
        raise ValidationError([Issue("spread", f"{value!r} is not one of {', '.join(s.value for s in Spread)}")]
                              ) from None


def _policy(value: dict[str, Any]) -> dict[str, Any]:
    try:
        policy = ScalePolicy.from_public(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError([Issue("policy", f"not a policy: {exc}")]) from None
    problems = policy_problems(policy)
    if problems:
        raise ValidationError([Issue(f"policy.{f}", r) for f, r in problems])
    return policy.public()


def _bounds(min_size: int, max_size: int, size: int | None = None) -> None:
    problems = size_problems(min_size=min_size, max_size=max_size, size=size)
    if problems:
        raise ValidationError([Issue(f, r) for f, r in problems])


class HostPoolService:
    """``clock``: Unix seconds, for the utilisation reports (tests compress it)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    # -- pools -------------------------------------------------------------------------------
    def create(self, name: str, *, template: str, tenant: str | None = None, blade_pool: str = DEFAULT_POOL,
               min_size: int = 0, max_size: int = DEFAULT_MAX, size: int | None = None,
               spread: str = Spread.CHASSIS.value, keep_profiles: bool = False,
               policy: dict[str, Any] | None = None, scope: Scope = APPLIANCE) -> PoolInfo:
        """A pool of hosts stamped from ``template`` (a template of the pool's tenant), drawn from
        blade pool ``blade_pool`` (in the caller's sight); its size starts at ``size`` (default: min)."""
        problem = pool_name_problem(name)
        if problem:
            raise ValidationError([Issue("name", problem)])
        _bounds(min_size, max_size, size)
        wanted = max(size if size is not None else min_size, min_size)
        spread = _spread(spread).value
        saved_policy = _policy(policy) if policy is not None else None
        home = scope.home(tenant)
        with self._store.write() as s:
            lookup.profile_row(s, scope, template, kind=TEMPLATE, tenant=tenant)
            lookup.pool_members(s, scope, blade_pool)
            if s.scalar(select(HostPoolRow.id).where(HostPoolRow.tenant == home, HostPoolRow.name == name)):
                raise Conflict(f"host pool {home}/{name} already exists")
            why = size_refusal(name, size=wanted, min_size=min_size, max_size=max_size)
            if why:
                raise Conflict(why)
            row = HostPoolRow(name=name, tenant=home, template=template, blade_pool=blade_pool, min_size=min_size,
                              max_size=max_size, desired=0, spread=spread, keep_profiles=keep_profiles,
                              policy=saved_policy, next_seq=1, failures=0)
            s.add(row)
            s.flush()
            check_quota(s, row, wanted)
            row.desired = wanted
            s.flush()
            return _pool_info(s, row)

    def get(self, name: str, *, tenant: str | None = None, scope: Scope = APPLIANCE) -> PoolInfo:
        with self._store.read() as s:
            return _pool_info(s, lookup.host_pool_row(s, scope, name, tenant=tenant))

    def list(self, *, tenant: str | None = None, scope: Scope = APPLIANCE) -> list[PoolInfo]:
        wanted = scope.listing(tenant)
        with self._store.read() as s:
            stmt = select(HostPoolRow).order_by(HostPoolRow.tenant, HostPoolRow.name)
            if wanted is not None:
                stmt = stmt.where(HostPoolRow.tenant == wanted)
            return [_pool_info(s, r) for r in s.scalars(stmt)]

    def update(self, name: str, *, tenant: str | None = None, min_size: int | None = None,
               max_size: int | None = None, spread: str | None = None, keep_profiles: bool | None = None,
               blade_pool: str | None = None, policy: dict[str, Any] | None = None, remove_policy: bool = False,
               scope: Scope = APPLIANCE) -> PoolInfo:
        """Change what is given; a size outside new bounds is moved inside them (min raises it)."""
        new_spread = _spread(spread).value if spread is not None else None
        new_policy = _policy(policy) if policy is not None else None
        with self._store.write() as s:
            row = lookup.host_pool_row(s, scope, name, tenant=tenant, lock=True)
            lo = row.min_size if min_size is None else min_size
            hi = row.max_size if max_size is None else max_size
            _bounds(lo, hi)
            if blade_pool is not None:
                lookup.pool_members(s, scope, blade_pool)
                row.blade_pool = blade_pool
            size = min(max(row.desired, lo), hi)
            if size != row.desired:
                check_quota(s, row, size)
            row.min_size, row.max_size, row.desired = lo, hi, size
            if new_spread is not None:
                row.spread = new_spread
            if keep_profiles is not None:
                row.keep_profiles = keep_profiles
            if remove_policy:
                row.policy, row.policy_state = None, None
            elif new_policy is not None:
                row.policy, row.policy_state = new_policy, None
            s.flush()
            return _pool_info(s, row)

    def delete(self, name: str, *, tenant: str | None = None, scope: Scope = APPLIANCE) -> None:
        """Delete a pool whose hosts are all released (its history goes with it)."""
        with self._store.write() as s:
            row = lookup.host_pool_row(s, scope, name, tenant=tenant, lock=True)
            left = s.scalar(select(func.count()).select_from(HostRow).where(
                HostRow.pool_id == row.id, HostRow.state != HostState.RELEASED.value))
            if row.desired or left:
                raise Conflict(f"host pool {row.tenant}/{name} has size {row.desired} and {left} host(s) not yet "
                               "released; scale it to 0 and wait for them to be released first")
            s.delete(row)

    # -- size ---------------------------------------------------------------------------------
    def resize(self, name: str, *, size: int | None = None, grow: int = 0, tenant: str | None = None,
               scope: Scope = APPLIANCE) -> PoolInfo:
        """Set the desired size (``size``), or move it by ``grow`` (negative: shrink); checked
        against the pool's min/max and the tenant's quota in the same transaction."""
        with self._store.write() as s:
            row = lookup.host_pool_row(s, scope, name, tenant=tenant, lock=True)
            wanted = size if size is not None else row.desired + grow
            if not 0 <= wanted <= 10_000:
                raise ValidationError([Issue("size" if size is not None else "count",
                                             f"the pool would hold {wanted} hosts (0-10000)")])
            why = size_refusal(f"{row.tenant}/{row.name}", size=wanted, min_size=row.min_size,
                               max_size=row.max_size)
            if why:
                raise Conflict(why)
            if wanted > row.desired:
                check_quota(s, row, wanted)
            row.desired = wanted
            s.flush()
            return _pool_info(s, row)

    # -- hosts --------------------------------------------------------------------------------
    def hosts(self, name: str, *, tenant: str | None = None, state: str | None = None,
              include_released: bool = False, scope: Scope = APPLIANCE) -> builtins.list[HostInfo]:
        with self._store.read() as s:
            pool = lookup.host_pool_row(s, scope, name, tenant=tenant)
            stmt = select(HostRow).where(HostRow.pool_id == pool.id).order_by(HostRow.seq)
            if state is not None:
                stmt = stmt.where(HostRow.state == state)
            elif not include_released:
                stmt = stmt.where(HostRow.state != HostState.RELEASED.value)
            return [host_info(r, pool.name) for r in s.scalars(stmt)]

    def host(self, name: str, host: str, *, tenant: str | None = None, scope: Scope = APPLIANCE) -> HostInfo:
        with self._store.read() as s:
            pool = lookup.host_pool_row(s, scope, name, tenant=tenant)
            return host_info(lookup.host_row(s, pool, host), pool.name)

    def release(self, name: str, host: str, *, keep_profile: bool = False, replace: bool = False,
                tenant: str | None = None, scope: Scope = APPLIANCE) -> HostInfo:
        """Drain and release one host. Without ``replace`` the pool's size drops by one (not
        below its min); with it the size stays and the engine requests a new host in its place
        (``host.replaced`` names both). The release job itself is the reconcile loop's."""
        with self._store.write() as s:
            pool = lookup.host_pool_row(s, scope, name, tenant=tenant, lock=True)
            row = lookup.host_row(s, pool, host, lock=True)
            if HostState(row.state) not in LIVE_HOST_STATES:
                raise Conflict(f"host {row.name} ({row.id}) is already {row.state}")
            row.keep_profile = keep_profile
            if replace:
                # Failed for good, as far as the pool goes: the loop replaces it, then releases it.
                row.state = transition(HOST_TRANSITIONS, HostState(row.state), HostState.FAILED,
                                       what=f"host {row.name}").value
                row.reason, row.failover_id = "to be replaced, as asked", None
            else:
                if pool.desired - 1 < pool.min_size:
                    raise Conflict(f"host pool {pool.tenant}/{pool.name} has min {pool.min_size}; releasing "
                                   f"{row.name} would leave {pool.desired - 1} (release it with replace, or "
                                   "lower the min)")
                pool.desired -= 1
                row.state = transition(HOST_TRANSITIONS, HostState(row.state), HostState.RELEASING,
                                       what=f"host {row.name}").value
                row.reason = "released, as asked"
            record(s, action="replace" if replace else "release", resource="host", name=f"{pool.name}/{row.name}",
                   tenant=pool.tenant, after={"host": row.id, "keepProfile": keep_profile})
            s.flush()
            return host_info(row, pool.name)

    def report(self, name: str, host: str, *, cpu: float | None = None, memory: float | None = None,
               vms: int | None = None, tenant: str | None = None, scope: Scope = APPLIANCE) -> None:
        """Keep a host's newest utilisation (percent; VM count) for the pool's SLA policy."""
        issues = [Issue(k, f"{v:g} is outside 0-100 %") for k, v in (("cpu", cpu), ("memory", memory))
                  if v is not None and not 0 <= v <= 100]
        if vms is not None and not 0 <= vms <= 100_000:
            issues.append(Issue("vms", f"{vms} is outside 0-100000"))
        if cpu is None and memory is None and vms is None:
            issues.append(Issue("", "give cpu, memory or vms"))
        if issues:
            raise ValidationError(issues)
        at = datetime.fromtimestamp(self._clock(), UTC)
        with self._store.write() as s:
            pool = lookup.host_pool_row(s, scope, name, tenant=tenant)
            row = lookup.host_row(s, pool, host)
            if HostState(row.state) not in LIVE_HOST_STATES:
                raise Conflict(f"host {row.name} is {row.state}; it reports nothing any more")
            s.merge(HostMetricRow(host_id=row.id, pool_id=pool.id, at=at, cpu=cpu, memory=memory, vms=vms))

    def feed(self, name: str, *, after: int = 0, limit: int = 500, tenant: str | None = None,
             scope: Scope = APPLIANCE) -> dict[str, Any]:
        """The pool's events after cursor ``after`` (what ``GET .../events`` answers, without waiting)."""
        with self._store.read() as s:
            pool = lookup.host_pool_row(s, scope, name, tenant=tenant)
            items = [feed_item(e) for e in events_after(s, pool.id, after, limit)]
        return {"items": items, "cursor": items[-1]["cursor"] if items else after, "more": len(items) >= limit}

    def recent(self, name: str, *, limit: int = 20, tenant: str | None = None,
               scope: Scope = APPLIANCE) -> builtins.list[dict[str, Any]]:
        """The pool's newest events, newest first."""
        with self._store.read() as s:
            pool = lookup.host_pool_row(s, scope, name, tenant=tenant)
            rows = s.scalars(select(HostEventRow).where(HostEventRow.pool_id == pool.id)
                             .order_by(HostEventRow.id.desc()).limit(limit))
            return [feed_item(r) for r in rows]

    # -- quotas -------------------------------------------------------------------------------
    def set_quota(self, tenant: str, max_hosts: int | None) -> dict[str, Any]:
        """The most hosts ``tenant``'s pools may hold together (None: no quota). A quota below
        what the pools hold now stops their growth; it releases nothing."""
        if max_hosts is not None and not 0 <= max_hosts <= 10_000:
            raise ValidationError([Issue("maxHosts", f"{max_hosts} is outside 0-10000")])
        with self._store.write() as s:
            row = s.scalar(select(HostQuotaRow).where(HostQuotaRow.tenant == tenant))
            if max_hosts is None:
                if row is not None:
                    s.delete(row)
            elif row is None:
                s.add(HostQuotaRow(tenant=tenant, max_hosts=max_hosts))
            else:
                row.max_hosts = max_hosts
            s.flush()
            return _quota_view(s, tenant)

    def quotas(self, *, scope: Scope = APPLIANCE) -> builtins.list[dict[str, Any]]:
        with self._store.read() as s:
            stmt = select(HostQuotaRow.tenant).order_by(HostQuotaRow.tenant)
            if scope.tenant is not None:
                stmt = stmt.where(HostQuotaRow.tenant == scope.tenant)
            return [_quota_view(s, t) for t in s.scalars(stmt)]


def _quota_view(s: Session, tenant: str) -> dict[str, Any]:
    used = s.scalar(select(func.coalesce(func.sum(HostPoolRow.desired), 0)).where(HostPoolRow.tenant == tenant))
    return {"tenant": tenant, "maxHosts": quota_of(s, tenant), "used": int(used or 0)}
