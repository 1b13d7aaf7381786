"""Read-side queries over blades for the API, console and CLI: pages, tenant visibility,
capacity, rack.

Listing 10,000 blades page by page must stay fast (≤ 100 ms a page), so a page is one
query on the blades (keyset on the name by default) plus one query each for the page's
NICs, bindings and latest health samples, never a query per blade. Searching or sorting
by profile or tenant joins the live bindings into the blade query; sorting by anything but
the name pages by offset.

Each blade carries what the admin looks for first: its state, the profile it runs, and
its power and health as the monitor last sampled them, with the sample's age.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Select, String, bindparam, func, or_, select, type_coerce
from sqlalchemy.orm import Session

from appliance.errors import Issue, NotFound, ValidationError
from appliance.services import scope as lookup
from appliance.services.blade_rows import (
    COMPLIANCE_FACT,
    NO_HEALTH,
    SORTS,
    age_text,
    blade_item,
    firmware_cell,
    health_rows,
)
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.prepared import Prepared
from appliance.store.tables import BindingRow, BladeHealthRow, BladeNicRow, BladeRow, ProfileRow, SwitchRow

# Re-exported: how a listed blade is built (appliance.services.blade_rows, shared with the CLI's
# SQLite read) is known to callers from here.
__all__ = ["COMPLIANCE_FACT", "NO_HEALTH", "SORTS", "BladeFilter", "Inventory", "age_text", "check_sort",
           "firmware_cell", "latest_health"]

S = TypeVar("S", bound=Select)  # type: ignore[type-arg]

CAPACITY_STATES = ("spare", "stamped", "failed", "maintenance")
# Blade states counted as "stamped" on the dashboard: bound, or on the way in or out.
STAMPED = frozenset({"stamping", "active", "releasing", "fenced"})
_CHUNK = 900    # ids per IN (…): below every SQLite's bound-parameter limit

# The statements of a page, built once: building them (coercing every column and clause) cost
# as much as running them. Each runs on the session's connection (no ORM round trip).
_B, _N, _H = BladeRow.__table__.c, BladeNicRow.__table__.c, BladeHealthRow.__table__.c
_IDS: Any = bindparam("ids", expanding=True)
# The compliance reading as JSON text (decoded only where there is one: most blades have none).
_COLS = (_B.id, _B.name, _B.state, _B.driver, _B.bmc_address, _B.chassis, _B.slot, _B.cpus, _B.memory_gib,
         _B.state_reason, type_coerce(BladeRow.facts[COMPLIANCE_FACT], String()))
_COUNT_ALL = select(func.count()).select_from(BladeRow.__table__)
_FIRST = select(*_COLS).order_by(_B.name).limit(bindparam("lim"))
_AFTER = select(*_COLS).where(_B.name > bindparam("after")).order_by(_B.name).limit(bindparam("lim"))
# The page's own blades, for its NICs, bindings and health: one statement each, with no IN list
# of a hundred ids to expand and bind.
_IDS_FIRST = select(_B.id).order_by(_B.name).limit(bindparam("n")).scalar_subquery()
_IDS_AFTER = select(_B.id).where(_B.name > bindparam("after")).order_by(_B.name).limit(bindparam("n")).scalar_subquery()


def _nics(ids: Any) -> Any:
    return (select(_N.blade_id, _N.name, _N.mac, SwitchRow.name, _N.port, _N.position)
            .outerjoin(SwitchRow, SwitchRow.id == _N.switch_id)
            .where(_N.blade_id.in_(ids)).order_by(_N.blade_id, _N.position))


def _bound_of(ids: Any) -> Any:
    return (select(BindingRow.blade_id, ProfileRow.tenant, ProfileRow.name)
            .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
            .where(BindingRow.state == "live", BindingRow.blade_id.in_(ids)))


def _health_of(ids: Any) -> Any:
    return (select(_H.blade_id, type_coerce(_H.at, String()), _H.ok, _H.power, _H.health, _H.detail)
            .where(_H.id.in_(select(func.max(_H.id)).where(_H.blade_id.in_(ids)).group_by(_H.blade_id))))


_NICS, _BOUND, _HEALTH = _nics(_IDS), _bound_of(_IDS), _health_of(_IDS)
# (count, blades, NICs, bindings, health) of the first page, and of the page after a name, on the
# driver's cursor: the common page, sixteen clients at once.
_PLAIN = {after: tuple(Prepared(st) for st in (_COUNT_ALL, _AFTER if after else _FIRST, _nics(ids),
                                                _bound_of(ids), _health_of(ids)))
          for after, ids in ((False, _IDS_FIRST), (True, _IDS_AFTER))}


@dataclass(frozen=True, slots=True)
class BladeFilter:
    state: str | None = None
    chassis: str | None = None
    name_prefix: str | None = None
    tenant: str | None = None      # a tenant-scoped caller sees only blades bound to its profiles
    search: str | None = None      # text in the name, chassis, state, or the bound profile or its tenant
    profile: str | None = None     # bound to this profile: NAME or TENANT/NAME
    bound_tenant: str | None = None    # bound to a profile of this tenant

    @property
    def joins_bindings(self) -> bool:
        return bool(self.search or self.profile or self.bound_tenant)


def check_sort(sort: str | None) -> str:
    """The sort key, or a ValidationError naming the choices."""
    key = sort or "name"
    if key not in SORTS:
        raise ValidationError([Issue("sort", f"{key!r} is not one of {', '.join(SORTS)}")])
    return key


def _bound(s: Session | Connection, blade_ids: list[int]) -> dict[int, tuple[str, str]]:
    conn = s.connection() if isinstance(s, Session) else s
    out: dict[int, tuple[str, str]] = {}
    for chunk in _chunks(blade_ids):
        out.update({r[0]: (r[1], r[2]) for r in conn.execute(_BOUND, {"ids": chunk}).all()})
    return out


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


def latest_health(s: Session | Connection, blade_ids: list[int],
                  now: datetime | None = None) -> dict[int, dict[str, Any]]:
    """The monitor's last sample of each blade: power, health, when, and its age in seconds.

    Health reads as the BMC's own rollup, or ``unreachable`` when the BMC did not answer."""
    now = now or datetime.now(UTC)
    conn = s.connection() if isinstance(s, Session) else s
    out: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(blade_ids):
        out.update(health_rows(conn.execute(_HEALTH, {"ids": chunk}).all(), now))
    return out


