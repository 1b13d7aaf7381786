"""Placement inputs: the requirements of a profile and the inventory as placement sees it.

Pure ranking lives in :mod:`appliance.domain.placement`; this module reads the store for
it. The stamp and failover steps, dry-runs and host pools all call these (DESIGN §8).

A pool granted to a tenant reserves its blades for that tenant: placement from the
built-in ``spares`` for a profile of another tenant rejects them ("reserved for
another tenant"). Explicit pools and failover domains' spare pools are used as named.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.domain.placement import Candidate, Placement, Requirements, place
from appliance.domain.profile import Profile
from appliance.domain.states import BladeState
from appliance.errors import NotFound
from appliance.services.blade_pools import DEFAULT_POOL, members
from appliance.services.scope import reserved_for_others
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, ProfileRow

NO_SPARE = "no spare blade meets the requirements"
RESERVED = "reserved for another tenant (in a pool granted to it)"


def requirements(p: Profile) -> Requirements:
    r = p.spec.requirements
    return Requirements(min_cpus=r.minCpus, min_memory_gib=r.minMemoryGiB,
                        nics=max(r.nics or 0, len(p.spec.identity.nics)))


def candidates(s: Session, *, only: str | None = None, pool: str = DEFAULT_POOL,
               tenant: str | None = None) -> list[Candidate]:
    """The inventory as placement sees it; ``pool`` limits it (``spares`` = every enrolled blade,
    less, for a profile of ``tenant``, the blades reserved for other tenants)."""
    in_pool = members(s, pool)
    reserved = reserved_for_others(s, tenant) if pool == DEFAULT_POOL else set()
    bound = dict(s.execute(
        select(BindingRow.blade_id, ProfileRow.name).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
        .where(BindingRow.state == "live")
    ).all())
    nic_counts: dict[int, int] = {}
    for blade_id, in s.execute(select(BladeNicRow.blade_id)).all():
        nic_counts[blade_id] = nic_counts.get(blade_id, 0) + 1
    stmt = select(BladeRow)
    if only is not None:
        stmt = stmt.where(BladeRow.name == only)
    return [Candidate(name=b.name, state=BladeState(b.state), cpus=b.cpus, memory_gib=b.memory_gib,
                      nics=nic_counts.get(b.id, 0), bound_to=bound.get(b.id), last_failed_at=b.last_failed_at,
                      in_pool=(in_pool is None or b.name in in_pool) and b.name not in reserved,
                      out_reason=RESERVED if b.name in reserved else None)
            for b in s.scalars(stmt)]


def dry_run(s: Session, profile: Profile, *, blade: str | None = None, pool: str = DEFAULT_POOL,
            tenant: str | None = None) -> Placement:
    """Where ``profile`` would go now. NotFound for a named blade that is not enrolled."""
    found = candidates(s, only=blade, pool=pool, tenant=tenant)
    if blade is not None and not found:
        raise NotFound("blade", blade)
    return place(requirements(profile), found)


def explain(pl: Placement) -> str:
    why = "; ".join(f"{r.blade}: {r.reason}" for r in pl.rejected[:5])
    more = f" (+{len(pl.rejected) - 5} more)" if len(pl.rejected) > 5 else ""
    return f"{NO_SPARE}" + (f" ({why}{more})" if why else " (no blades enrolled)")
