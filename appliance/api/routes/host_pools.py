"""Host pools for VM managers (/host-pools, /host-quotas): pools, their size, their hosts,
utilisation reports. Growing and shrinking move the desired size (202): the engine's
reconcile loop requests and releases the hosts, and the pool's events and webhooks say
when each is ready (appliance.api.routes.host_feed)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from appliance.api.keys import ENGINE, STORE
from appliance.api.schemas import INT, NINT, NSTR, OBJ, obj, page_of
from appliance.api.spec import NAME, STR, Op, Param, body, nullable, query, scope_of
from appliance.domain.hostpool import HostState, Spread
from appliance.domain.hostpool_policy import METRICS
from appliance.domain.names import NAME_RE
from appliance.errors import Issue, ValidationError
from appliance.services.hostpools import HostPoolService


def _svc(request: web.Request) -> HostPoolService:
    return HostPoolService(request.app[STORE])


def _body_paths(exc: ValidationError) -> ValidationError:
    """The service names fields as the API does; say they are in the body, as the schema check does."""
    return ValidationError([Issue(f"body.{i.path}" if i.path else "body", i.reason, i.line) for i in exc.issues])


def _tenant(request: web.Request) -> str | None:
    got = query(request, "tenant")
    return str(got) if got is not None else None


def _accepted(request: web.Request, data: dict[str, Any]) -> web.Response:
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()
    return web.json_response(data, status=202)


# -- pools ------------------------------------------------------------------------------------

async def list_pools(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(_svc(request).list, tenant=_tenant(request), scope=scope_of(request))
    return web.json_response({"items": [i.public() for i in infos], "total": len(infos)})


async def create_pool(request: web.Request) -> web.Response:
    b = body(request)
    try:
        info = await asyncio.to_thread(
            _svc(request).create, b["name"], template=b["template"], tenant=b.get("tenant"),
            blade_pool=b.get("bladePool", "spares"), min_size=b.get("min", 0), max_size=b.get("max", 100),
            size=b.get("size"), spread=b.get("spread", Spread.CHASSIS.value),
            keep_profiles=b.get("keepProfiles", False), policy=b.get("policy"), scope=scope_of(request))
    except ValidationError as exc:
        raise _body_paths(exc) from None
    resp = web.json_response(info.public(), status=201)
    resp.headers["Location"] = f"/api/v1/host-pools/{info.name}"
    return resp


async def get_pool(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_svc(request).get, request.match_info["name"], tenant=_tenant(request),
                                   scope=scope_of(request))
    return web.json_response(info.public())


async def update_pool(request: web.Request) -> web.Response:
    b = body(request)
    try:
        info = await asyncio.to_thread(
            _svc(request).update, request.match_info["name"], tenant=_tenant(request), min_size=b.get("min"),
            max_size=b.get("max"), spread=b.get("spread"), keep_profiles=b.get("keepProfiles"),
            blade_pool=b.get("bladePool"), policy=b.get("policy"),
            remove_policy="policy" in b and b["policy"] is None, scope=scope_of(request))
    except ValidationError as exc:
        raise _body_paths(exc) from None
    return web.json_response(info.public())


async def delete_pool(request: web.Request) -> web.Response:
    await asyncio.to_thread(_svc(request).delete, request.match_info["name"], tenant=_tenant(request),
                            scope=scope_of(request))
    return web.Response(status=204)


async def set_size(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_svc(request).resize, request.match_info["name"], size=body(request)["size"],
                                   tenant=_tenant(request), scope=scope_of(request))
    return _accepted(request, info.public())


# -- hosts ------------------------------------------------------------------------------------

async def list_hosts(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(_svc(request).hosts, request.match_info["name"], tenant=_tenant(request),
                                    state=query(request, "state"), include_released=bool(query(request, "all")),
                                    scope=scope_of(request))
    return web.json_response({"items": [i.public() for i in infos], "total": len(infos)})


async def grow(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_svc(request).resize, request.match_info["name"], grow=body(request)["count"],
                                   tenant=_tenant(request), scope=scope_of(request))
    return _accepted(request, info.public())


async def get_host(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_svc(request).host, request.match_info["name"], request.match_info["host"],
                                   tenant=_tenant(request), scope=scope_of(request))
    return web.json_response(info.public())


async def release_host(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(
        _svc(request).release, request.match_info["name"], request.match_info["host"],
        keep_profile=bool(query(request, "keepProfile")), replace=bool(query(request, "replace")),
        tenant=_tenant(request), scope=scope_of(request))
    return _accepted(request, info.public())


async def report_metrics(request: web.Request) -> web.Response:
    b = body(request)
    try:
        await asyncio.to_thread(_svc(request).report, request.match_info["name"], request.match_info["host"],
                                cpu=b.get("cpu"), memory=b.get("memory"), vms=b.get("vms"), tenant=_tenant(request),
                                scope=scope_of(request))
    except ValidationError as exc:
        raise _body_paths(exc) from None
    return web.Response(status=204)


# -- quotas -----------------------------------------------------------------------------------

async def list_quotas(request: web.Request) -> web.Response:
    items = await asyncio.to_thread(_svc(request).quotas, scope=scope_of(request))
    return web.json_response({"items": items, "total": len(items)})


async def set_quota(request: web.Request) -> web.Response:
    # Path parameters are not checked by the route table: the tenant's name is, here.
    tenant = request.match_info["tenant"]
    if not NAME_RE.match(tenant):
        raise ValidationError([Issue("path.tenant", f"{tenant[:70]!r} is not a tenant name (a-z, 0-9, '-')")])
    got = await asyncio.to_thread(_svc(request).set_quota, tenant, body(request)["maxHosts"])
    return web.json_response(got)


# -- the route table ----------------------------------------------------------------------------

PCT = {"type": "number", "minimum": 0, "maximum": 100}
SIZE = {"type": "integer", "minimum": 0, "maximum": 10000}
POLICY = {"type": "object", "additionalProperties": False, "properties": {
    "metric": {"enum": list(METRICS)}, "growAbove": PCT, "shrinkBelow": PCT,
    "forSeconds": {"type": "number", "minimum": 0, "maximum": 604800},
    "cooldownSeconds": {"type": "number", "minimum": 0, "maximum": 604800},
    "step": {"type": "integer", "minimum": 1, "maximum": 100},
    "maxAgeSeconds": {"type": "number", "minimum": 1, "maximum": 604800}},
    "description": "Grow by step when the ready hosts' average metric stayed above growAbove for forSeconds, "
                   "shrink below shrinkBelow; nothing moves for cooldownSeconds after a change"}
DECISION = obj(["at", "action", "from", "to", "reason", "inputs"], at=STR, action=STR, to=INT, reason=STR,
               inputs=OBJ, **{"from": INT})
POOL = obj(["name", "tenant", "template", "bladePool", "spread", "min", "max", "size", "hosts", "ready", "converged",
            "cursor"], name=STR, tenant=STR, template=STR, bladePool=STR, spread=STR, min=INT, max=INT,
           size={**INT, "description": "the desired size the appliance converges to"}, keepProfiles={"type": "boolean"},
           hosts={"type": "object", "additionalProperties": INT, "description": "hosts by state (released not "
                  "counted)"}, ready=INT, converged={"type": "boolean"},
           waiting={**NSTR, "description": "why the pool is not at its size"},
           policy={"type": ["object", "null"]}, decisions={"type": "array", "items": DECISION},
           webhooks=INT, cursor={**INT, "description": "the newest event's cursor"}, createdAt=NSTR)
HOST = obj(["id", "name", "pool", "tenant", "state", "macs"], id=STR, name=STR, pool=STR, tenant=STR,
           state={"enum": [s.value for s in HostState]}, uuid=NSTR, macs={"type": "array", "items": STR}, iqn=NSTR,
           managementAddress=NSTR, blade=NSTR, reason=NSTR, failover=NINT, replaces=NSTR, replacedBy=NSTR, job=NSTR,
           requestedAt=NSTR, readyAt=NSTR, releasedAt=NSTR)
_POOL_FIELDS: dict[str, Any] = {
    "bladePool": NAME, "min": SIZE, "max": SIZE, "spread": {"enum": [s.value for s in Spread]},
    "keepProfiles": {"type": "boolean", "description": "keep a released host's profile (default: delete it and "
                                                       "return its identities)"}}
POOL_NEW = {"type": "object", "additionalProperties": False, "required": ["name", "template"],
            "properties": {"name": {**NAME, "maxLength": 55}, "template": NAME,
                           "tenant": {"type": "string", "maxLength": 63}, "size": SIZE, "policy": POLICY,
                           **_POOL_FIELDS}}
POOL_PATCH = {"type": "object", "additionalProperties": False,
              "properties": {**_POOL_FIELDS, "policy": {"anyOf": [POLICY, {"type": "null"}]}},
              "description": "Fields given change; policy null removes the SLA policy."}
QUOTA = obj(["tenant", "maxHosts", "used"], tenant=STR, maxHosts=NINT, used=INT)

NAMEP = Param("name", NAME, "path", True)
HOSTP = Param("host", {"type": "string", "minLength": 1, "maxLength": 63}, "path", True,
              description="the host's id, or its name")
TENANTQ = Param("tenant", {"type": "string", "maxLength": 63}, description="for a caller of no tenant")
BOOL = {"type": "boolean"}
OK = "OK"
OPS = [
    Op("GET", "/host-pools", list_pools, "List host pools with their size and hosts by state", "host-pools",
       params=(TENANTQ,), responses={200: (OK, page_of(POOL))}),
    Op("POST", "/host-pools", create_pool, "Create a host pool: hosts stamped from a template", "host-pools",
       role="operator", body=POOL_NEW, responses={201: ("Created", POOL)}),
    Op("GET", "/host-pools/{name}", get_pool, "Show a host pool: size, hosts by state, why it is not at its size, "
       "the SLA policy's recent decisions", "host-pools", params=(NAMEP, TENANTQ), responses={200: (OK, POOL)}),
    Op("PATCH", "/host-pools/{name}", update_pool, "Change a host pool's bounds, spread, blade pool or SLA policy",
       "host-pools", role="operator", params=(NAMEP, TENANTQ), body=POOL_PATCH, responses={200: (OK, POOL)}),
    Op("DELETE", "/host-pools/{name}", delete_pool, "Delete a host pool whose hosts are all released",
       "host-pools", role="operator", params=(NAMEP, TENANTQ), responses={204: ("Deleted", {})}),
    Op("PUT", "/host-pools/{name}/size", set_size, "Set the size the appliance converges the pool to",
       "host-pools", role="operator", params=(NAMEP, TENANTQ),
       body={"type": "object", "additionalProperties": False, "required": ["size"], "properties": {"size": SIZE}},
       responses={202: ("Accepted: the pool", POOL)}),
    Op("GET", "/host-pools/{name}/hosts", list_hosts, "A pool's hosts: stable id, identity, state, blade",
       "host-pools", params=(NAMEP, TENANTQ, Param("state", {"enum": [s.value for s in HostState]}),
                             Param("all", BOOL, description="released hosts too")),
       responses={200: (OK, page_of(HOST))}),
    Op("POST", "/host-pools/{name}/hosts", grow, "Grow a pool by count hosts (instantiate, allocate, stamp, boot, "
       "ready)", "host-pools", role="operator", params=(NAMEP, TENANTQ),
       body={"type": "object", "additionalProperties": False, "required": ["count"],
             "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 10000}}},
       responses={202: ("Accepted: the pool", POOL)}),
    Op("GET", "/host-pools/{name}/hosts/{host}", get_host, "Show a host", "host-pools",
       params=(NAMEP, HOSTP, TENANTQ), responses={200: (OK, HOST)}),
    Op("DELETE", "/host-pools/{name}/hosts/{host}", release_host, "Drain and release one host (the pool shrinks "
       "by one, or with replace a new host takes its place)", "host-pools", role="operator",
       params=(NAMEP, HOSTP, TENANTQ, Param("keepProfile", BOOL, description="keep the host's profile"),
               Param("replace", BOOL, description="keep the size: request a new host in its place")),
       responses={202: ("Accepted: the host", HOST)}),
    Op("POST", "/host-pools/{name}/hosts/{host}/metrics", report_metrics, "Report a host's utilisation for the "
       "pool's SLA policy", "host-pools", role="operator", params=(NAMEP, HOSTP, TENANTQ),
       body={"type": "object", "additionalProperties": False, "minProperties": 1,
             "properties": {"cpu": PCT, "memory": PCT, "vms": {"type": "integer", "minimum": 0, "maximum": 100000}}},
       responses={204: ("Recorded", {})}),
    Op("GET", "/host-quotas", list_quotas, "Tenants' host quotas (a tenant sees its own)", "host-pools",
       responses={200: (OK, page_of(QUOTA))}),
    Op("PUT", "/host-quotas/{tenant}", set_quota, "Set the most hosts a tenant's pools may hold (null: no quota)",
       "host-pools", role="admin", appliance_wide=True,
       params=(Param("tenant", NAME, "path", True),),
       body={"type": "object", "additionalProperties": False, "required": ["maxHosts"],
             "properties": {"maxHosts": nullable("integer", minimum=0, maximum=10000)}},
       responses={200: (OK, QUOTA)}),
]
