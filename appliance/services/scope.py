"""The one tenant-aware look-up path: every name, id or key a caller gives is resolved here.

A :class:`Scope` is what a caller may see: the whole appliance (an unscoped user or
token, the local admin on the CLI) or one tenant. The look-ups below take a session and
a scope and either return the row or raise :class:`~appliance.errors.NotFound` — with
the *same* message whether the object does not exist or exists out of the caller's
sight, so a tenant learns nothing about another tenant's names, ids or keys.

What a tenant sees (DESIGN §7): its own profiles, templates, jobs, failovers and audit
entries; the blades bound to its profiles; the built-in pool ``spares`` and the blade
pools granted to it. A pool granted to a tenant reserves its blades for that tenant:
placement from ``spares`` for another tenant's profile skips them
(:func:`reserved_for_others`).

Names that are not found come with a suggestion drawn only from what the caller sees
(:func:`profile_hint`, :func:`blade_hint`, :func:`pool_hint`): "did you mean web-02?"
among its own names, and "web-01 exists in tenant acme" only for an unscoped caller.

Idempotency keys belong to the caller that sent them (its principal, within its tenant):
:func:`idempotency_digest` is what the store keeps, and :func:`request_digest` what the
key was used for, so a reused key with another request is refused, never answered with
somebody else's job.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from appliance.domain.suggest import close_names, did_you_mean, elsewhere
from appliance.errors import IdempotencyMismatch, NotFound
from appliance.store.tables import (
    BindingRow,
    BladeNicRow,
    BladePoolMemberRow,
    BladePoolRow,
    BladeRow,
    FailoverRow,
    HostPoolRow,
    HostRow,
    JobRow,
    ProfileRow,
)

DEFAULT_TENANT = "default"
DEFAULT_POOL = "spares"
PROFILE = "ServerProfile"
TEMPLATE = "ServerProfileTemplate"
_LABEL = {PROFILE: "profile", TEMPLATE: "template"}


@dataclass(frozen=True, slots=True)
class Scope:
    """Who asks: ``tenant`` (None: the whole appliance) and ``principal``, a stable id of the
    caller (``user:7``, ``token:12``, ``local:root``) that scopes its idempotency keys."""

    tenant: str | None
    principal: str

    @classmethod
    def appliance(cls, principal: str = "local") -> Scope:
        return cls(None, principal)

    @property
    def unscoped(self) -> bool:
        return self.tenant is None

    def home(self, asked: str | None = None) -> str:
        """The tenant a name resolves in: the caller's own, else the one asked for, else ``default``."""
        if self.tenant is not None:
            return self.tenant
        return asked or DEFAULT_TENANT

    def sees(self, tenant: str | None) -> bool:
        """Whether an object of ``tenant`` (None: the appliance's) is in sight."""
        return self.tenant is None or tenant == self.tenant

    def listing(self, asked: str | None = None) -> str | None:
        """Which tenant a listing is limited to: the caller's own, or the one asked for (unscoped)."""
        return self.tenant if self.tenant is not None else asked


# -- profiles and templates ------------------------------------------------------------

def profile_row(s: Session, scope: Scope, name: str, *, kind: str = PROFILE, tenant: str | None = None,
                lock: bool = False) -> ProfileRow:
    """The profile (or template) ``name`` in the caller's tenant (or ``tenant``, for an unscoped caller)."""
    home = scope.home(tenant)
    stmt = select(ProfileRow).where(ProfileRow.kind == kind, ProfileRow.tenant == home, ProfileRow.name == name)
    if lock:
        stmt = stmt.with_for_update()
    row = s.scalar(stmt)
    if row is None:
        raise NotFound(_LABEL.get(kind, kind), name, tenant=home, hint=profile_hint(s, scope, name, kind, home))
    return row


SUGGEST_SCAN = 10_000    # names read to find a suggestion (the appliance's scale target)


def profile_hint(s: Session, scope: Scope, name: str, kind: str, home: str) -> str | None:
    """Where else ``name`` is (other tenants: unscoped callers only), else close names in
    ``home`` (the caller's own tenant for a scoped caller), else a close tenant name."""
    if scope.unscoped:
        found = elsewhere(name, sorted(s.scalars(select(ProfileRow.tenant).where(
            ProfileRow.kind == kind, ProfileRow.name == name, ProfileRow.tenant != home))))
        if found:
            return found
    if not scope.sees(home):
        return None
    names = list(s.scalars(select(ProfileRow.name).where(ProfileRow.kind == kind, ProfileRow.tenant == home)
                           .limit(SUGGEST_SCAN)))
    close = did_you_mean(close_names(name, names))
    if close or names or not scope.unscoped:
        return close
    tenants = close_names(home, s.scalars(select(ProfileRow.tenant).distinct().limit(SUGGEST_SCAN)))
    return f"tenant {home} has no {_LABEL.get(kind, kind)}s; did you mean tenant {' or '.join(tenants)}?" \
        if tenants else None


