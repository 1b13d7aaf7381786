"""Identity pools and the identities in use.

Allocation takes the pool row with ``SELECT … FOR UPDATE`` (PostgreSQL) or runs
inside a ``BEGIN IMMEDIATE`` transaction (SQLite), so allocators in several
processes serialise per pool; the unique index on (space, value) is the
backstop that makes a duplicate impossible whatever the code does.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.domain.identities import IdentityKind
from appliance.domain.pools import PoolSpec
from appliance.domain.suggest import close_names, did_you_mean
from appliance.errors import Conflict, NotFound, PoolExhausted
from appliance.store.tables import IdentityPoolRow, IdentityRow, ProfileRow

_SCAN = 512


def space_of(kind: IdentityKind) -> str:
    """WWPNs and WWNNs share one namespace: a WWN may be used once, in either role."""
    return "wwn" if kind in (IdentityKind.WWPN, IdentityKind.WWNN) else kind.value


def spec_of(row: IdentityPoolRow) -> PoolSpec:
    return PoolSpec(name=row.name, kind=IdentityKind(row.kind), start=row.start, end=row.end, prefix=row.prefix)


def create_pool(session: Session, spec: PoolSpec) -> IdentityPoolRow:
    if session.scalar(select(IdentityPoolRow.id).where(IdentityPoolRow.name == spec.name)) is not None:
        raise Conflict(f"identity pool {spec.name!r} already exists")
    row = IdentityPoolRow(
        name=spec.name, kind=spec.kind.value, start=spec.start, end=spec.end, prefix=spec.prefix,
        size=spec.size, next_offset=0,
    )
    session.add(row)
    session.flush()
    return row


def get_pool(session: Session, name: str, *, lock: bool = False) -> IdentityPoolRow:
    stmt = select(IdentityPoolRow).where(IdentityPoolRow.name == name)
    if lock:
        stmt = stmt.with_for_update()
    row = session.scalar(stmt)
    if row is None:   # identity pools are the appliance's: every caller sees their names
        raise NotFound("identity pool", name, hint=did_you_mean(close_names(
            name, session.scalars(select(IdentityPoolRow.name)))))
    return row


def list_pools(session: Session) -> list[tuple[IdentityPoolRow, int]]:
    """Every pool with the number of identities allocated from it."""
    used = (
        select(IdentityRow.pool_id, func.count().label("n"))
        .where(IdentityRow.pool_id.is_not(None))
        .group_by(IdentityRow.pool_id)
        .subquery()
    )
    rows = session.execute(
        select(IdentityPoolRow, func.coalesce(used.c.n, 0))
        .outerjoin(used, used.c.pool_id == IdentityPoolRow.id)
        .order_by(IdentityPoolRow.name)
    ).all()
    return [(r[0], int(r[1])) for r in rows]


def holders(session: Session, pool_id: int, *, limit: int) -> list[tuple[str, str | None, str | None, str | None]]:
    """(value, tenant, profile, path) of identities allocated from a pool, in pool order."""
    rows = session.execute(
        select(IdentityRow.value, ProfileRow.tenant, ProfileRow.name, IdentityRow.path)
        .outerjoin(ProfileRow, ProfileRow.id == IdentityRow.profile_id)
        .where(IdentityRow.pool_id == pool_id).order_by(IdentityRow.offset).limit(limit)).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def delete_pool(session: Session, name: str) -> None:
    row = get_pool(session, name, lock=True)
    held = session.scalar(select(func.count()).where(IdentityRow.pool_id == row.id)) or 0
    if held:
        raise Conflict(f"identity pool {name!r} still has {held} identities in use")
    session.delete(row)


def _first_gap(session: Session, pool_id: int, lo: int, hi: int) -> int | None:
    """The smallest offset in [lo, hi) not in use, or None."""
    expected = lo
    while expected < hi:
        taken = session.scalars(
            select(IdentityRow.offset)
            .where(IdentityRow.pool_id == pool_id, IdentityRow.offset >= expected, IdentityRow.offset < hi)
            .order_by(IdentityRow.offset)
            .limit(_SCAN)
        ).all()
        for off in taken:
            if off != expected:
                return expected
            expected += 1
        if len(taken) < _SCAN:
            return expected if expected < hi else None
    return None


def allocate(session: Session, pool_name: str, kind: IdentityKind, *, profile_id: int | None,
             path: str | None) -> str:
    """Allocate one identity of ``kind`` from the pool; raises NotFound, Conflict, PoolExhausted."""
    pool = get_pool(session, pool_name, lock=True)
    if pool.kind != kind.value:
        raise Conflict(f"identity pool {pool_name!r} holds {pool.kind} identities, not {kind.value}")
    spec = spec_of(pool)
    start = pool.next_offset % pool.size
    for _ in range(pool.size):
        off = _first_gap(session, pool.id, start, pool.size)
        if off is None:
            off = _first_gap(session, pool.id, 0, start)
        if off is None:
            raise PoolExhausted(pool_name)
        value = spec.value_at(off)
        row = IdentityRow(kind=kind.value, space=space_of(kind), value=value, pool_id=pool.id, offset=off,
                          profile_id=profile_id, path=path)
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            # The value is already held outside the pool's books (claimed before the pool
            # existed): adopt that row into the pool so the scan skips it from now on.
            session.execute(
                update(IdentityRow)
                .where(IdentityRow.space == space_of(kind), IdentityRow.value == value, IdentityRow.pool_id.is_(None))
                .values(pool_id=pool.id, offset=off)
            )
            start = off + 1 if off + 1 < pool.size else 0
            continue
        pool.next_offset = off + 1
        return value
    raise PoolExhausted(pool_name)


def holder_of(session: Session, kind: IdentityKind, value: str) -> tuple[IdentityRow, ProfileRow | None] | None:
    row = session.scalar(select(IdentityRow).where(IdentityRow.space == space_of(kind), IdentityRow.value == value))
    if row is None:
        return None
    prof = session.get(ProfileRow, row.profile_id) if row.profile_id is not None else None
    return row, prof


def claim(session: Session, kind: IdentityKind, value: str, *, profile_id: int, path: str) -> None:
    """Record that a profile holds a concrete identity. Raises Conflict if another holds it."""
    pool_id, offset = None, None
    for pool in session.scalars(select(IdentityPoolRow).where(IdentityPoolRow.kind == kind.value)):
        off = spec_of(pool).offset_of(value)
        if off is not None:
            pool_id, offset = pool.id, off
            break
    row = IdentityRow(kind=kind.value, space=space_of(kind), value=value, pool_id=pool_id, offset=offset,
                      profile_id=profile_id, path=path)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise Conflict(f"{path}: {kind.value} {value} is already in use") from None


def release_profile(session: Session, profile_id: int) -> int:
    """Return every identity a profile holds to its pool; the count released."""
    result = session.execute(delete(IdentityRow).where(IdentityRow.profile_id == profile_id))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def held_by(session: Session, profile_id: int) -> list[IdentityRow]:
    return list(session.scalars(select(IdentityRow).where(IdentityRow.profile_id == profile_id)
                                .order_by(IdentityRow.id)))
