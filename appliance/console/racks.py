"""The console's rack controllers page: each rack, its health (last heartbeat), version, networks
and blades. Read-only (``anvil rack add`` creates a rack and its token); the appliance's own:
a tenant-scoped user is refused it, as the API refuses it ``/racks``."""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.api.keys import STORE
from appliance.console.views import page, render
from appliance.services.racks import RackService


@page(appliance=True)
async def racks(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(RackService(request.app[STORE]).list)
    return render(request, "racks.html", racks=infos)


def setup_rack_pages(app: web.Application) -> None:
    app.router.add_get("/racks", racks)