def _live() -> Any:
    return (select(BindingRow.blade_id.label("blade_id"), ProfileRow.tenant.label("ptenant"),
                   ProfileRow.name.label("pname"))
            .join(ProfileRow, ProfileRow.id == BindingRow.profile_id).where(BindingRow.state == "live")
            .subquery("live"))


def _filtered(stmt: S, f: BladeFilter, live: Any = None) -> S:
    if f.state:
        stmt = stmt.where(BladeRow.state == f.state)
    if f.chassis:
        stmt = stmt.where(BladeRow.chassis == f.chassis)
    if f.name_prefix:
        stmt = stmt.where(BladeRow.name.startswith(f.name_prefix, autoescape=True))
    if f.tenant is not None:
        in_tenant = (select(BindingRow.blade_id).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                     .where(BindingRow.state == "live", ProfileRow.tenant == f.tenant))
        stmt = stmt.where(BladeRow.id.in_(in_tenant))
    if live is not None:
        if f.search:
            q = f.search.lower()
            conds: list[ColumnElement[bool]] = [
                BladeRow.name.contains(q, autoescape=True), func.lower(BladeRow.chassis).contains(q, autoescape=True),
                BladeRow.state == q, live.c.pname.contains(q, autoescape=True),
                live.c.ptenant.contains(q, autoescape=True)]
            tenant, slash, name = q.partition("/")
            if slash:
                conds.append((live.c.ptenant == tenant) & live.c.pname.startswith(name, autoescape=True))
            stmt = stmt.where(or_(*conds))
        if f.profile:
            tenant, slash, name = f.profile.rpartition("/")
            stmt = stmt.where(live.c.pname == name)
            if slash:
                stmt = stmt.where(live.c.ptenant == tenant)
        if f.bound_tenant:
            stmt = stmt.where(live.c.ptenant == f.bound_tenant)
    return stmt


def _order(sort: str, live: Any) -> list[Any]:
    b = BladeRow
    if sort == "state":
        return [b.state, b.name]
    if sort == "chassis":
        return [b.chassis.is_(None), b.chassis, b.slot.is_(None), b.slot, b.name]
    if sort == "profile":
        return [live.c.pname.is_(None), live.c.pname, live.c.ptenant, b.name]
    if sort == "tenant":
        return [live.c.ptenant.is_(None), live.c.ptenant, live.c.pname, b.name]
    return [b.name]


