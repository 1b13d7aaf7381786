"""The console's discovered-machines page: enrol (it becomes a blade) or dismiss. Admins of the
whole appliance only, like the API routes (appliance.api.routes.discovered)."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from aiohttp import web

from appliance.api.keys import SETTINGS, STORE
from appliance.console.views import USER, page, render
from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox
from appliance.services.blades import BladeService, Enrollment
from appliance.services.discovered import DiscoveredService


def _refused(request: web.Request) -> web.Response | None:
    # page("admin") checks the role only; discovered machines are the appliance's.
    if request[USER].tenant is not None:
        return render(request, "error.html", status=403, title="Forbidden",
                      message="Discovered machines belong to the appliance; a tenant-scoped admin cannot see them.")
    return None


@page("admin")
async def discovered_page(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    items = [d.public() for d in await asyncio.to_thread(DiscoveredService(request.app[STORE]).list)]
    return render(request, "discovered.html", items=items, message=request.query.get("msg"))


@page("admin", form=True)
async def dismiss(request: web.Request) -> web.StreamResponse:
    refused = _refused(request)
    if refused is not None:
        return refused
    mac = request.match_info["mac"]
    await asyncio.to_thread(DiscoveredService(request.app[STORE]).dismiss, mac)
    raise web.HTTPSeeOther("/discovered?msg=" + quote(f"Dismissed {mac}."))


@page("admin", form=True)
async def enroll(request: web.Request) -> web.StreamResponse:
    refused = _refused(request)
    if refused is not None:
        return refused
    mac = request.match_info["mac"]
    data = await request.post()
    req = Enrollment(name=str(data.get("name", "")), bmc=str(data.get("bmc", "")),
                     username=str(data.get("username", "")), password=Secret(str(data.get("password", ""))),
                     verify_tls=data.get("no_verify_tls") != "on")
    store = request.app[STORE]
    blades = BladeService(store, SecretBox(request.app[SETTINGS].secrets_key_path))
    info = await asyncio.to_thread(DiscoveredService(store).enroll, mac, blades, req)
    raise web.HTTPSeeOther(f"/blades/{quote(info.name)}")


def setup_discovered_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/discovered", discovered_page)
    r.add_post("/discovered/{mac}/dismiss", dismiss)
    r.add_post("/discovered/{mac}/enroll", enroll)
