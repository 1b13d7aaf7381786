"""The built-in record kinds: identity pools, templates, profiles (with the identities they
hold) and failover domains.

What a replica is at the recovery site: a profile lands as an ordinary profile (same tenant,
name, document and identities) whose ``site_lease`` is the origin's name, so it is never
stamped here until DR activation takes the lease; the identities it holds are rows of this
site's identity table like any other, so local allocation skips them. Templates land as
ordinary templates. Identity pools and failover domains land under their name unless this
site has its own of that name (then this site's stays: its ranges and spares are its own;
the identities themselves are reserved through the profiles holding them either way).
A failover domain's webhook is not replicated (its secret stays at its site).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.domain.identities import IdentityKind
from appliance.errors import Conflict
from appliance.sites.registry import ApplyContext, RecordKind, Registry, replica_keys
from appliance.store.repos import identities as ids
from appliance.store.tables import (
    BindingRow,
    FailoverDomainRow,
    IdentityPoolRow,
    IdentityRow,
    ProfileRow,
)

PROFILE, TEMPLATE = "ServerProfile", "ServerProfileTemplate"


# -- identity pools ------------------------------------------------------------

def export_pools(s: Session) -> dict[str, dict[str, Any]]:
    skip = replica_keys(s, "identity_pool")
    return {p.name: {"kind": p.kind, "start": p.start, "end": p.end, "prefix": p.prefix, "size": p.size}
            for p in s.scalars(select(IdentityPoolRow).order_by(IdentityPoolRow.name)) if p.name not in skip}


def apply_pool(s: Session, ctx: ApplyContext, key: str, data: dict[str, Any] | None) -> None:
    row = s.scalar(select(IdentityPoolRow).where(IdentityPoolRow.name == key))
    if row is not None and not ctx.is_replica(s, "identity_pool", key):
        return   # this site's own pool of that name stays as it is
    if data is None:
        if row is not None and s.scalar(select(IdentityRow.id).where(IdentityRow.pool_id == row.id).limit(1)) is None:
            s.delete(row)
        return
    if row is None:
        s.add(IdentityPoolRow(name=key, kind=data["kind"], start=data["start"], end=data["end"],
                              prefix=data.get("prefix"), size=int(data["size"]), next_offset=0))
    else:
        row.kind, row.start, row.end, row.prefix, row.size = (data["kind"], data["start"], data["end"],
                                                              data.get("prefix"), int(data["size"]))


# -- profiles and templates ------------------------------------------------------

def _export_profiles(s: Session, kind: str, record_kind: str) -> dict[str, dict[str, Any]]:
    skip = replica_keys(s, record_kind)
    out: dict[str, dict[str, Any]] = {}
    rows = list(s.scalars(select(ProfileRow).where(ProfileRow.kind == kind).order_by(ProfileRow.tenant,
                                                                                      ProfileRow.name)))
    held: dict[int, list[dict[str, str]]] = {}
    if kind == PROFILE:
        for i in s.scalars(select(IdentityRow).where(IdentityRow.profile_id.is_not(None)).order_by(IdentityRow.id)):
            assert i.profile_id is not None
            held.setdefault(i.profile_id, []).append({"kind": i.kind, "value": i.value, "path": i.path or ""})
    for r in rows:
        key = f"{r.tenant}/{r.name}"
        if key in skip:
            continue
        data: dict[str, Any] = {"tenant": r.tenant, "name": r.name, "document": r.document}
        if kind == PROFILE:
            data["identities"] = held.get(r.id, [])
        out[key] = data
    return out


def export_profiles(s: Session) -> dict[str, dict[str, Any]]:
    return _export_profiles(s, PROFILE, "profile")


def export_templates(s: Session) -> dict[str, dict[str, Any]]:
    return _export_profiles(s, TEMPLATE, "template")


def _split(key: str) -> tuple[str, str]:
    tenant, _, name = key.partition("/")
    return tenant, name


def _apply_profile(s: Session, ctx: ApplyContext, kind: str, record_kind: str, key: str,
                   data: dict[str, Any] | None) -> None:
    tenant, name = _split(key)
    row = s.scalar(select(ProfileRow).where(ProfileRow.kind == kind, ProfileRow.tenant == tenant,
                                            ProfileRow.name == name).with_for_update())
    label = "profile" if kind == PROFILE else "template"
    if row is not None and not ctx.is_replica(s, record_kind, key):
        raise Conflict(f"{label} {key} exists at this site and is not a replica of site {ctx.origin}: "
                       f"rename or delete one of them")
    if row is not None and kind == PROFILE and row.site_lease != ctx.origin:
        return   # its lease is here (or with a third site): what runs here is not overwritten
    if data is None:
        if row is not None:
            s.execute(delete(BindingRow).where(BindingRow.profile_id == row.id, BindingRow.state != "live"))
            ids.release_profile(s, row.id)
            s.delete(row)
        return
    if row is None:
        row = ProfileRow(kind=kind, tenant=tenant, name=name, document=data["document"],
                         site_lease=ctx.origin if kind == PROFILE else None)
        s.add(row)
        s.flush()
    else:
        row.document = data["document"]
        ids.release_profile(s, row.id)
    if kind == PROFILE:
        seen: set[tuple[str, str]] = set()
        for held in data.get("identities", []):
            ikind = IdentityKind(held["kind"])
            if (ids.space_of(ikind), held["value"]) in seen:
                continue
            seen.add((ids.space_of(ikind), held["value"]))
            try:
                ids.claim(s, ikind, held["value"], profile_id=row.id, path=held["path"])
            except Conflict:
                other = ids.holder_of(s, ikind, held["value"])
                who = f"{other[1].tenant}/{other[1].name}" if other and other[1] else "another holder"
                raise Conflict(f"profile {key} from site {ctx.origin}: {held['kind']} {held['value']} is held "
                               f"here by {who}") from None


def apply_profile(s: Session, ctx: ApplyContext, key: str, data: dict[str, Any] | None) -> None:
    _apply_profile(s, ctx, PROFILE, "profile", key, data)


def apply_template(s: Session, ctx: ApplyContext, key: str, data: dict[str, Any] | None) -> None:
    _apply_profile(s, ctx, TEMPLATE, "template", key, data)


# -- failover domains ------------------------------------------------------------

def export_domains(s: Session) -> dict[str, dict[str, Any]]:
    skip = replica_keys(s, "failover_domain")
    return {d.name: {"sparePool": d.spare_pool, "description": d.description,
                     "restartAttempts": d.restart_attempts, "vmHosts": list(d.vm_hosts or [])}
            for d in s.scalars(select(FailoverDomainRow).order_by(FailoverDomainRow.name)) if d.name not in skip}


def apply_domain(s: Session, ctx: ApplyContext, key: str, data: dict[str, Any] | None) -> None:
    row = s.scalar(select(FailoverDomainRow).where(FailoverDomainRow.name == key))
    if row is not None and not ctx.is_replica(s, "failover_domain", key):
        return   # this site's own domain of that name stays
    if data is None:
        if row is not None:
            s.delete(row)
        return
    if row is None:
        row = FailoverDomainRow(name=key)
        s.add(row)
    row.spare_pool = data["sparePool"]
    row.description = data["description"]
    row.restart_attempts = int(data["restartAttempts"])
    row.vm_hosts = list(data["vmHosts"])


BUILTIN = (
    RecordKind("identity_pool", export_pools, apply_pool),
    RecordKind("template", export_templates, apply_template),
    RecordKind("failover_domain", export_domains, apply_domain),
    RecordKind("profile", export_profiles, apply_profile),
)


def default_registry() -> Registry:
    """Every kind that replicates. DR plans add theirs here (``.with_kind(...)``)."""
    from appliance.dr.replication import DR_PLAN

    return Registry(BUILTIN).with_kind(DR_PLAN)
