"""Usage: blade-hours per profile, tenant and host pool over a time range, from the binding change records
(appliance.services.changes), as JSON or CSV. A tenant-scoped caller gets its own only."""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.api.keys import STORE
from appliance.api.schemas import OBJ
from appliance.api.spec import Op, Param, query, tenant_filter
from appliance.services.changes import ChangeService, parse_time

CSV = "text/csv"


async def get_usage(request: web.Request) -> web.Response:
    start = parse_time(query(request, "from"), "query.from")
    end = parse_time(query(request, "to"), "query.to")
    report = await asyncio.to_thread(ChangeService(request.app[STORE]).usage, start, end,
                                     tenant=tenant_filter(request))
    if query(request, "format") == "csv" or (query(request, "format") is None
                                             and CSV in request.headers.get("Accept", "")):
        return web.Response(text=report.csv(), content_type=CSV)
    return web.json_response(report.public())


WHEN = {"type": "string", "minLength": 1, "maxLength": 64}
OPS = [
    Op("GET", "/usage", get_usage, "Blade-hours per profile, tenant and host pool in [from, to) (CSV with "
       "format=csv)", "usage",
       params=(Param("from", WHEN, required=True, description="RFC 3339 date-time (or a date), inclusive"),
               Param("to", WHEN, required=True, description="RFC 3339 date-time (or a date), exclusive"),
               Param("tenant", {"type": "string", "maxLength": 63}),
               Param("format", {"enum": ["json", "csv"]})),
       responses={200: ("OK", OBJ)}, response_types={200: (CSV,)}),
]
