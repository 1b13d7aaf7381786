"""The console's host pools: the pools of the user's tenant (every pool for an appliance-wide
user), one pool's hosts, events, webhooks and SLA decisions, and what an operator does with
them: create a pool, set its size, release (or replace) a host, delete an empty pool.

Same service and the same tenant rules as the API: the tenant in a page's path is only a
request; a tenant-scoped user always acts in its own tenant.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from appliance.api.keys import ENGINE, STORE
from appliance.console.views import page, render, scope
from appliance.domain.hostpool import Spread
from appliance.errors import Issue, ValidationError
from appliance.services.host_webhooks import HostWebhookService
from appliance.services.hostpools import HostPoolService
from appliance.services.profiles import TEMPLATE, ProfileService

EVENTS_SHOWN = 20


def _svc(request: web.Request) -> HostPoolService:
    return HostPoolService(request.app[STORE])


def _field(data: Any, name: str) -> str:
    return str(data.get(name, "") or "").strip()


def _number(data: Any, name: str, default: int | None = None) -> int:
    raw = _field(data, name)
    if not raw and default is not None:
        return default
    if not raw.isdigit() or len(raw) > 5:
        raise ValidationError([Issue(name, f"{raw[:20]!r} is not a whole number from 0 to 10000")])
    return int(raw)


def _wake(request: web.Request) -> None:
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()


def _where(tenant: str, name: str, msg: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/host-pools/{quote(tenant)}/{quote(name)}?msg={quote(msg)}")


@page()
async def host_pools(request: web.Request) -> web.Response:
    pools = await asyncio.to_thread(_svc(request).list, scope=scope(request))
    templates = await asyncio.to_thread(ProfileService(request.app[STORE]).list, kind=TEMPLATE, scope=scope(request))
    return render(request, "host_pools.html", pools=[p.public() for p in pools], templates=templates,
                  spreads=[s.value for s in Spread], message=request.query.get("msg"))


@page("operator", form=True)
async def host_pool_create(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    template = _field(data, "template")
    tenant, _, tpl = template.rpartition("/")
    info = await asyncio.to_thread(
        _svc(request).create, _field(data, "name"), template=tpl, tenant=tenant or None,
        blade_pool=_field(data, "blade_pool") or "spares", min_size=_number(data, "min", 0),
        max_size=_number(data, "max", 100), size=_number(data, "size", 0),
        spread=_field(data, "spread") or Spread.CHASSIS.value, keep_profiles=data.get("keep_profiles") == "on",
        scope=scope(request))
    _wake(request)
    raise _where(info.tenant, info.name, f"Created host pool {info.name} of size {info.size}.")


@page()
async def host_pool(request: web.Request) -> web.Response:
    tenant, name = request.match_info["tenant"], request.match_info["name"]
    svc = _svc(request)
    info = await asyncio.to_thread(svc.get, name, tenant=tenant, scope=scope(request))
    hosts = await asyncio.to_thread(svc.hosts, name, tenant=tenant, scope=scope(request))
    recent = await asyncio.to_thread(svc.recent, name, limit=EVENTS_SHOWN, tenant=tenant, scope=scope(request))
    hooks = await asyncio.to_thread(HostWebhookService(request.app[STORE]).list, name, tenant=tenant,
                                    scope=scope(request))
    return render(request, "host_pool.html", pool=info.public(), hosts=[h.public() for h in hosts],
                  events=recent, webhooks=[w.public() for w in hooks], message=request.query.get("msg"))


@page("operator", form=True)
async def host_pool_size(request: web.Request) -> web.StreamResponse:
    tenant, name = request.match_info["tenant"], request.match_info["name"]
    data = await request.post()
    info = await asyncio.to_thread(_svc(request).resize, name, size=_number(data, "size"), tenant=tenant,
                                   scope=scope(request))
    _wake(request)
    raise _where(info.tenant, info.name, f"Host pool {info.name} now converges to {info.size} hosts.")


@page("operator", form=True)
async def host_release(request: web.Request) -> web.StreamResponse:
    tenant, name, host = request.match_info["tenant"], request.match_info["name"], request.match_info["host"]
    data = await request.post()
    out = await asyncio.to_thread(_svc(request).release, name, host, keep_profile=data.get("keep_profile") == "on",
                                  replace=data.get("replace") == "on", tenant=tenant, scope=scope(request))
    _wake(request)
    what = "replaced" if data.get("replace") == "on" else "released"
    raise _where(out.tenant, name, f"Host {out.name} ({out.id}) will be {what}.")


@page("operator", form=True)
async def host_pool_delete(request: web.Request) -> web.StreamResponse:
    tenant, name = request.match_info["tenant"], request.match_info["name"]
    await asyncio.to_thread(_svc(request).delete, name, tenant=tenant, scope=scope(request))
    raise web.HTTPSeeOther("/host-pools?msg=" + quote(f"Deleted host pool {name}."))


def setup_host_pool_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/host-pools", host_pools)
    r.add_post("/host-pools", host_pool_create)
    r.add_get("/host-pools/{tenant}/{name}", host_pool)
    r.add_post("/host-pools/{tenant}/{name}/size", host_pool_size)
    r.add_post("/host-pools/{tenant}/{name}/hosts/{host}/release", host_release)
    r.add_post("/host-pools/{tenant}/{name}/delete", host_pool_delete)
