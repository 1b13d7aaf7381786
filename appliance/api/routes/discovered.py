"""Machines that booted unknown and posted their facts (appliance.services.discovered): the
appliance's, so admins only; a tenant-scoped caller gets 403 before any look-up."""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.api import schemas as sc
from appliance.api.keys import STORE
from appliance.api.spec import STR, Op, Param
from appliance.services.discovered import DiscoveredService

DISCOVERED = sc.obj(["mac", "facts", "firstSeen", "lastSeen"], mac=STR, uuid=sc.NSTR, peer=sc.NSTR,
                    facts={"type": "object", "additionalProperties": {"type": "string"}}, firstSeen=STR,
                    lastSeen=STR)


async def list_discovered(request: web.Request) -> web.Response:
    items = [d.public() for d in await asyncio.to_thread(DiscoveredService(request.app[STORE]).list)]
    return web.json_response({"items": items, "total": len(items)})


async def dismiss(request: web.Request) -> web.Response:
    await asyncio.to_thread(DiscoveredService(request.app[STORE]).dismiss, request.match_info["mac"])
    return web.Response(status=204)


MACP = Param("mac", {"type": "string", "minLength": 1, "maxLength": 17}, "path", True)
OPS = [
    Op("GET", "/discovered", list_discovered, "Machines that network-booted unknown, with the facts they posted",
       "discovered", role="admin", appliance_wide=True, responses={200: ("OK", sc.page_of(DISCOVERED))}),
    Op("DELETE", "/discovered/{mac}", dismiss, "Dismiss a discovered machine", "discovered", role="admin",
       appliance_wide=True, params=(MACP,), responses={204: ("Dismissed", {})}),
]
