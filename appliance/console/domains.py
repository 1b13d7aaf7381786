"""The console's failover-domain actions: create, change (spare pool, restart attempts,
webhook and its secret) and delete a domain, and run a drill: move a protected profile to a
spare, then, from the failover page, back to the blade it came from. Each move is a real
failover job (fence, spare, stamp), as ``anvil failover test`` runs them.

Domains are the appliance's: every change is an appliance admin's, as in the API. The
webhook secret is write-only here too: it goes into the store encrypted and the page shows
only whether one is set.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from appliance.api.keys import SETTINGS, STORE
from appliance.console.views import USER, _wake, page, render
from appliance.drivers.protocols import Secret
from appliance.errors import Conflict, Issue, ValidationError
from appliance.secrets import SecretBox
from appliance.services.blade_pools import DEFAULT_POOL, BladePoolService
from appliance.services.failover import FailoverService
from appliance.services.jobs import JobService


def _service(request: web.Request) -> FailoverService:
    return FailoverService(request.app[STORE], SecretBox(request.app[SETTINGS].secrets_key_path))


def _field(data: Any, name: str) -> str:
    return str(data.get(name, "") or "").strip()


def _attempts(data: Any) -> int | None:
    raw = _field(data, "restart_attempts")
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > 10:
        raise ValidationError([Issue("restartAttempts", f"{raw[:20]!r} is not a number from 0 to 10")])
    return int(raw)


def _secret(data: Any) -> Secret | None:
    raw = str(data.get("webhook_secret", "") or "")
    return Secret(raw) if raw else None


@page("admin", form=True, appliance=True)
async def domain_create(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    name = _field(data, "name")
    info = await asyncio.to_thread(
        _service(request).create_domain, name, spare_pool=_field(data, "spare_pool") or DEFAULT_POOL,
        description=_field(data, "description"), restart_attempts=_attempts(data) or 1,
        webhook_url=_field(data, "webhook_url") or None, webhook_secret=_secret(data))
    protected = ", ".join(f"{p.tenant}/{p.name}" for p in info.profiles) or "no profile names it yet"
    raise web.HTTPSeeOther("/failover?msg=" + quote(f"Created failover domain {info.name} (spares from "
                                                    f"{info.spare_pool}); protects {protected}."))


@page(appliance=True)
async def domain(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    info = await asyncio.to_thread(_service(request).get_domain, name)
    pools = [p.name for p in await asyncio.to_thread(BladePoolService(request.app[STORE]).list)]
    return render(request, "domain.html", domain=info.public(), pools=pools, message=request.query.get("msg"))


@page("admin", form=True, appliance=True)
async def domain_update(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    data = await request.post()
    await asyncio.to_thread(
        _service(request).update_domain, name, spare_pool=_field(data, "spare_pool") or None,
        description=_field(data, "description") if "description" in data else None,
        restart_attempts=_attempts(data), webhook_url=_field(data, "webhook_url") or None,
        webhook_secret=_secret(data), remove_webhook=data.get("remove_webhook") == "on")
    raise web.HTTPSeeOther(f"/failover-domains/{quote(name)}?msg=" + quote(f"Saved failover domain {name}."))


@page("admin", form=True, appliance=True)
async def domain_delete(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    await asyncio.to_thread(_service(request).delete_domain, name)
    raise web.HTTPSeeOther("/failover?msg=" + quote(f"Deleted failover domain {name}."))


@page("admin", form=True, appliance=True)
async def drill(request: web.Request) -> web.StreamResponse:
    """Move the domain's least important active profile (or the one chosen) to a spare."""
    name = request.match_info["name"]
    chosen = _field(await request.post(), "profile") or None
    target = await asyncio.to_thread(_service(request).drill_target, name, chosen)
    who = request[USER].who
    _id, job = await asyncio.to_thread(
        JobService(request.app[STORE]).submit_failover, target.name, tenant=target.tenant, drill=True,
        reason=f"drill out, from the console ({who})", created_by=who)
    _wake(request)
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


@page("admin", form=True, appliance=True)
async def drill_back(request: web.Request) -> web.StreamResponse:
    """Move a drilled profile back to the blade its drill took it from."""
    name = request.match_info["name"]
    raw = _field(await request.post(), "failover")
    if not raw.isdigit() or len(raw) > 16:
        raise ValidationError([Issue("failover", f"{raw[:20]!r} is not a failover number")])
    svc = _service(request)
    out = await asyncio.to_thread(svc.get_failover, int(raw))
    if out.domain != name or not out.drill or out.state != "succeeded" or not out.from_blade:
        raise Conflict(f"failover #{out.id} is not a finished drill of domain {name}")
    who = request[USER].who
    _id, job = await asyncio.to_thread(
        JobService(request.app[STORE]).submit_failover, out.profile, tenant=out.tenant, drill=True,
        to_blade=out.from_blade, reason=f"drill back to {out.from_blade}, from the console ({who})",
        created_by=who)
    _wake(request)
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


def setup_domain_pages(app: web.Application) -> None:
    r = app.router
    r.add_post("/failover-domains", domain_create)
    r.add_get("/failover-domains/{name}", domain)
    r.add_post("/failover-domains/{name}/update", domain_update)
    r.add_post("/failover-domains/{name}/delete", domain_delete)
    r.add_post("/failover-domains/{name}/drill", drill)
    r.add_post("/failover-domains/{name}/drill-back", drill_back)
