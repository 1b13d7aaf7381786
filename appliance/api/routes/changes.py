"""Change records (appliance.services.changes): by resource and time range, as JSON or as JSON
lines for a CMDB. A tenant-scoped caller sees only its tenant's records."""

from __future__ import annotations

import asyncio
from datetime import datetime

from aiohttp import web

from appliance.api.keys import STORE
from appliance.api.schemas import INT, NSTR, obj, page_of
from appliance.api.spec import STR, Op, Param, query, tenant_filter
from appliance.errors import Issue, ValidationError
from appliance.services.changes import ChangeFilter, ChangeService, parse_resource, parse_time

CHANGE = obj(["id", "at", "who", "resource", "name", "action"], id=INT, at=STR, who=STR, resource=STR, name=STR,
             tenant=NSTR, action=STR, before={"type": ["object", "null"]}, after={"type": ["object", "null"]},
             job=NSTR, step=NSTR)
JSONL = "application/jsonl"


def _when(request: web.Request, name: str) -> datetime | None:
    raw = query(request, name)
    return parse_time(raw, f"query.{name}") if raw is not None else None


def change_filter(request: web.Request) -> ChangeFilter:
    kind, name = None, None
    raw = query(request, "resource")
    if raw is not None:
        kind, name = parse_resource(raw, "query.resource")
    f = ChangeFilter(tenant=tenant_filter(request), resource=kind, name=name, since=_when(request, "since"),
                     until=_when(request, "until"))
    if f.since is not None and f.until is not None and f.until <= f.since:
        raise ValidationError([Issue("query.until", "must be later than since")])
    return f


async def list_changes(request: web.Request) -> web.StreamResponse:
    f = change_filter(request)
    svc = ChangeService(request.app[STORE])
    if query(request, "format") == "jsonl" or JSONL in request.headers.get("Accept", ""):
        lines = await asyncio.to_thread(lambda: list(svc.export(f)))
        return web.Response(text="".join(line + "\n" for line in lines), content_type=JSONL)
    items, total = await asyncio.to_thread(svc.list, f, limit=query(request, "limit") or 100,
                                           offset=query(request, "offset") or 0)
    return web.json_response({"items": items, "total": total})


OPS = [
    Op("GET", "/changes", list_changes, "Change records, oldest first (JSON lines with format=jsonl)", "changes",
       params=(Param("resource", {"type": "string", "maxLength": 300},
                     description="KIND or KIND/NAME: blade, profile, binding, vlan, lun, firmware, bios"),
               Param("since", {"type": "string", "maxLength": 64}, description="RFC 3339 date-time, inclusive"),
               Param("until", {"type": "string", "maxLength": 64}, description="RFC 3339 date-time, exclusive"),
               Param("tenant", {"type": "string", "maxLength": 63}),
               Param("format", {"enum": ["json", "jsonl"]}),
               Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
               Param("offset", {"type": "integer", "minimum": 0, "maximum": 10**9})),
       responses={200: ("OK", page_of(CHANGE))}, response_types={200: (JSONL,)}),
]
