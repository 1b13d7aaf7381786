"""Placement inputs: the requirements of a profile and the inventory as placement sees it.

Pure ranking lives in :mod:`appliance.domain.placement`; this module reads the store for
it. The stamp and failover steps, dry-runs and host pools all call these (DESIGN §8).

A pool granted to a tenant reserves its blades for that tenant: placement from the
built-in ``spares`` for a profile of another tenant rejects them ("reserved for
another tenant"). Explicit pools and failover domains' spare pools are used as named.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.domain.placement import Candidate, Placement, Requirements, place
from appliance.domain.profile import Profile
from appliance.domain.states import BladeState
from appliance.errors import NotFound
from appliance.services.blade_pools import DEFAULT_POOL, members
from appliance.services.scope import reserved_for_others
from appliance.store.tables import BindingRow, BladeNicRow, BladePoolRow, BladeRow, ProfileRow

NO_SPARE = "no spare blade meets the requirements"
RESERVED = "reserved for another tenant (in a pool granted to it)"
VIRTUAL_DRIVER = "libvirt"     # a VM host's slot: placement ranks it after physical blades


def requirements(p: Profile) -> Requirements:
    r = p.spec.requirements
    return Requirements(min_cpus=r.minCpus, min_memory_gib=r.minMemoryGiB,
                        nics=max(r.nics or 0, len(p.spec.identity.nics)))


def candidates(s: Session, *, only: str | None = None, pool: str = DEFAULT_POOL,
               tenant: str | None = None, spare_only: bool = False) -> list[Candidate]:
    """The inventory as placement sees it; ``pool`` limits it (``spares`` = every enrolled blade,
    less, for a profile of ``tenant``, the blades reserved for other tenants). ``spare_only``:
    only blades that are spare and unbound (the engine's choice; a dry run shows every blade
    with why it was rejected). Column reads and grouped counts, no ORM objects: 10,000 blades
    per stamp would otherwise cost a second of Python per choice."""
    in_pool = members(s, pool)
    reserved = reserved_for_others(s, tenant) if pool == DEFAULT_POOL else set()
    live = (select(BindingRow.blade_id, ProfileRow.name).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
            .where(BindingRow.state == "live"))
    stmt = select(BladeRow.id, BladeRow.name, BladeRow.state, BladeRow.cpus, BladeRow.memory_gib,
                  BladeRow.last_failed_at, BladeRow.driver)
    if only is not None:
        stmt = stmt.where(BladeRow.name == only)
    bound: dict[int, str] = {}
    if spare_only:
        stmt = stmt.where(BladeRow.state == BladeState.SPARE.value,
                          BladeRow.id.not_in(select(BindingRow.blade_id).where(BindingRow.state == "live")))
    else:
        bound = dict(s.execute(live if only is None else
                               live.join(BladeRow, BladeRow.id == BindingRow.blade_id).where(BladeRow.name == only))
                     .all())
    rows = s.execute(stmt).all()
    ids = [r.id for r in rows]
    nic_counts: dict[int, int] = {}
    count = select(BladeNicRow.blade_id, func.count()).group_by(BladeNicRow.blade_id)
    if only is not None or len(ids) < 1000:
        count = count.where(BladeNicRow.blade_id.in_(ids))
    for blade_id, n in s.execute(count).all():
        nic_counts[blade_id] = n
    return [Candidate(name=b.name, state=BladeState(b.state), cpus=b.cpus, memory_gib=b.memory_gib,
                      nics=nic_counts.get(b.id, 0), bound_to=bound.get(b.id), last_failed_at=b.last_failed_at,
                      in_pool=(in_pool is None or b.name in in_pool) and b.name not in reserved,
                      out_reason=RESERVED if b.name in reserved else None, virtual=b.driver == VIRTUAL_DRIVER)
            for b in rows]


def preference(s: Session, pool: str) -> str:
    """Which blades ``pool`` tries first: ``physical`` (the default, and the built-in ``spares``),
    ``virtual`` or ``any`` (``anvil blade-pool create|update --prefer``)."""
    if pool == DEFAULT_POOL:
        return "physical"
    return s.scalar(select(BladePoolRow.prefer).where(BladePoolRow.name == pool)) or "physical"


def dry_run(s: Session, profile: Profile, *, blade: str | None = None, pool: str = DEFAULT_POOL,
            tenant: str | None = None, spare_only: bool = False) -> Placement:
    """Where ``profile`` would go now. NotFound for a named blade that is not enrolled.
    ``spare_only`` (the engine): look at spare, unbound blades only, and at all of them only
    when none fits, to say why."""
    found = candidates(s, only=blade, pool=pool, tenant=tenant, spare_only=spare_only and blade is None)
    if blade is not None and not found:
        raise NotFound("blade", blade)
    pl = place(requirements(profile), found, prefer=preference(s, pool))
    if spare_only and blade is None and not pl.chosen:
        return dry_run(s, profile, pool=pool, tenant=tenant)
    return pl


def explain(pl: Placement) -> str:
    why = "; ".join(f"{r.blade}: {r.reason}" for r in pl.rejected[:5])
    more = f" (+{len(pl.rejected) - 5} more)" if len(pl.rejected) > 5 else ""
    return f"{NO_SPARE}" + (f" ({why}{more})" if why else " (no blades enrolled)")