# -- blades ----------------------------------------------------------------------------

def _tenant_blades(tenant: str) -> Any:
    return (select(BindingRow.blade_id).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
            .where(BindingRow.state == "live", ProfileRow.tenant == tenant))


SelectT = TypeVar("SelectT", bound=Select)  # type: ignore[type-arg]


def blades_in_sight(stmt: SelectT, scope: Scope) -> SelectT:
    """``stmt`` (a select over blades) narrowed to the blades ``scope`` sees."""
    return stmt if scope.tenant is None else stmt.where(BladeRow.id.in_(_tenant_blades(scope.tenant)))


def blade_row(s: Session, scope: Scope, name: str) -> BladeRow:
    """The blade ``name``; a tenant sees only the blades bound to its profiles."""
    stmt = select(BladeRow).where(BladeRow.name == name)
    if scope.tenant is not None:
        stmt = stmt.where(BladeRow.id.in_(_tenant_blades(scope.tenant)))
    row = s.scalar(stmt)
    if row is None:
        raise NotFound("blade", name, hint=blade_hint(s, scope, name))
    return row


UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def blade_row_by_ident(s: Session, scope: Scope, ident: str, *, lock: bool = False) -> BladeRow:
    """The blade named by its UUID or by its name (as Bare Metal API clients name nodes); a
    tenant sees only the blades bound to its profiles. NotFound (without a hint) otherwise.
    ``lock``: the blade's row is locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
    column = BladeRow.uuid if UUID_TEXT.fullmatch(ident) else BladeRow.name
    stmt = blades_in_sight(select(BladeRow).where(column == (ident.lower() if column is BladeRow.uuid else ident)),
                           scope)
    row = s.scalar(stmt.with_for_update(of=BladeRow) if lock else stmt)
    if row is None:
        raise NotFound("blade", ident)
    return row


def blade_columns_by_ident(s: Session, scope: Scope, ident: str, *columns: Any) -> Any:
    """:func:`blade_row_by_ident`'s blade, as a row of ``columns`` only (a list page's marker)."""
    column = BladeRow.uuid if UUID_TEXT.fullmatch(ident) else BladeRow.name
    row = s.connection().execute(blades_in_sight(select(*columns).where(
        column == (ident.lower() if column is BladeRow.uuid else ident)), scope)).first()
    if row is None:
        raise NotFound("blade", ident)
    return row


def nic_row(s: Session, scope: Scope, mac: str) -> tuple[BladeNicRow, BladeRow]:
    """The NIC with burned-in MAC ``mac`` and its blade, when the caller sees that blade."""
    got = s.execute(blades_in_sight(select(BladeNicRow, BladeRow).join(BladeRow, BladeRow.id == BladeNicRow.blade_id)
                                    .where(BladeNicRow.mac == mac.lower()), scope)).first()
    if got is None:
        raise NotFound("NIC", mac)
    return got[0], got[1]


def blade_hint(s: Session, scope: Scope, name: str) -> str | None:
    """Close names among the blades the caller sees."""
    stmt = select(BladeRow.name).limit(SUGGEST_SCAN)
    if scope.tenant is not None:
        stmt = stmt.where(BladeRow.id.in_(_tenant_blades(scope.tenant)))
    return did_you_mean(close_names(name, s.scalars(stmt)))


# -- blade pools ----------------------------------------------------------------------------

def pool_row(s: Session, scope: Scope, name: str) -> BladePoolRow:
    """A stored blade pool in sight: every pool for the appliance, a tenant's own grants for a tenant."""
    row = s.scalar(select(BladePoolRow).where(BladePoolRow.name == name))
    if row is None or not scope.sees(row.tenant):
        raise NotFound("blade pool", name, hint=pool_hint(s, scope, name))
    return row


def pool_hint(s: Session, scope: Scope, name: str) -> str | None:
    """Close names among the blade pools the caller sees (``spares`` included)."""
    seen = [DEFAULT_POOL, *(n for n, t in s.execute(select(BladePoolRow.name, BladePoolRow.tenant))
                            if scope.sees(t))]
    return did_you_mean(close_names(name, seen))


def reserved_for_others(s: Session, tenant: str | None) -> set[str]:
    """Blades in pools granted to a tenant other than ``tenant``: kept out of ``spares`` for it.
    For ``tenant`` None (an appliance-level placement) nothing is reserved."""
    if tenant is None:
        return set()
    stmt = (select(BladeRow.name).join(BladePoolMemberRow, BladePoolMemberRow.blade_id == BladeRow.id)
            .join(BladePoolRow, BladePoolRow.id == BladePoolMemberRow.pool_id)
            .where(BladePoolRow.tenant.is_not(None), BladePoolRow.tenant != tenant))
    return set(s.scalars(stmt))


