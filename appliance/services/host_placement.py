"""Where a pool's hosts may go: placement's inputs (appliance.services.placement) plus the
pool's spread and the blades other hosts have chosen but not bound yet.

The reconcile loop asks how many hosts could be placed now (:func:`room`); a host's stamp
job asks which blade to take (:func:`choose_blade`), in a write transaction, and records
its choice on the host row at once, so hosts choosing at the same time see each other's
choices (SQLite has one writer; PostgreSQL callers lock the pool row first).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.domain.hostpool import (
    BladeOption,
    Choice,
    HostState,
    Room,
    Spread,
    capacity,
    choose,
    taken_by,
)
from appliance.domain.placement import Placement
from appliance.domain.profile import Profile, from_dict
from appliance.services import placement
from appliance.services.hostpools import quota_of
from appliance.store.tables import BladeRow, HostPoolRow, HostRow, ProfileRow

_LIVE = [HostState.REQUESTED.value, HostState.READY.value, HostState.FAILED.value]


def template_of(s: Session, pool: HostPoolRow) -> Profile | None:
    doc = s.scalar(select(ProfileRow.document).where(ProfileRow.kind == "ServerProfileTemplate",
                                                     ProfileRow.tenant == pool.tenant,
                                                     ProfileRow.name == pool.template))
    return from_dict(doc) if doc is not None else None


def options(s: Session, pool: HostPoolRow, profile: Profile, *, host: str | None = None
            ) -> tuple[list[BladeOption], Placement]:
    """Spare blades of the pool's blade pool a host fits on, best first, less those other
    requested hosts have chosen; and placement's answer (with its rejections)."""
    pl = placement.dry_run(s, profile, pool=pool.blade_pool, tenant=pool.tenant, spare_only=True)
    chosen_elsewhere = set(s.scalars(select(HostRow.blade).where(
        HostRow.state == HostState.REQUESTED.value, HostRow.blade.is_not(None), HostRow.id != (host or ""))))
    chassis = dict(s.execute(select(BladeRow.name, BladeRow.chassis).where(BladeRow.name.in_(pl.chosen)))
                   .all()) if pl.chosen else {}
    return [BladeOption(b, chassis.get(b)) for b in pl.chosen if b not in chosen_elsewhere], pl


def taken(s: Session, pool: HostPoolRow, *, host: str | None = None) -> dict[str, int]:
    """Chassis → hosts of ``pool`` there (by the blade each has chosen or runs on)."""
    rows = s.scalars(select(BladeRow.chassis).join(HostRow, HostRow.blade == BladeRow.name).where(
        HostRow.pool_id == pool.id, HostRow.state.in_(_LIVE), HostRow.id != (host or "")))
    return dict(taken_by(rows))


def choose_blade(s: Session, pool: HostPoolRow, profile: Profile, *, host: str) -> tuple[Choice, Placement]:
    found, pl = options(s, pool, profile, host=host)
    return choose(found, taken(s, pool, host=host), Spread(pool.spread)), pl


def room(s: Session, pool: HostPoolRow, *, now: datetime, limit: int) -> Room:
    """How many hosts ``pool`` may request now (at most ``limit``, to keep the look cheap):
    no more than fit on spares not chosen by other hosts (less hosts still choosing), the
    tenant's quota allows, and none while the pool backs off after failed stamps."""
    if pool.backoff_until is not None:
        until = pool.backoff_until if pool.backoff_until.tzinfo else pool.backoff_until.replace(tzinfo=UTC)
        if now < until:
            return Room(0, f"backing off after {pool.failures} failed stamp(s) in a row, until "
                           f"{until.isoformat(timespec='seconds')}")
    quota = quota_of(s, pool.tenant)
    if quota is not None:
        live = int(s.scalar(select(func.count()).select_from(HostRow).where(
            HostRow.tenant == pool.tenant, HostRow.state.in_([HostState.REQUESTED.value, HostState.READY.value]))
            ) or 0)
        if live >= quota:
            return Room(0, f"tenant {pool.tenant}'s quota of {quota} hosts is in use")
        limit = min(limit, quota - live)
    profile = template_of(s, pool)
    if profile is None:
        return Room(0, f"template {pool.tenant}/{pool.template} no longer exists")
    found, pl = options(s, pool, profile)
    pending = int(s.scalar(select(func.count()).select_from(HostRow).where(
        HostRow.state == HostState.REQUESTED.value, HostRow.blade.is_(None))) or 0)
    spread = Spread(pool.spread)
    fit = capacity(found, taken(s, pool), spread, pending=pending)
    if fit >= limit:
        return Room(limit)
    if not pl.chosen:
        why = placement.explain(pl)
    elif spread is Spread.STRICT and not choose(found, taken(s, pool), spread).blade:
        why = choose(found, taken(s, pool), spread).reason
    else:
        why = f"the {len(found)} fitting spare(s) are taken by hosts being stamped ({pending} still choosing)"
    return Room(fit, why)
