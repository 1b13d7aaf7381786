"""The console's pool pages: identity pools (create, usage, who holds what) and blade pools
(members, tenant grants).

Same rules as the API: every role reads identity pools (they are the appliance's, shared by
every tenant's templates), but only an appliance-wide user sees which profile holds each
identity; a tenant sees ``spares`` and the blade pools granted to it. Every change is an
appliance admin's, as in the API (appliance-wide operations).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from appliance.api.keys import STORE
from appliance.console.views import USER, page, render, scope
from appliance.domain.pools import RANGE_FORMATS
from appliance.errors import Issue, ValidationError
from appliance.services.blade_pools import DEFAULT_POOL, BladePoolService
from appliance.services.inventory import BladeFilter, Inventory
from appliance.services.pools import PoolService

KINDS = tuple(RANGE_FORMATS)
MEMBERS_SHOWN = 1000


def _field(data: Any, name: str) -> str:
    return str(data.get(name, "") or "").strip()


# -- identity pools ---------------------------------------------------------------------

@page()
async def identity_pools(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(PoolService(request.app[STORE]).list)
    return render(request, "identity_pools.html", pools=infos, kinds=KINDS, formats=RANGE_FORMATS,
                  message=request.query.get("msg"), form={})


@page()
async def identity_pool(request: web.Request) -> web.Response:
    svc = PoolService(request.app[STORE])
    name = request.match_info["name"]
    info = await asyncio.to_thread(svc.get, name)
    holders = await asyncio.to_thread(svc.holders, name) if request[USER].tenant is None else None
    return render(request, "identity_pool.html", pool=info, holders=holders, formats=RANGE_FORMATS)


@page("admin", form=True, appliance=True)
async def identity_pool_create(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    form = {k: _field(data, k) for k in ("name", "kind", "start", "end", "prefix")}
    svc = PoolService(request.app[STORE])
    try:
        info = await asyncio.to_thread(svc.create, form["name"], form["kind"], form["start"], form["end"],
                                       form["prefix"] or None)
    except ValidationError as exc:
        infos = await asyncio.to_thread(svc.list)
        return render(request, "identity_pools.html", status=400, pools=infos, kinds=KINDS, formats=RANGE_FORMATS,
                      message=None, form=form, errors=exc.issues)
    raise web.HTTPSeeOther("/identity-pools?msg=" + quote(f"Created {info.kind} pool {info.name}: "
                                                          f"{info.size:,} identities."))


@page("admin", form=True, appliance=True)
async def identity_pool_delete(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    await asyncio.to_thread(PoolService(request.app[STORE]).delete, name)
    raise web.HTTPSeeOther("/identity-pools?msg=" + quote(f"Deleted identity pool {name}."))


# -- blade pools -----------------------------------------------------------------------------

@page()
async def blade_pools(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(BladePoolService(request.app[STORE]).list, scope=scope(request))
    blades: list[dict[str, Any]] = []
    if request[USER].tenant is None:
        blades = (await asyncio.to_thread(Inventory(request.app[STORE]).page, BladeFilter(), limit=MEMBERS_SHOWN))[0]
    return render(request, "blade_pools.html", pools=infos, blades=blades, message=request.query.get("msg"))


def _members(request: web.Request, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The pool's blades as the caller may see them: a tenant sees its pool's member names
    (as the API shows them) but state and profile only of blades bound to its own profiles."""
    inv = Inventory(request.app[STORE])
    visible = {b["name"]: b for b in inv.page(BladeFilter(tenant=request[USER].tenant), limit=100_000)[0]}
    return [visible.get(n) or {"name": n, "state": None, "profile": None, "power": None, "health": None}
            for n in names[:MEMBERS_SHOWN]]


@page()
async def blade_pool(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    info = await asyncio.to_thread(BladePoolService(request.app[STORE]).get, name, scope=scope(request))
    members = await asyncio.to_thread(_members, request, info.blades)
    others: list[str] = []
    if request[USER].tenant is None and name != DEFAULT_POOL:
        every = (await asyncio.to_thread(Inventory(request.app[STORE]).page, BladeFilter(), limit=100_000))[0]
        others = [b["name"] for b in every if b["name"] not in set(info.blades)]
    return render(request, "blade_pool.html", pool=info, members=members, others=others, builtin=name == DEFAULT_POOL,
                  message=request.query.get("msg"))


def _blade_names(data: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in data.getall("blades", []) if str(v))


@page("admin", form=True, appliance=True)
async def blade_pool_create(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    name, tenant = _field(data, "name"), _field(data, "tenant") or None
    svc = BladePoolService(request.app[STORE])

    def run() -> None:
        svc.create(name, tenant=tenant, description=_field(data, "description"))
        if _blade_names(data):
            svc.add(name, _blade_names(data))

    await asyncio.to_thread(run)
    raise web.HTTPSeeOther(f"/pools/{quote(name)}?msg=" + quote(f"Created blade pool {name}"
                                                                 + (f", granted to {tenant}." if tenant else ".")))


@page("admin", form=True, appliance=True)
async def blade_pool_add(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    blades = _blade_names(await request.post())
    if not blades:
        raise ValidationError([Issue("blades", "choose at least one blade")])
    info = await asyncio.to_thread(BladePoolService(request.app[STORE]).add, name, blades)
    raise web.HTTPSeeOther(f"/pools/{quote(name)}?msg=" + quote(f"Added {', '.join(blades)}; "
                                                                 f"{len(info.blades)} blades in {name}."))


@page("admin", form=True, appliance=True)
async def blade_pool_remove(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    blade = _field(await request.post(), "blade")
    await asyncio.to_thread(BladePoolService(request.app[STORE]).remove, name, (blade,))
    raise web.HTTPSeeOther(f"/pools/{quote(name)}?msg=" + quote(f"Took {blade} out of {name}."))


@page("admin", form=True, appliance=True)
async def blade_pool_grant(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    tenant = _field(await request.post(), "tenant")
    await asyncio.to_thread(BladePoolService(request.app[STORE]).update, name, tenant=tenant or None,
                            ungrant=not tenant)
    said = f"Granted {name} to tenant {tenant}: its blades are kept for {tenant}." if tenant else \
        f"{name} is granted to no tenant."
    raise web.HTTPSeeOther(f"/pools/{quote(name)}?msg=" + quote(said))


@page("admin", form=True, appliance=True)
async def blade_pool_delete(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    await asyncio.to_thread(BladePoolService(request.app[STORE]).delete, name)
    raise web.HTTPSeeOther("/pools?msg=" + quote(f"Deleted blade pool {name}; its blades stay enrolled."))


def setup_pool_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity-pools", identity_pools)
    r.add_post("/identity-pools", identity_pool_create)
    r.add_get("/identity-pools/{name}", identity_pool)
    r.add_post("/identity-pools/{name}/delete", identity_pool_delete)
    r.add_get("/pools", blade_pools)
    r.add_post("/pools", blade_pool_create)
    r.add_get("/pools/{name}", blade_pool)
    r.add_post("/pools/{name}/blades", blade_pool_add)
    r.add_post("/pools/{name}/remove", blade_pool_remove)
    r.add_post("/pools/{name}/grant", blade_pool_grant)
    r.add_post("/pools/{name}/delete", blade_pool_delete)
