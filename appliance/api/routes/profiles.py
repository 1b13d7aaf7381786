"""Profiles and templates: CRUD with bodies in JSON, YAML or XML (by Content-Type and Accept),
validation, dry-run placement and template instantiation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from appliance.api import schemas as sc
from appliance.api.keys import BODY_TYPE, OFFLOAD, SETTINGS, STORE
from appliance.api.spec import Forbidden, Op, Param, body, caller, query, scope_of
from appliance.domain.profile import Profile, to_dict, to_xml, to_yaml
from appliance.errors import Issue, ValidationError
from appliance.services.inventory import Inventory
from appliance.services.jobs import JobService
from appliance.services.profiles import PROFILE, PROFILE_SORTS, TEMPLATE, ProfileInfo, ProfileService

YAML = "application/yaml"
XML = "application/xml"
DOC_TYPES: tuple[str, ...] = (YAML, "text/yaml", XML, "text/xml")


def summary(info: ProfileInfo) -> dict[str, Any]:
    spec = info.profile.spec
    return {"name": info.name, "tenant": info.tenant, "kind": "template" if info.kind == TEMPLATE else "profile",
            "state": info.state, "boot": spec.boot.source.type if spec.boot is not None else None,
            "identities": len(info.identities), "updated": info.updated_at.isoformat(timespec="seconds"),
            "blade": info.blade}


def detail(info: ProfileInfo) -> dict[str, Any]:
    out = {**summary(info), "document": to_dict(info.profile),
           "heldIdentities": [{"path": p, "kind": k, "value": v} for p, k, v in info.identities]}
    if info.warnings:
        out["warnings"] = list(info.warnings)
    return out


def _document(request: web.Request) -> tuple[bytes | str, str]:
    data = body(request)
    ctype = request.get(BODY_TYPE, "application/json")
    if isinstance(data, dict | list):
        return json.dumps(data), "application/json"
    return data, ctype


def _check_tenant(request: web.Request, profile: Profile) -> None:
    p = caller(request)
    if p.tenant is not None and profile.metadata.tenant != p.tenant:
        raise Forbidden(f"a {p.kind} of tenant {p.tenant!r} cannot write profiles of tenant "
                        f"{profile.metadata.tenant!r}")


def _negotiate(request: web.Request, info: ProfileInfo) -> web.Response:
    accept = request.headers.get("Accept", "")
    for media in (m.split(";")[0].strip() for m in accept.split(",")):
        if media in (YAML, "text/yaml"):
            return web.Response(text=to_yaml(info.profile), content_type=YAML)
        if media in (XML, "text/xml"):
            return web.Response(text=to_xml(info.profile), content_type=XML)
        if media in ("application/json", "*/*", "application/*"):
            break
    return web.json_response(detail(info))


def _lister(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        infos = await asyncio.to_thread(ProfileService(request.app[STORE]).list, kind=kind,
                                        tenant=query(request, "tenant"), scope=scope_of(request),
                                        state=query(request, "state"), search=query(request, "search"),
                                        blade=query(request, "blade"), sort=query(request, "sort") or "tenant")
        offset, limit = query(request, "offset") or 0, query(request, "limit") or 100
        return web.json_response({"items": [summary(i) for i in infos[offset:offset + limit]], "total": len(infos)})
    return handler


def _getter(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        info = await asyncio.to_thread(ProfileService(request.app[STORE]).get, kind, query(request, "tenant"),
                                       request.match_info["name"], scope=scope_of(request))
        return _negotiate(request, info)
    return handler


def _deleter(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.to_thread(ProfileService(request.app[STORE]).delete, kind, query(request, "tenant"),
                                request.match_info["name"], scope=scope_of(request))
        return web.Response(status=204)
    return handler


async def _parse(request: web.Request) -> Profile:
    """The body as a profile, checked with the appliance's configured parking VLAN, off the event loop."""
    data, ctype = _document(request)
    return await request.app[OFFLOAD].run(ProfileService.parse, data, source="body", content_type=ctype,
                                          parking_vlan=request.app[SETTINGS].network.parking_vlan)


async def create(request: web.Request) -> web.Response:
    svc = ProfileService(request.app[STORE])
    profile = await _parse(request)
    _check_tenant(request, profile)
    replace = bool(query(request, "replace"))
    info = await asyncio.to_thread(svc.save, profile, replace=replace, source="body")
    resp = _negotiate(request, info)
    resp.set_status(201)
    resp.headers["Location"] = f"/api/v1/{'templates' if info.kind == TEMPLATE else 'profiles'}/{info.name}"
    return resp


async def replace(request: web.Request) -> web.Response:
    svc = ProfileService(request.app[STORE])
    profile = await _parse(request)
    _check_tenant(request, profile)
    name = request.match_info["name"]
    if profile.metadata.name != name or profile.kind != PROFILE:
        raise ValidationError([Issue("metadata.name", f"the document is {profile.kind} {profile.metadata.name!r}, "
                                                      f"not ServerProfile {name!r}")], source="body")
    info = await asyncio.to_thread(svc.save, profile, replace=True, source="body")
    return _negotiate(request, info)


async def validate(request: web.Request) -> web.Response:
    """As an import would check it: the document, then the pools it names and the identities
    other profiles hold (a tenant-scoped caller is not told which profile holds one)."""
    p = await _parse(request)
    warnings = await asyncio.to_thread(ProfileService(request.app[STORE]).check, p, source="body",
                                       show_holders=caller(request).tenant is None)
    return web.json_response({"valid": True, "kind": p.kind, "name": p.metadata.name, "tenant": p.metadata.tenant,
                              "checked": ["document", "store"], "warnings": warnings})