class Inventory:
    def __init__(self, store: Store) -> None:
        self._store = store

    def page(self, f: BladeFilter, *, limit: int = 100, after: str | None = None, sort: str = "name",
             offset: int = 0) -> tuple[list[dict[str, Any]], str | None, int]:
        """(blades, cursor of the next page or None, total matching). Column reads, no ORM objects: fast.

        Sorted by ``sort`` (:data:`SORTS`); the cursor ``after`` pages a name sort, ``offset``
        any sort (the cursor is None for other sorts: page by offset and total)."""
        sort = check_sort(sort)
        b = BladeRow
        live = _live() if f.joins_bindings or sort in ("profile", "tenant") else None
        plain = f == BladeFilter() and sort == "name" and not offset
        with self._store.snapshot() as conn:
            if plain:   # the common page: statements built once, run on the driver's cursor
                counted, blades, of_nics, of_bound, of_health = _PLAIN[bool(after)]
                args = {"after": after, "n": limit}
                total = counted.rows(conn)[0][0] or 0
                rows: Sequence[Any] = sorted(blades.rows(conn, after=after, lim=limit + 1), key=lambda r: r[1])
            else:
                count = select(func.count(b.id)).select_from(b)
                if live is not None:
                    count = count.outerjoin(live, live.c.blade_id == b.id)
                total = conn.execute(_filtered(count, f, live)).scalar() or 0
                stmt = select(*_COLS).select_from(b)
                if live is not None:
                    stmt = stmt.outerjoin(live, live.c.blade_id == b.id)
                stmt = _filtered(stmt, f, live).order_by(*_order(sort, live)).limit(limit + 1)
                if after and sort == "name":
                    stmt = stmt.where(b.name > after)
                if offset:
                    stmt = stmt.offset(offset)
                rows = conn.execute(stmt).all()
            more = len(rows) > limit
            rows = rows[:limit]
            ids = [r[0] for r in rows]
            nics: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
            if plain:
                nic_rows: Sequence[Any] = sorted(of_nics.rows(conn, **args), key=lambda r: (r[0], r[5]))
                bound = {r[0]: (r[1], r[2]) for r in of_bound.rows(conn, **args)}
                health = health_rows(of_health.rows(conn, **args), datetime.now(UTC))
            else:
                nic_rows = [r for chunk in _chunks(ids) for r in conn.execute(_NICS, {"ids": chunk}).all()]
                bound = _bound(conn, ids)
                health = latest_health(conn, ids)
            for blade_id, name, mac, switch, port, _position in nic_rows:
                nics[blade_id].append({"name": name, "mac": mac, "switch": switch, "port": port})
        items = [blade_item(r, nics[r[0]], bound.get(r[0]), health.get(r[0], NO_HEALTH)) for r in rows]
        return items, (rows[-1][1] if more and rows and sort == "name" else None), total

    def health_of(self, name: str) -> dict[str, Any]:
        """The monitor's last sample of one blade (see :func:`latest_health`)."""
        with self._store.read() as s:
            bid = s.scalar(select(BladeRow.id).where(BladeRow.name == name))
            if bid is None:
                raise NotFound("blade", name)
            return latest_health(s, [bid]).get(bid, dict(NO_HEALTH))

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
        """Chassis with their blades by slot, for the console's rack view: each blade's state,
        profile, and power and health from the monitor's last sample."""
        with self._store.read() as s:
            rows = list(s.execute(_filtered(select(BladeRow.id, BladeRow.name, BladeRow.state, BladeRow.chassis,
                                                   BladeRow.slot), BladeFilter(tenant=tenant))
                                  .order_by(BladeRow.chassis, BladeRow.slot, BladeRow.name)))
            ids = [r.id for r in rows]
            bound = _bound(s, ids)
            health = latest_health(s, ids)
        chassis: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            b = bound.get(r.id)
            h = health.get(r.id, NO_HEALTH)
            chassis.setdefault(r.chassis or "unplaced", []).append(
                {"name": r.name, "state": r.state, "slot": r.slot, "profile": f"{b[0]}/{b[1]}" if b else None,
                 "power": h["power"], "health": h["health"], "healthAge": h["healthAge"]})
        return [{"chassis": c, "blades": blades} for c, blades in chassis.items()]