def pool_members(s: Session, scope: Scope, pool: str) -> set[str] | None:
    """Blade names of ``pool`` as the scope may place on; None means every blade. ``spares`` is
    in everyone's sight; any other pool only when the scope sees it (NotFound otherwise)."""
    if pool == DEFAULT_POOL:
        return None
    row = pool_row(s, scope, pool)
    return set(s.scalars(select(BladeRow.name).join(BladePoolMemberRow, BladePoolMemberRow.blade_id == BladeRow.id)
                         .where(BladePoolMemberRow.pool_id == row.id)))


# -- jobs and failovers -----------------------------------------------------------------

JOB_PREFIX = re.compile(r"[0-9a-f]{8}[0-9a-f-]{0,27}")


def job_row(s: Session, scope: Scope, job_id: str) -> JobRow:
    """The job ``job_id``, or the one job in sight whose id starts with it (8 or more hex digits,
    as lists show them); an ambiguous prefix is NotFound, naming how to tell them apart."""
    row = s.get(JobRow, job_id) if len(job_id) <= 36 else None
    if row is None and len(job_id) < 36 and JOB_PREFIX.fullmatch(job_id):
        stmt = select(JobRow).where(JobRow.id.startswith(job_id)).limit(2)
        if scope.tenant is not None:   # only the caller's own jobs can match: nothing to learn of others
            stmt = stmt.where(JobRow.tenant == scope.tenant)
        found = list(s.scalars(stmt))
        if len(found) > 1:
            raise NotFound("job", job_id, hint="several jobs start with it; give more of the id")
        row = found[0] if found else None
    if row is None or not scope.sees(row.tenant):
        raise NotFound("job", job_id)
    return row


def failover_row(s: Session, scope: Scope, failover_id: int) -> FailoverRow:
    row = s.get(FailoverRow, failover_id)
    if row is None or not scope.sees(row.tenant):
        raise NotFound("failover", f"#{failover_id}")
    return row


# -- host pools and their hosts ------------------------------------------------------------

def host_pool_row(s: Session, scope: Scope, name: str, *, tenant: str | None = None,
                  lock: bool = False) -> HostPoolRow:
    """The host pool ``name`` of the caller's tenant (or ``tenant``, for an unscoped caller)."""
    home = scope.home(tenant)
    stmt = select(HostPoolRow).where(HostPoolRow.tenant == home, HostPoolRow.name == name)
    if lock:
        stmt = stmt.with_for_update()
    row = s.scalar(stmt)
    if row is None:
        hint = None
        if scope.unscoped:
            hint = elsewhere(name, sorted(s.scalars(select(HostPoolRow.tenant).where(
                HostPoolRow.name == name, HostPoolRow.tenant != home))))
        if hint is None and scope.sees(home):
            hint = did_you_mean(close_names(name, s.scalars(select(HostPoolRow.name).where(
                HostPoolRow.tenant == home).limit(SUGGEST_SCAN))))
        raise NotFound("host pool", name, tenant=home, hint=hint)
    return row


def host_row(s: Session, pool: HostPoolRow, host: str, *, lock: bool = False) -> HostRow:
    """A host of ``pool`` (already in the caller's sight) by its id, or by its name."""
    stmt = select(HostRow).where(HostRow.pool_id == pool.id,
                                 HostRow.id == host if len(host) == 36 else HostRow.name == host)
    if lock:
        stmt = stmt.with_for_update()
    row = s.scalars(stmt.order_by(HostRow.seq.desc())).first()
    if row is None:
        raise NotFound("host", host, hint=f"host pool {pool.name} has no such host")
    return row


# -- idempotency keys -------------------------------------------------------------------------

def idempotency_digest(scope: Scope, key: str) -> str:
    """What the store keeps for ``key``: bound to the caller, so another caller's equal key is
    another key (and a stolen digest from the database cannot be replayed as a header)."""
    return hashlib.sha256(json.dumps([scope.principal, scope.tenant, key]).encode()).hexdigest()


def request_digest(kind: str, **request: Any) -> str:
    """A fingerprint of what a key was first used for."""
    return hashlib.sha256(json.dumps([kind, request], sort_keys=True, default=str).encode()).hexdigest()


def job_for_key(s: Session, scope: Scope, key: str | None, fingerprint: str) -> JobRow | None:
    """The caller's job submitted earlier with ``key``; IdempotencyMismatch when that key was
    used for another request."""
    if not key:
        return None
    row = s.scalar(select(JobRow).where(JobRow.idempotency_key == idempotency_digest(scope, key)))
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyMismatch(f"Idempotency-Key {key[:64]!r} was already used for a different request; "
                                  "use a new key for a new request")
    return row
