"""Blade pools: named sets of blades that `profile assign --pool` chooses from.

``spares`` is the default pool and holds every enrolled blade (DESIGN §7); it
is not stored. A pool may be granted to one tenant.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.domain import firmware as fw
from appliance.domain.names import NAME_RE
from appliance.domain.suggest import close_names, did_you_mean
from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.services import scope as lookup
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import BladePoolMemberRow, BladePoolRow, BladeRow

DEFAULT_POOL = "spares"
_NAME = NAME_RE
PREFER = ("physical", "virtual", "any")


def _check_prefer(prefer: str) -> str:
    if prefer not in PREFER:
        raise ValidationError([Issue("prefer", f"{prefer!r} is not one of {', '.join(PREFER)}")])
    return prefer


@dataclass(frozen=True, slots=True)
class BladePoolInfo:
    name: str
    tenant: str | None
    description: str
    blades: tuple[str, ...]
    available: int
    prefer: str = "physical"
    firmware_baseline: str | None = None
    firmware_policy: str | None = None     # set with a baseline: report, refuse or update-first


@dataclass(frozen=True, slots=True)
class PoolFirmware:
    """A blade pool's firmware baseline and the policy a stamp applies it with."""
    pool: str
    baseline: str
    policy: str


def _check_firmware(baseline: str | None, policy: str | None, baselines: Sequence[Path] | None) -> str | None:
    """The policy to store with ``baseline`` (report when not given); ValidationError naming the field."""
    if baseline is None:
        if policy is not None:
            raise ValidationError([Issue("firmwarePolicy", "is set with a firmware baseline (none is given)")])
        return None
    if policy is not None and policy not in fw.POLICIES:
        raise ValidationError([Issue("firmwarePolicy", f"{policy!r} is not one of {', '.join(fw.POLICIES)}")])
    if not fw.NAME.match(baseline):
        raise ValidationError([Issue("firmwareBaseline", f"{baseline!r} is not a lowercase baseline name")])
    if baselines is not None:
        from appliance.services.firmware import load_baseline

        load_baseline(baselines, baseline)   # NotFound with a suggestion, or the file's problems
    return policy or "report"


def pool_firmware(s: Session, pool: str) -> PoolFirmware | None:
    """The baseline named by blade pool ``pool`` (None: the pool names none, or is ``spares``)."""
    if pool == DEFAULT_POOL:
        return None
    row = s.scalar(select(BladePoolRow).where(BladePoolRow.name == pool))
    if row is None:
        raise NotFound("blade pool", pool, hint=lookup.pool_hint(s, Scope.appliance(), pool))
    if not row.firmware_baseline:
        return None
    return PoolFirmware(row.name, row.firmware_baseline, row.firmware_policy or "report")


def blade_firmware(s: Session, blade: str) -> list[PoolFirmware]:
    """The baselines named by the pools ``blade`` is a member of, by pool name."""
    rows = s.scalars(select(BladePoolRow).join(BladePoolMemberRow, BladePoolMemberRow.pool_id == BladePoolRow.id)
                     .join(BladeRow, BladeRow.id == BladePoolMemberRow.blade_id)
                     .where(BladeRow.name == blade, BladePoolRow.firmware_baseline.is_not(None))
                     .order_by(BladePoolRow.name))
    return [PoolFirmware(r.name, r.firmware_baseline or "", r.firmware_policy or "report") for r in rows]


def members(s: Session, pool: str) -> set[str] | None:
    """Blade names in ``pool``; None means every blade (the default pool)."""
    if pool == DEFAULT_POOL:
        return None
    row = s.scalar(select(BladePoolRow).where(BladePoolRow.name == pool))
    if row is None:
        raise NotFound("blade pool", pool, hint=lookup.pool_hint(s, Scope.appliance(), pool))
    return set(s.scalars(select(BladeRow.name).join(BladePoolMemberRow, BladePoolMemberRow.blade_id == BladeRow.id)
                         .where(BladePoolMemberRow.pool_id == row.id)))


