"""Import, validate, export and delete profiles and templates; instantiate templates.

An import is one transaction: the document is validated, every concrete
identity is claimed and every pool it names is checked; any problem rolls the
whole import back, so a rejected import changes nothing.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.domain.identities import IdentityKind
from appliance.domain.names import NAME_RE
from appliance.domain.profile import (
    DEFAULT_PARKING_VLAN,
    Profile,
    claimed_identities,
    from_dict,
    parse_document,
    pool_refs,
    to_dict,
    to_xml,
    to_yaml,
    with_identities,
)
from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.services import scope as lookup
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.repos import identities as ids
from appliance.store.repos import profiles as repo
from appliance.store.tables import BindingRow, BladeRow, FailoverDomainRow, IdentityPoolRow, ProfileRow

log = logging.getLogger(__name__)

PROFILE = "ServerProfile"
TEMPLATE = "ServerProfileTemplate"
APPLIANCE = Scope.appliance()
PROFILE_SORTS = ("name", "state", "tenant", "blade")


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    kind: str
    tenant: str
    name: str
    state: str
    identities: tuple[tuple[str, str, str], ...]   # (path, kind, value) held in the store
    created_at: datetime
    updated_at: datetime
    profile: Profile
    warnings: tuple[str, ...] = ()   # what an import accepted but the admin should know (missing domain)
    blade: str | None = None         # the blade it is live on (lists only)


def _check_pools(session: Session, profile: Profile) -> list[Issue]:
    issues = []
    for ref in pool_refs(profile):
        pool = session.query(IdentityPoolRow).filter_by(name=ref.pool).one_or_none()
        if pool is None:
            issues.append(Issue(ref.path, f"identity pool {ref.pool!r} does not exist"))
        elif pool.kind != ref.kind.value:
            issues.append(Issue(ref.path, f"identity pool {ref.pool!r} holds {pool.kind} identities, not {ref.kind}"))
    return issues


def _check_claims(session: Session, profile: Profile, *, own_id: int | None,
                  show_holders: bool = True) -> list[Issue]:
    issues = []
    for claim in claimed_identities(profile):
        held = ids.holder_of(session, claim.kind, claim.value)
        if held is None:
            continue
        row, holder = held
        if own_id is not None and row.profile_id == own_id:
            continue
        # Name the holder only inside the importing tenant (and only to a caller who may see it):
        # another tenant's profile names, and that they exist, are not the importer's to learn.
        if show_holders and holder is not None and holder.tenant == profile.metadata.tenant:
            why = f"is already held by {repo.KIND_LABEL.get(holder.kind, holder.kind)} {holder.tenant}/{holder.name}"
        else:
            why = "is already in use"
        issues.append(Issue(claim.path, f'"{claim.value}" {why}'))
    return issues


def failover_warnings(session: Session, profile: Profile) -> list[str]:
    """A profile (or template) that names a failover domain which does not exist is accepted,
    since domains may come later, but it is protected by nothing until then: say so."""
    fo = profile.spec.failover
    if fo is None or fo.domain is None or fo.policy == "none":
        return []
    if session.scalar(select(FailoverDomainRow.id).where(FailoverDomainRow.name == fo.domain)) is not None:
        return []
    return [f"spec.failover.domain: failover domain {fo.domain!r} does not exist; {profile.metadata.tenant}/"
            f"{profile.metadata.name} is not protected until it is created (anvil failover domain create "
            f"{fo.domain})"]


def _claim_all(session: Session, profile: Profile, row_id: int, *, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    claimed: set[tuple[str, str]] = set()
    for claim in claimed_identities(profile):
        if claim.path in skip:
            continue
        # The model lets the HBAs of one profile share a WWNN (it names the server): the
        # store holds it once, for this profile, so no other profile can take it.
        key = (ids.space_of(claim.kind), claim.value)
        if key in claimed:
            continue
        claimed.add(key)
        try:
            ids.claim(session, claim.kind, claim.value, profile_id=row_id, path=claim.path)
        except Conflict as exc:
            # Another writer won the race between our check and our insert.
            raise ValidationError([Issue(claim.path, f'"{claim.value}" is already in use')]) from exc


def _info(session: Session, row: ProfileRow) -> ProfileInfo:
    held = tuple((r.path or "", r.kind, r.value) for r in ids.held_by(session, row.id))
    return ProfileInfo(kind=row.kind, tenant=row.tenant, name=row.name, state=row.state, identities=held,
                       created_at=row.created_at, updated_at=row.updated_at, profile=from_dict(row.document))


class ProfileService:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- reading ---------------------------------------------------------
    @staticmethod
    def parse(data: str | bytes, *, source: str | None = None, content_type: str | None = None,
              parking_vlan: int | None = DEFAULT_PARKING_VLAN) -> Profile:
        """Validate a document without touching the store. ``parking_vlan`` is the appliance's
        configured one (``Settings.network.parking_vlan``)."""
        return parse_document(data, source=source, content_type=content_type, parking_vlan=parking_vlan)

    def check(self, profile: Profile, *, source: str | None = None, show_holders: bool = True) -> list[str]:
        """What an import would refuse beyond the document: pools that do not exist or hold
        another kind, and (profiles) identities another profile holds. A stored profile of
        the same kind and name counts as the one being replaced. Reads only; raises
        ValidationError. ``show_holders`` False names no other profile (tenant-scoped callers).
        Returns what an import would warn about (:func:`failover_warnings`)."""
        kind, tenant, name = profile.kind, profile.metadata.tenant, profile.metadata.name
        with self._store.read() as s:
            issues = _check_pools(s, profile)
            if kind == PROFILE:
                existing = repo.find(s, kind, tenant, name)
                issues += _check_claims(s, profile, own_id=existing.id if existing else None,
                                        show_holders=show_holders)
            warnings = failover_warnings(s, profile)
        if issues:
            raise ValidationError(issues, source=source)
        return warnings

    def get(self, kind: str, tenant: str | None, name: str, *, scope: Scope = APPLIANCE) -> ProfileInfo:
        """The profile or template ``name`` in ``scope``'s tenant (``tenant`` for an unscoped scope)."""
        with self._store.read() as s:
            return _info(s, lookup.profile_row(s, scope, name, kind=kind, tenant=tenant))

    def list(self, *, kind: str | None = None, tenant: str | None = None, scope: Scope = APPLIANCE,
             search: str | None = None, state: str | None = None, blade: str | None = None,
             sort: str = "tenant") -> list[ProfileInfo]:
        """Profiles and templates in sight, each with the blade it is live on. ``search`` is
        text in the name, tenant, state or blade; ``sort`` one of :data:`PROFILE_SORTS`
        (tenant: by tenant, then name)."""
        if sort not in PROFILE_SORTS:
            raise ValidationError([Issue("sort", f"{sort!r} is not one of {', '.join(PROFILE_SORTS)}")])
        with self._store.read() as s:
            rows = repo.list_rows(s, kind=kind, tenant=scope.listing(tenant))
            blades = dict(s.execute(select(BindingRow.profile_id, BladeRow.name)
                                    .join(BladeRow, BladeRow.id == BindingRow.blade_id)
                                    .where(BindingRow.state == "live")).all())
            infos = [dataclasses.replace(_info(s, r), blade=blades.get(r.id)) for r in rows]
        q = (search or "").lower()
        infos = [i for i in infos
                 if (not state or i.state == state) and (not blade or i.blade == blade)
                 and (not q or any(q in (v or "") for v in (i.name, i.tenant, i.state, i.blade))
                      or q == f"{i.tenant}/{i.name}")]
        if sort != "tenant":
            infos.sort(key=lambda i: (getattr(i, sort) is None, getattr(i, sort) or "", i.tenant, i.name))
        return infos

    def export(self, kind: str, tenant: str, name: str, fmt: str) -> str:
        profile = self.get(kind, tenant, name).profile
        if fmt == "xml":
            return to_xml(profile)
        if fmt == "yaml":
            return to_yaml(profile)
        raise ValueError(f"unknown format {fmt!r} (yaml or xml)")

    # -- writing ---------------------------------------------------------
    def import_document(self, data: str | bytes, *, source: str | None = None, content_type: str | None = None,
                        replace: bool = False, parking_vlan: int | None = DEFAULT_PARKING_VLAN) -> ProfileInfo:
        profile = parse_document(data, source=source, content_type=content_type, parking_vlan=parking_vlan)
        return self.save(profile, replace=replace, source=source)

    def save(self, profile: Profile, *, replace: bool = False, source: str | None = None) -> ProfileInfo:
        kind, tenant, name = profile.kind, profile.metadata.tenant, profile.metadata.name
        with self._store.write() as s:
            existing = repo.find(s, kind, tenant, name)
            if existing is not None and not replace:
                raise Conflict(f"{repo.KIND_LABEL[kind]} {tenant}/{name} already exists (use --replace to update it)")
            issues = _check_pools(s, profile)
            if kind == PROFILE:
                issues += _check_claims(s, profile, own_id=existing.id if existing else None)
            if issues:
                raise ValidationError(issues, source=source)
            if existing is None:
                row = repo.insert(s, kind, tenant, name, to_dict(profile))
            else:
                row = existing
                row.document = to_dict(profile)
                ids.release_profile(s, row.id)
            if kind == PROFILE:
                _claim_all(s, profile, row.id)
            s.flush()
            log.info("imported %s %s/%s", kind, tenant, name)
            return dataclasses.replace(_info(s, row), warnings=tuple(failover_warnings(s, profile)))

    def delete(self, kind: str, tenant: str | None, name: str, *, scope: Scope = APPLIANCE) -> None:
        with self._store.write() as s:
            row = lookup.profile_row(s, scope, name, kind=kind, tenant=tenant, lock=True)
            tenant = row.tenant
            if row.state not in ("unassigned",):
                raise Conflict(f"{repo.KIND_LABEL[kind]} {tenant}/{name} is {row.state}; release it first")
            if s.scalar(select(BindingRow.id).where(BindingRow.profile_id == row.id, BindingRow.state == "live")):
                raise Conflict(f"{repo.KIND_LABEL[kind]} {tenant}/{name} is bound to a blade; release it first")
            s.execute(delete(BindingRow).where(BindingRow.profile_id == row.id))
            ids.release_profile(s, row.id)
            s.delete(row)

    def allocate_pool_identities(self, session: Session, row: ProfileRow) -> Profile:
        """Replace a stored profile's ``pool:`` references by allocated identities (in ``session``)."""
        profile = from_dict(row.document)
        values = {}
        for ref in pool_refs(profile):
            values[ref.path] = ids.allocate(session, ref.pool, IdentityKind(ref.kind), profile_id=row.id,
                                            path=ref.path)
        if not values:
            return profile
        done = with_identities(profile, values)
        row.document = to_dict(done)
        return done

    def instantiate(self, template: str, name: str, *, tenant: str | None = None,
                    scope: Scope = APPLIANCE) -> ProfileInfo:
        """Create profile ``name`` from a template, allocating its pool identities."""
        return self.instantiate_many(template, [name], tenant=tenant, scope=scope)[0]

    def instantiate_many(self, template: str, names: builtins.list[str], *, tenant: str | None = None,
                         scope: Scope = APPLIANCE) -> builtins.list[ProfileInfo]:
        """Create profiles ``names`` from a template in one transaction: all of them, or (any
        name taken, a pool exhausted) none."""
        if not names:
            raise ValidationError([Issue("names", "give at least one profile name")], source=f"template {template}")
        if len(names) > MAX_INSTANTIATE:
            raise ValidationError([Issue("names", f"{len(names)} profiles at once; at most {MAX_INSTANTIATE}")],
                                  source=f"template {template}")
        bad = [Issue(f"names[{i}]", f"{n!r} is not a lowercase name (a-z, 0-9, '-')")
               for i, n in enumerate(names) if not NAME_RE.match(n)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            bad.append(Issue("names", f"{', '.join(dup)} given twice"))
        if bad:
            raise ValidationError(bad, source=f"template {template}")
        with self._store.write() as s:
            return [self._instantiate(s, template, name, tenant=tenant, scope=scope) for name in names]

    def instantiate_in(self, s: Session, template: str, name: str, *, tenant: str | None,
                       scope: Scope = APPLIANCE) -> ProfileInfo:
        """:meth:`instantiate` inside the caller's transaction (a host pool makes a host, its profile
        and its job in one)."""
        return self._instantiate(s, template, name, tenant=tenant, scope=scope)

    def _instantiate(self, s: Session, template: str, name: str, *, tenant: str | None, scope: Scope
                     ) -> ProfileInfo:
        trow = lookup.profile_row(s, scope, template, kind=TEMPLATE, tenant=tenant)
        tenant = trow.tenant
        tpl = from_dict(trow.document)
        if repo.find(s, PROFILE, tenant, name) is not None:
            raise Conflict(f"profile {tenant}/{name} already exists")
        doc = to_dict(tpl)
        doc["kind"] = PROFILE
        doc["metadata"] = {**doc["metadata"], "name": name}
        profile = from_dict(doc, source=f"template {template}")
        issues = _check_pools(s, profile) + _check_claims(s, profile, own_id=None)
        if issues:
            raise ValidationError(issues, source=f"template {template}")
        row = repo.insert(s, PROFILE, tenant, name, to_dict(profile))
        allocated = {ref.path for ref in pool_refs(profile)}
        done = self.allocate_pool_identities(s, row)
        _claim_all(s, done, row.id, skip=allocated)
        s.flush()
        return _info(s, row)


MAX_INSTANTIATE = 100


def numbered(prefix: str, count: int, *, start: int = 1) -> list[str]:
    """``kvm-`` and 3 → kvm-01, kvm-02, kvm-03 (wider numbers when count needs them)."""
    width = max(2, len(str(start + count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(start, start + count)]


def resolve_kind(word: str) -> str:
    if word in ("profile", PROFILE):
        return PROFILE
    if word in ("template", TEMPLATE):
        return TEMPLATE
    raise NotFound("kind", word)
