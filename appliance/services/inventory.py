"""Read-side queries over blades for the API and console: pages, tenant visibility, capacity, rack.

Listing 10,000 blades page by page must stay fast (≤ 100 ms a page), so a page
is one keyset query on the blade name plus one query for the page's NICs and one
for their bindings, never a query per blade.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from appliance.errors import NotFound
from appliance.services import scope as lookup
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, ProfileRow, SwitchRow

S = TypeVar("S", bound=Select)  # type: ignore[type-arg]

CAPACITY_STATES = ("spare", "stamped", "failed", "maintenance")
# Blade states counted as "stamped" on the dashboard: bound, or on the way in or out.
STAMPED = frozenset({"stamping", "active", "releasing", "fenced"})


@dataclass(frozen=True, slots=True)
class BladeFilter:
    state: str | None = None
    chassis: str | None = None
    name_prefix: str | None = None
    tenant: str | None = None      # a tenant-scoped caller sees only blades bound to its profiles


def _bound(s: Session, blade_ids: list[int]) -> dict[int, tuple[str, str]]:
    if not blade_ids:
        return {}
    rows = s.execute(select(BindingRow.blade_id, ProfileRow.tenant, ProfileRow.name)
                     .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                     .where(BindingRow.state == "live", BindingRow.blade_id.in_(blade_ids)))
    return {r[0]: (r[1], r[2]) for r in rows}


def _filtered(stmt: S, f: BladeFilter) -> S:
    if f.state:
        stmt = stmt.where(BladeRow.state == f.state)
    if f.chassis:
        stmt = stmt.where(BladeRow.chassis == f.chassis)
    if f.name_prefix:
        stmt = stmt.where(BladeRow.name.startswith(f.name_prefix, autoescape=True))
    if f.tenant is not None:
        live = (select(BindingRow.blade_id).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                .where(BindingRow.state == "live", ProfileRow.tenant == f.tenant))
        stmt = stmt.where(BladeRow.id.in_(live))
    return stmt


class Inventory:
    def __init__(self, store: Store) -> None:
        self._store = store

    def page(self, f: BladeFilter, *, limit: int = 100, after: str | None = None) -> tuple[list[dict[str, Any]],
                                                                                           str | None, int]:
        """(blades, cursor of the next page or None, total matching). Column reads, no ORM objects: fast."""
        b = BladeRow
        cols = (b.id, b.name, b.state, b.driver, b.bmc_address, b.chassis, b.slot, b.cpus, b.memory_gib,
                b.state_reason)
        with self._store.read() as s:
            total = s.scalar(_filtered(select(func.count(b.id)), f)) or 0
            stmt = _filtered(select(*cols), f).order_by(b.name).limit(limit + 1)
            if after:
                stmt = stmt.where(b.name > after)
            rows = s.execute(stmt).all()
            more = len(rows) > limit
            rows = rows[:limit]
            ids = [r[0] for r in rows]
            nics: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
            if ids:
                n = BladeNicRow
                for blade_id, name, mac, switch, port in s.execute(
                        select(n.blade_id, n.name, n.mac, SwitchRow.name, n.port)
                        .outerjoin(SwitchRow, SwitchRow.id == n.switch_id)
                        .where(n.blade_id.in_(ids)).order_by(n.blade_id, n.position)):
                    nics[blade_id].append({"name": name, "mac": mac, "switch": switch, "port": port})
            bound = _bound(s, ids)
        items = []
        for bid, name, state, driver, bmc, chassis, slot, cpus, mem, reason in rows:
            got = bound.get(bid)
            items.append({"name": name, "state": state, "driver": driver, "bmc": bmc, "chassis": chassis,
                          "slot": slot, "cpus": cpus, "memoryGiB": mem, "nics": nics[bid],
                          "profile": f"{got[0]}/{got[1]}" if got else None, "stateReason": reason})
        return items, (rows[-1][1] if more and rows else None), total

    def check_visible(self, name: str, tenant: str | None) -> None:
        """NotFound unless the blade exists and (for a tenant) is bound to one of its profiles."""
        with self._store.read() as s:
            lookup.blade_row(s, Scope(tenant, ""), name)

    def bound_profile(self, name: str) -> str | None:
        with self._store.read() as s:
            bid = s.scalar(select(BladeRow.id).where(BladeRow.name == name))
            if bid is None:
                raise NotFound("blade", name)
            got = _bound(s, [bid]).get(bid)
            return f"{got[0]}/{got[1]}" if got else None

    def blade_of(self, tenant: str, profile: str) -> str | None:
        """The blade holding a live binding of profile ``tenant/profile``, if any."""
        with self._store.read() as s:
            return s.scalar(select(BladeRow.name).join(BindingRow, BindingRow.blade_id == BladeRow.id)
                            .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                            .where(BindingRow.state == "live", ProfileRow.tenant == tenant,
                                   ProfileRow.name == profile))

    def capacity(self, tenant: str | None = None) -> dict[str, Any]:
        """Blades by dashboard class (spare, stamped, failed, maintenance) and by state."""
        with self._store.read() as s:
            stmt = _filtered(select(BladeRow.state, func.count(BladeRow.id)), BladeFilter(tenant=tenant))
            by_state = {st: n for st, n in s.execute(stmt.group_by(BladeRow.state))}
        out = dict.fromkeys(CAPACITY_STATES, 0)
        for st, n in by_state.items():
            out["stamped" if st in STAMPED else st if st in out else "failed"] += n
        return {**out, "total": sum(by_state.values()), "byState": by_state}

    def rack(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Chassis with their blades by slot, for the console's rack view."""
        with self._store.read() as s:
            rows = list(s.execute(_filtered(select(BladeRow.id, BladeRow.name, BladeRow.state, BladeRow.chassis,
                                                   BladeRow.slot), BladeFilter(tenant=tenant))
                                  .order_by(BladeRow.chassis, BladeRow.slot, BladeRow.name)))
            bound = _bound(s, [r.id for r in rows])
        chassis: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            b = bound.get(r.id)
            chassis.setdefault(r.chassis or "unplaced", []).append(
                {"name": r.name, "state": r.state, "slot": r.slot, "profile": f"{b[0]}/{b[1]}" if b else None})
        return [{"chassis": c, "blades": blades} for c, blades in chassis.items()]