class BladePoolService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, name: str, *, tenant: str | None = None, description: str = "",
               prefer: str = "physical", firmware_baseline: str | None = None, firmware_policy: str | None = None,
               baselines: Sequence[Path] | None = None) -> BladePoolInfo:
        """``prefer``: which blades placement tries first, ``physical`` (VM slots last), ``virtual`` or ``any``.
        ``firmware_baseline``: checked (in ``baselines``' folders, when given) by a stamp onto the pool's
        blades whose profile names none, per ``firmware_policy`` (report by default)."""
        if not _NAME.match(name):
            raise ValidationError([Issue("name", f"{name!r} is not a lowercase name (a-z, 0-9, '-')")])
        _check_prefer(prefer)
        policy = _check_firmware(firmware_baseline, firmware_policy, baselines)
        if name == DEFAULT_POOL:
            raise Conflict(f"{DEFAULT_POOL!r} is the built-in pool of every blade")
        with self._store.write() as s:
            if s.scalar(select(BladePoolRow.id).where(BladePoolRow.name == name)) is not None:
                raise Conflict(f"blade pool {name!r} already exists")
            s.add(BladePoolRow(name=name, tenant=tenant, description=description, prefer=prefer,
                               firmware_baseline=firmware_baseline, firmware_policy=policy))
        return self.get(name)

    def set_firmware(self, name: str, baseline: str | None, policy: str | None = None, *,
                     baselines: Sequence[Path] | None = None) -> BladePoolInfo:
        """Name the pool's firmware baseline and policy (report when not given), or none (``baseline`` None)."""
        checked = _check_firmware(baseline, policy, baselines)
        with self._store.write() as s:
            row = self._row(s, name)
            row.firmware_baseline, row.firmware_policy = baseline, checked
        return self.get(name)

    def _blade_ids(self, s: Session, blades: tuple[str, ...]) -> list[int]:
        ids = []
        for b in blades:
            bid = s.scalar(select(BladeRow.id).where(BladeRow.name == b))
            if bid is None:
                raise NotFound("blade", b, hint=lookup.blade_hint(s, Scope.appliance(), b))
            ids.append(bid)
        return ids

    def add(self, name: str, blades: tuple[str, ...]) -> BladePoolInfo:
        with self._store.write() as s:
            pool = self._row(s, name)
            have = set(s.scalars(select(BladePoolMemberRow.blade_id).where(BladePoolMemberRow.pool_id == pool.id)))
            for bid in self._blade_ids(s, blades):
                if bid not in have:
                    s.add(BladePoolMemberRow(pool_id=pool.id, blade_id=bid))
                    have.add(bid)
        return self.get(name)

    def remove(self, name: str, blades: tuple[str, ...]) -> BladePoolInfo:
        with self._store.write() as s:
            pool = self._row(s, name)
            ids = self._blade_ids(s, blades)
            s.execute(delete(BladePoolMemberRow).where(BladePoolMemberRow.pool_id == pool.id,
                                                       BladePoolMemberRow.blade_id.in_(ids)))
        return self.get(name)

    def update(self, name: str, *, tenant: str | None = None, ungrant: bool = False,
               description: str | None = None, prefer: str | None = None) -> BladePoolInfo:
        """Grant the pool to ``tenant`` (its blades are then reserved for that tenant), take the
        grant back (``ungrant``), or change the description; what is not given stays."""
        if tenant is not None and not _NAME.match(tenant):
            raise ValidationError([Issue("tenant", f"{tenant!r} is not a lowercase name (a-z, 0-9, '-')")])
        with self._store.write() as s:
            row = self._row(s, name)
            if ungrant:
                row.tenant = None
            elif tenant is not None:
                row.tenant = tenant
            if description is not None:
                row.description = description[:255]
            if prefer is not None:
                row.prefer = _check_prefer(prefer)
        return self.get(name)

    def delete(self, name: str) -> None:
        with self._store.write() as s:
            s.delete(self._row(s, name))

    def get(self, name: str, *, scope: Scope | None = None) -> BladePoolInfo:
        """The pool ``name``; for a tenant's ``scope``, only a pool granted to that tenant."""
        infos = self.list(scope=scope)
        for info in infos:
            if info.name == name:
                return info
        # Suggest among the pools this caller was just shown, and nothing else.
        raise NotFound("blade pool", name, hint=did_you_mean(close_names(name, [i.name for i in infos])))

    def list(self, *, scope: Scope | None = None) -> builtins.list[BladePoolInfo]:
        """Every pool (``spares`` first); for a tenant's ``scope``, the pools granted to it."""
        infos = self._all()
        if scope is None or scope.unscoped:
            return infos
        return [i for i in infos if i.tenant is not None and scope.sees(i.tenant)]

    def _all(self) -> builtins.list[BladePoolInfo]:
        with self._store.read() as s:
            blades = {b.name: b for b in s.scalars(select(BladeRow))}

            def avail(names: list[str]) -> int:
                return sum(1 for n in names if blades[n].state == "spare")

            out = [BladePoolInfo(DEFAULT_POOL, None, "every enrolled blade", tuple(sorted(blades)),
                                 avail(list(blades)))]
            for row in s.scalars(select(BladePoolRow).order_by(BladePoolRow.name)):
                names = sorted(members(s, row.name) or ())
                out.append(BladePoolInfo(row.name, row.tenant, row.description, tuple(names), avail(names),
                                         row.prefer or "physical", row.firmware_baseline,
                                         row.firmware_policy if row.firmware_baseline else None))
            return out

    @staticmethod
    def _row(s: Session, name: str) -> BladePoolRow:
        if name == DEFAULT_POOL:
            raise Conflict(f"{DEFAULT_POOL!r} always holds every blade")
        row = s.scalar(select(BladePoolRow).where(BladePoolRow.name == name))
        if row is None:
            raise NotFound("blade pool", name, hint=lookup.pool_hint(s, Scope.appliance(), name))
        return row
