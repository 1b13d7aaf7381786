"""Reading the change records (appliance.store.changes writes them): by resource and time,
as JSON lines for a CMDB, replayed to the bindings they describe, and summed to usage.

A tenant-scoped caller sees only its own tenant's records (its profiles, their bindings,
the ports and LUNs its jobs changed); blades belong to the appliance.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from appliance.domain.usage import BindingChange, Usage, blade_time, by_tenant, replay
from appliance.errors import Issue, ValidationError
from appliance.store import Store
from appliance.store.changes import BINDING, KINDS
from appliance.store.tables import BindingRow, BladeRow, ChangeRow, HostPoolRow, HostRow, ProfileRow

_BATCH = 1000


def aware(t: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_time(raw: str, where: str) -> datetime:
    """An ISO 8601 / RFC 3339 date-time with its zone (``2026-12-06T10:00:00Z``), or a date
    (midnight UTC); ValidationError naming ``where`` otherwise."""
    text = raw.strip()
    try:
        t = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValidationError([Issue(where, f"{raw[:64]!r} is not a date-time (e.g. 2026-12-06T10:00:00Z)")]) \
            from None
    if t.tzinfo is None:
        if len(text) > 10:
            raise ValidationError([Issue(where, f"{raw[:64]!r} has no time zone (add Z for UTC)")])
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def parse_resource(raw: str, where: str = "resource") -> tuple[str, str | None]:
    """``KIND`` or ``KIND/NAME`` (a profile's or binding's NAME is ``tenant/name``)."""
    kind, _, name = raw.partition("/")
    if kind not in KINDS:
        raise ValidationError([Issue(where, f"{kind[:32]!r} is not a kind of resource; one of {', '.join(KINDS)}")])
    return kind, name or None


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    tenant: str | None = None       # a tenant-scoped caller: only its tenant's records
    resource: str | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> ChangeFilter:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValidationError([Issue("until", "must be later than since")])
        return self


def public(row: ChangeRow) -> dict[str, Any]:
    return {"id": row.id, "at": aware(row.at).isoformat(), "who": row.who, "resource": row.resource,
            "name": row.name, "tenant": row.tenant, "action": row.action, "before": row.before,
            "after": row.after, "job": row.job_id, "step": row.step}


def _filtered(stmt: Select[Any], f: ChangeFilter) -> Select[Any]:
    if f.tenant is not None:
        stmt = stmt.where(ChangeRow.tenant == f.tenant)
    if f.resource:
        stmt = stmt.where(ChangeRow.resource == f.resource)
    if f.name:
        stmt = stmt.where(ChangeRow.name == f.name)
    if f.since is not None:
        stmt = stmt.where(ChangeRow.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(ChangeRow.at < f.until)
    return stmt


def _binding_changes(s: Session, *, tenant: str | None, until: datetime | None) -> Iterator[BindingChange]:
    stmt = select(ChangeRow).where(ChangeRow.resource == BINDING).order_by(ChangeRow.id)
    if tenant is not None:
        stmt = stmt.where(ChangeRow.tenant == tenant)
    if until is not None:
        stmt = stmt.where(ChangeRow.at < until)
    for row in s.scalars(stmt.execution_options(yield_per=_BATCH)):
        yield BindingChange(row.id, aware(row.at), row.name, row.tenant or "", row.action, row.before, row.after)


@dataclass(frozen=True, slots=True)
class UsageReport:
    start: datetime
    end: datetime
    profiles: list[Usage]
    tenants: dict[str, float]
    # "tenant/pool" -> blade-seconds of the pool's hosts' profiles (a host's row outlives its release)
    host_pools: dict[str, float] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(),
                "profiles": [{"profile": u.profile, "tenant": u.tenant, "bladeSeconds": u.seconds,
                              "bladeHours": round(u.hours, 6)} for u in self.profiles],
                "tenants": [{"tenant": t, "bladeSeconds": sec, "bladeHours": round(sec / 3600, 6)}
                            for t, sec in self.tenants.items()],
                "hostPools": [{"hostPool": key.split("/", 1)[1], "tenant": key.split("/", 1)[0], "bladeSeconds": sec,
                               "bladeHours": round(sec / 3600, 6)} for key, sec in self.host_pools.items()]}

    def csv(self) -> str:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["scope", "tenant", "profile", "from", "to", "blade_seconds", "blade_hours"])
        span = (self.start.isoformat(), self.end.isoformat())
        for u in self.profiles:
            w.writerow(["profile", u.tenant, u.profile, *span, f"{u.seconds:g}", f"{u.hours:.6f}"])
        for t, sec in self.tenants.items():
            w.writerow(["tenant", t, "", *span, f"{sec:g}", f"{sec / 3600:.6f}"])
        for key, sec in self.host_pools.items():   # the pool's name in the profile column
            w.writerow(["host-pool", key.split("/", 1)[0], key, *span, f"{sec:g}", f"{sec / 3600:.6f}"])
        return out.getvalue()


def _host_pools_of(s: Session, tenant: str | None) -> dict[str, str]:
    """profile (``tenant/name``) -> host pool (``tenant/pool``) of every host ever requested."""
    stmt = select(HostRow.tenant, HostRow.name, HostPoolRow.name).join(HostPoolRow, HostPoolRow.id == HostRow.pool_id)
    if tenant is not None:
        stmt = stmt.where(HostRow.tenant == tenant)
    return {f"{t}/{profile}": f"{t}/{pool}" for t, profile, pool in s.execute(stmt)}


class ChangeService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def list(self, f: ChangeFilter, *, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Records matching ``f``, oldest first (the order they happened in), and how many match."""
        f.check()
        with self._store.read() as s:
            total = int(s.scalar(_filtered(select(func.count(ChangeRow.id)), f)) or 0)
            rows = s.scalars(_filtered(select(ChangeRow), f).order_by(ChangeRow.id).offset(offset).limit(limit))
            return [public(r) for r in rows], total

    def export(self, f: ChangeFilter) -> Iterator[str]:
        """Every record matching ``f`` as one JSON document per line, oldest first (for a CMDB)."""
        f.check()
        with self._store.read() as s:
            stmt = _filtered(select(ChangeRow), f).order_by(ChangeRow.id).execution_options(yield_per=_BATCH)
            for row in s.scalars(stmt):
                yield json.dumps(public(row), sort_keys=True, separators=(",", ":"))

    def replayed_bindings(self, *, tenant: str | None = None) -> dict[str, str]:
        """profile (``tenant/name``) → blade, rebuilt from the binding records alone."""
        with self._store.read() as s:
            return replay(_binding_changes(s, tenant=tenant, until=None))

    def stored_bindings(self, *, tenant: str | None = None) -> dict[str, str]:
        """profile → blade of the live bindings in the store (what :meth:`replayed_bindings` must equal)."""
        with self._store.read() as s:
            stmt = (select(ProfileRow.tenant, ProfileRow.name, BladeRow.name)
                    .join(BindingRow, BindingRow.profile_id == ProfileRow.id)
                    .join(BladeRow, BladeRow.id == BindingRow.blade_id).where(BindingRow.state == "live"))
            if tenant is not None:
                stmt = stmt.where(ProfileRow.tenant == tenant)
            return {f"{t}/{p}": b for t, p, b in s.execute(stmt)}

    def usage(self, start: datetime, end: datetime, *, tenant: str | None = None) -> UsageReport:
        """Blade-time per profile and tenant within ``[start, end)``, from the binding records;
        a binding still open counts until now (the store's clock) if that is earlier."""
        if end <= start:
            raise ValidationError([Issue("to", "must be later than from")])
        cap = min(end, aware(self._store.now()))
        with self._store.read() as s:
            found = blade_time(_binding_changes(s, tenant=tenant, until=end), start, max(cap, start))
            pools = _host_pools_of(s, tenant)
        per_pool: dict[str, float] = {}
        for u in found:
            if u.profile in pools:
                per_pool[pools[u.profile]] = per_pool.get(pools[u.profile], 0.0) + u.seconds
        return UsageReport(start, end, found, by_tenant(found), dict(sorted(per_pool.items())))
