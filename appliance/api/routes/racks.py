"""Rack controllers, read-only: each one's networks, health (last heartbeat), version and blades.

Adding a rack creates its token, an administrator's act done with ``anvil rack add`` on the
appliance. The appliance's own resource: no tenant-scoped caller (their networks and boot URLs
are the appliance's wiring).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.api.keys import STORE
from appliance.api.schemas import NSTR, obj, page_of
from appliance.api.spec import NAME, STR, Op, Param
from appliance.services.racks import RackService

_STRS = {"type": "array", "items": STR}
RACK = obj(["name", "health", "networks", "blades"], name=STR, health=STR, networks=_STRS, reportedNetworks=_STRS,
           version=NSTR, bootUrl=NSTR, lastSeenAt=NSTR, blades=_STRS)


async def list_racks(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(RackService(request.app[STORE]).list)
    items = [i.public() for i in infos]
    return web.json_response({"items": items, "total": len(items)})


async def get_rack(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(RackService(request.app[STORE]).get, request.match_info["name"])
    return web.json_response(info.public())


OPS = [
    Op("GET", "/racks", list_racks, "List rack controllers: networks, health, version, blades", "racks",
       appliance_wide=True, responses={200: ("OK", page_of(RACK))}),
    Op("GET", "/racks/{name}", get_rack, "Show a rack controller", "racks", appliance_wide=True,
       params=(Param("name", NAME, "path", True),), responses={200: ("OK", RACK)}),
]
