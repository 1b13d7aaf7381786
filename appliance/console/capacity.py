"""The console's capacity page: blades, CPUs and memory per blade pool, chassis and tenant, and
the rack view (each blade's state, profile, power and health), as a tenant may see them."""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.api.keys import STORE
from appliance.console.views import USER, page, render, scope
from appliance.domain.capacity import COUNTERS
from appliance.services.capacity import CapacityService
from appliance.services.inventory import Inventory, age_text

LABELS = {"total": "Total", "spare": "Spare", "committed": "Committed", "inUse": "In use", "failed": "Failed",
          "maintenance": "Maintenance"}


@page()
async def capacity(request: web.Request) -> web.Response:
    cap = (await asyncio.to_thread(CapacityService(request.app[STORE]).capacity, scope(request))).public()
    rack = await asyncio.to_thread(Inventory(request.app[STORE]).rack, request[USER].tenant)
    sections = [("Pools", cap["pools"]), ("Chassis", cap["chassis"]), ("Tenants", cap["tenants"])]
    return render(request, "capacity.html", sections=sections, counters=COUNTERS, labels=LABELS, rack=rack,
                  tenant=request[USER].tenant, age=age_text)


def setup_capacity_pages(app: web.Application) -> None:
    app.router.add_get("/capacity", capacity)