async def dry_run(request: web.Request) -> web.Response:
    b = body(request) or {}
    scope = scope_of(request)
    if b.get("blade") and not scope.unscoped:
        # As for assign: a tenant names no blade, so whether one exists is not its to learn.
        raise Forbidden("a tenant-scoped caller chooses a blade pool, not a blade")
    pl = await asyncio.to_thread(JobService(request.app[STORE]).dry_run, request.match_info["name"],
                                 tenant=b.get("tenant"), blade=b.get("blade"), pool=b.get("pool"), scope=scope)
    rejected = [{"blade": r.blade, "reason": r.reason} for r in pl.rejected]
    if scope.tenant is not None:   # a tenant sees its own blades only, never the appliance's spares by name
        visible = {b["name"] for b in (await asyncio.to_thread(Inventory(request.app[STORE]).page,
                                                               _tenant_filter(scope.tenant), limit=100000))[0]}
        rejected = [r for r in rejected if r["blade"] in visible]
        return web.json_response({"best": pl.best, "chosen": [pl.best] if pl.best else [], "rejected": rejected})
    return web.json_response({"best": pl.best, "chosen": list(pl.chosen), "rejected": rejected})


def _tenant_filter(tenant: str) -> Any:
    from appliance.services.inventory import BladeFilter

    return BladeFilter(tenant=tenant)


async def instantiate(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(ProfileService(request.app[STORE]).instantiate, request.match_info["name"],
                                   body(request)["name"], tenant=query(request, "tenant"), scope=scope_of(request))
    resp = web.json_response(detail(info), status=201)
    resp.headers["Location"] = f"/api/v1/profiles/{info.name}"
    return resp


OK = "OK"
NAMEP = Param("name", {"type": "string", "minLength": 1, "maxLength": 63}, "path", True)
TENANTQ = Param("tenant", {"type": "string", "maxLength": 63},
                description="the tenant the name resolves in (unscoped callers; default 'default')")
PAGE = (Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        Param("offset", {"type": "integer", "minimum": 0, "maximum": 1000000}),
        Param("search", {"type": "string", "maxLength": 127}, description="text in the name, tenant, state or "
              "blade"),
        Param("sort", {"enum": list(PROFILE_SORTS)}, description="tenant (default: tenant, then name), name, "
              "state or blade"))
DOC_RESPONSES: dict[int, tuple[str, ...]] = {200: DOC_TYPES}
OPS = [
    Op("GET", "/profiles", _lister(PROFILE), "List profiles", "profiles",
       params=(TENANTQ, Param("state", {"type": "string", "maxLength": 32}),
               Param("blade", {"type": "string", "maxLength": 63}, description="live on this blade"), *PAGE),
       responses={200: (OK, sc.page_of(sc.PROFILE))}),
    Op("POST", "/profiles", create, "Import a profile or template (JSON, YAML or XML)", "profiles",
       role="operator", params=(Param("replace", {"type": "boolean"}),), body={"type": "object"},
       body_types=DOC_TYPES, responses={201: ("Imported", sc.PROFILE_DETAIL)}, response_types={201: DOC_TYPES}),
    Op("POST", "/profile-validation", validate, "Check a document as an import would (the document, the identity "
       "pools it names, identities other profiles hold) without importing it", "profiles",
       body={"type": "object"}, body_types=DOC_TYPES, responses={200: ("Valid", sc.VALID)}),
    Op("GET", "/profiles/{name}", _getter(PROFILE), "Show a profile (JSON, or the document as YAML or XML by Accept)",
       "profiles", params=(NAMEP, TENANTQ), responses={200: (OK, sc.PROFILE_DETAIL)}, response_types=DOC_RESPONSES),
    Op("PUT", "/profiles/{name}", replace, "Replace a profile", "profiles", role="operator", params=(NAMEP,),
       body={"type": "object"}, body_types=DOC_TYPES, responses={200: ("Replaced", sc.PROFILE_DETAIL)},
       response_types=DOC_RESPONSES),
    Op("DELETE", "/profiles/{name}", _deleter(PROFILE), "Delete an unassigned profile", "profiles", role="operator",
       params=(NAMEP, TENANTQ), responses={204: ("Deleted", {})}),
    Op("POST", "/profiles/{name}/dry-run", dry_run, "Which blade an assign would choose, and why others are "
       "rejected", "profiles", params=(NAMEP,), body=sc.ASSIGN, body_required=False,
       responses={200: (OK, sc.PLACEMENT)}),
    Op("GET", "/templates", _lister(TEMPLATE), "List templates", "templates", params=(TENANTQ, *PAGE),
       responses={200: (OK, sc.page_of(sc.PROFILE))}),
    Op("GET", "/templates/{name}", _getter(TEMPLATE), "Show a template", "templates", params=(NAMEP, TENANTQ),
       responses={200: (OK, sc.PROFILE_DETAIL)}, response_types=DOC_RESPONSES),
    Op("DELETE", "/templates/{name}", _deleter(TEMPLATE), "Delete a template", "templates", role="operator",
       params=(NAMEP, TENANTQ), responses={204: ("Deleted", {})}),
    Op("POST", "/templates/{name}/instantiate", instantiate, "Create a profile from a template", "templates",
       role="operator", params=(NAMEP, TENANTQ), body=sc.INSTANTIATE,
       responses={201: ("Created", sc.PROFILE_DETAIL)}),
]
