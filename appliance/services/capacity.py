"""Capacity per blade pool, chassis and tenant, from the blades' state, their live bindings
and their inspected facts (CPUs, memory); one pass over the blades, a few queries in all.

A tenant-scoped caller sees its own numbers only: the pools granted to it and its tenant
(the blades bound to its profiles and those of its pools); not the appliance's pools or
chassis, which would tell it about other tenants' blades.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from appliance.domain.capacity import BladeFact, Tally, tally
from appliance.services.scope import DEFAULT_POOL, Scope
from appliance.store import Store
from appliance.store.tables import BindingRow, BladePoolMemberRow, BladePoolRow, BladeRow, ProfileRow

NO_CHASSIS = "(none)"


@dataclass(frozen=True, slots=True)
class Capacity:
    total: Tally | None
    pools: dict[str, Tally]
    chassis: dict[str, Tally]
    tenants: dict[str, Tally]

    def public(self) -> dict[str, Any]:
        """The whole appliance's (or a tenant's own) blades, CPUs and memory, then the breakdowns."""
        whole = self.total or next(iter(self.tenants.values()), None) or Tally()
        return {**whole.public(),
                "pools": [{"name": n, **t.public()} for n, t in self.pools.items()],
                "chassis": [{"name": n, **t.public()} for n, t in self.chassis.items()],
                "tenants": [{"name": n, **t.public()} for n, t in self.tenants.items()]}


class CapacityService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def capacity(self, scope: Scope) -> Capacity:
        with self._store.read() as s:
            bound = {bid: tenant for bid, tenant in s.execute(
                select(BindingRow.blade_id, ProfileRow.tenant).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                .where(BindingRow.state == "live"))}
            facts = {r.id: BladeFact(r.name, r.state, r.id in bound, r.cpus or 0, r.memory_gib or 0, r.chassis)
                     for r in s.scalars(select(BladeRow))}
            pools = {pid: (name, tenant) for pid, name, tenant in
                     s.execute(select(BladePoolRow.id, BladePoolRow.name, BladePoolRow.tenant)
                               .order_by(BladePoolRow.name))}
            members: dict[int, list[int]] = defaultdict(list)
            for pid, bid in s.execute(select(BladePoolMemberRow.pool_id, BladePoolMemberRow.blade_id)):
                members[pid].append(bid)
        by_tenant: dict[str, set[int]] = defaultdict(set)
        for bid, tenant in bound.items():
            by_tenant[tenant].add(bid)
        for pid, (_, grantee) in pools.items():
            if grantee is not None:
                by_tenant[grantee].update(members[pid])
        mine = [pid for pid, (_, t) in pools.items() if scope.sees(t) and (t is not None or scope.unscoped)]
        pool_tallies = {pools[pid][0]: tally(facts[b] for b in members[pid] if b in facts) for pid in mine}
        tenants = {t: tally(facts[b] for b in sorted(ids) if b in facts)
                   for t, ids in sorted(by_tenant.items()) if scope.sees(t)}
        if scope.tenant is not None:
            tenants.setdefault(scope.tenant, Tally())
            return Capacity(None, pool_tallies, {}, tenants)
        chassis: dict[str, list[BladeFact]] = defaultdict(list)
        for f in facts.values():
            chassis[f.chassis or NO_CHASSIS].append(f)
        return Capacity(tally(facts.values()), {DEFAULT_POOL: tally(facts.values()), **pool_tallies},
                        {c: tally(fs) for c, fs in sorted(chassis.items())}, tenants)
