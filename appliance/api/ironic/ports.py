"""Ports: a blade's NICs (list, show, create, delete), by the UUIDs of
appliance.services.baremetal_ports. ``local_link_connection`` is the NIC's cabling:
``switch_info`` names the enrolled switch, ``port_id`` its port (Ironic's ``switch_id``, a
chassis MAC, has no meaning to Anvil and is not kept)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from appliance.api.ironic import edge
from appliance.api.ironic.errors import IronicError, NotImplementedHere
from appliance.api.ironic.versions import links
from appliance.api.keys import STORE, WRITES
from appliance.api.spec import scope_of
from appliance.services.baremetal_ports import PortRecord, PortService

SINCE = {"internal_info": 18, "local_link_connection": 19, "pxe_enabled": 19, "portgroup_uuid": 24,
         "physical_network": 34, "is_smartnic": 53}
LIST_FIELDS = ("uuid", "address")
MAX_LIMIT = 1000


def render(request: web.Request, p: PortRecord, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    llc = {"switch_info": p.switch, "port_id": p.port} if p.switch else {}
    full = {"uuid": p.uuid, "address": p.mac, "node_uuid": p.node_uuid, "extra": {}, "internal_info": {},
            "local_link_connection": llc, "pxe_enabled": True, "portgroup_uuid": None, "physical_network": None,
            "is_smartnic": False, "created_at": p.created_at.isoformat(), "updated_at": None,
            "links": links(request, f"ports/{p.uuid}")}
    minor = edge.version_of(request)[1]
    keys = fields if fields is not None else tuple(full)
    out = {k: full[k] for k in keys if k in full and SINCE.get(k, 1) <= minor}
    out["links"] = full["links"]
    return out


async def list_ports(request: web.Request, *, detail: bool = False, node: str | None = None) -> web.Response:
    q = request.query
    unknown = sorted(set(q) - {"node", "node_uuid", "address", "limit", "marker", "fields", "detail", "sort_key",
                               "sort_dir"})
    if unknown:
        raise IronicError(400, f"unsupported parameter(s) {', '.join(unknown)} (filters: node, node_uuid, address)")
    if q.get("sort_key", "id") != "id" or q.get("sort_dir", "asc") != "asc":
        raise IronicError(400, "ports are listed by node, then NIC position (sort_key id, sort_dir asc)")
    try:
        limit = min(int(q.get("limit", MAX_LIMIT)), MAX_LIMIT)
    except ValueError:
        raise IronicError(400, f"limit={q.get('limit')!r} is not a number") from None
    if limit <= 0:
        raise IronicError(400, "Limit must be positive")
    if q.get("detail", "").lower() in ("true", "1"):
        detail = True
    fields = tuple(f for f in q["fields"].split(",") if f) if "fields" in q else None
    node = node or q.get("node") or q.get("node_uuid")
    page, more = await asyncio.to_thread(PortService(request.app[STORE]).list, scope_of(request), node=node,
                                         address=q.get("address"), limit=limit, marker=q.get("marker"))
    chosen = fields if fields is not None else (None if detail else LIST_FIELDS)
    body: dict[str, Any] = {"ports": [render(request, p, chosen) for p in page]}
    if more and page:
        nxt = {**{k: v for k, v in q.items() if k != "marker"}, "limit": str(limit), "marker": page[-1].uuid}
        body["next"] = f"{request.scheme}://{request.host}{request.path}?{urlencode(nxt)}"
    return web.json_response(body)


async def list_detail(request: web.Request) -> web.Response:
    return await list_ports(request, detail=True)


async def node_ports(request: web.Request) -> web.Response:
    return await list_ports(request, node=request.match_info["node"])


async def node_ports_detail(request: web.Request) -> web.Response:
    return await list_ports(request, detail=True, node=request.match_info["node"])


async def get_port(request: web.Request) -> web.Response:
    p = await asyncio.to_thread(PortService(request.app[STORE]).get, scope_of(request), request.match_info["port"])
    fields = tuple(f for f in request.query["fields"].split(",") if f) if "fields" in request.query else None
    return web.json_response(render(request, p, fields))


NOT_KEPT = {"extra": "a NIC keeps no free-form fields", "portgroup_uuid": "Anvil has no port groups",
            "physical_network": "a profile's NICs carry their VLANs", "is_smartnic": "not kept",
            "name": "a NIC is named ethN by its position", "description": "not kept"}


async def create_port(request: web.Request) -> web.Response:
    body = await edge.json_body(request)
    if not isinstance(body, dict):
        raise IronicError(400, "the body must be a JSON object (a port)")
    refused = [k for k in body if k in NOT_KEPT and body[k] not in (None, "", {}, False)]
    if refused:
        raise NotImplementedHere("; ".join(f"{k}: {NOT_KEPT[k]}" for k in refused))
    unknown = sorted(set(body) - {"node_uuid", "node", "address", "local_link_connection", "pxe_enabled",
                                  *NOT_KEPT})
    if unknown:
        raise IronicError(400, f"unknown or read-only field(s): {', '.join(unknown)}")
    node, address = body.get("node_uuid") or body.get("node"), body.get("address")
    if not isinstance(node, str) or not isinstance(address, str):
        raise IronicError(400, "node_uuid and address (the NIC's MAC) are required")
    llc = body.get("local_link_connection") or {}
    if not isinstance(llc, dict):
        raise IronicError(400, "local_link_connection must be an object")
    switch, port = llc.get("switch_info"), llc.get("port_id")
    if (switch is None) != (port is None):
        raise IronicError(400, "local_link_connection needs switch_info (an enrolled switch's name) and port_id")
    p = await request.app[WRITES].run(PortService(request.app[STORE]).add, scope_of(request), node, address,
                                      switch=str(switch) if switch is not None else None,
                                      port=str(port) if port is not None else None)
    resp = web.json_response(render(request, p), status=201)
    resp.headers["Location"] = links(request, f"ports/{p.uuid}")[0]["href"]
    return resp


async def delete_port(request: web.Request) -> web.Response:
    await request.app[WRITES].run(PortService(request.app[STORE]).delete, scope_of(request), request.match_info["port"])
    return web.Response(status=204)
