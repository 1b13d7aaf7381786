"""Blades (list with filters and pages, show, enroll, delete, power, boot, maintenance, health),
switches, capacity and the rack view."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from appliance.api import schemas as sc
from appliance.api.keys import HARDWARE, READS, SETTINGS, STORE
from appliance.api.spec import NAME, STR, Op, Param, body, caller, query, scope_of, tenant_filter
from appliance.drivers.protocols import BootDevice, BootMode, BootSetting, PowerAction, Secret
from appliance.secrets import SecretBox
from appliance.services.audit import record_action
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.capacity import CapacityService
from appliance.services.inventory import SORTS, BladeFilter, Inventory
from appliance.services.scope import Scope
from appliance.services.switches import SwitchService


def _box(request: web.Request) -> SecretBox:
    return SecretBox(request.app[SETTINGS].secrets_key_path)


async def _visible(request: web.Request, name: str) -> None:
    await asyncio.to_thread(Inventory(request.app[STORE]).check_visible, name, caller(request).tenant)


async def list_blades(request: web.Request) -> web.Response:
    f = BladeFilter(state=query(request, "state"), chassis=query(request, "chassis"),
                    name_prefix=query(request, "prefix"), tenant=tenant_filter(request),
                    search=query(request, "search"), profile=query(request, "profile"))
    inv, limit, after = Inventory(request.app[STORE]), query(request, "limit") or 100, query(request, "after")
    sort, offset = query(request, "sort") or "name", query(request, "offset") or 0

    def page() -> dict[str, Any]:
        items, nxt, total = inv.page(f, limit=limit, after=after, sort=sort, offset=offset)
        return {"items": items, "next": nxt, "total": total}
    return await request.app[READS].json(page)


def _detail(request: web.Request, name: str) -> dict[str, Any]:
    info = BladeService(request.app[STORE], _box(request)).get(name).public()
    info.pop("createdAt", None)
    inv = Inventory(request.app[STORE])
    info["profile"] = inv.bound_profile(name)
    info["tenant"] = info["profile"].partition("/")[0] if info["profile"] else None
    info.update(inv.health_of(name))
    return info


async def get_blade(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _visible(request, name)
    return web.json_response(await asyncio.to_thread(_detail, request, name))


async def enroll(request: web.Request) -> web.Response:
    b = body(request)
    req = Enrollment(name=b["name"], bmc=b["bmc"], username=b["username"], password=Secret(b["password"]),
                     driver=b.get("driver"), verify_tls=b.get("verifyTls", True), cpus=b.get("cpus"),
                     memory_gib=b.get("memoryGiB"), chassis=b.get("chassis"), slot=b.get("slot"),
                     nics=tuple(NicSpec(n["name"], n["mac"], n.get("switch"), n.get("port"))
                                for n in b.get("nics") or []), facts=b.get("facts") or {})
    await asyncio.to_thread(BladeService(request.app[STORE], _box(request)).enroll, req)
    resp = web.json_response(await asyncio.to_thread(_detail, request, req.name), status=201)
    resp.headers["Location"] = f"/api/v1/blades/{req.name}"
    return resp


async def delete_blade(request: web.Request) -> web.Response:
    await asyncio.to_thread(BladeService(request.app[STORE], _box(request)).delete, request.match_info["name"])
    return web.Response(status=204)


async def maintenance(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    b = body(request)
    await asyncio.to_thread(BladeService(request.app[STORE], _box(request)).set_maintenance, name, b["on"],
                            reason=b.get("reason", ""))
    return web.json_response(await asyncio.to_thread(_detail, request, name))


async def power(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _visible(request, name)
    action = PowerAction(body(request)["action"])
    driver, bmc = await asyncio.to_thread(request.app[HARDWARE].bmc, name)
    await driver.set_power(bmc, action)
    state = await driver.get_power(bmc)
    await asyncio.to_thread(record_action, request.app[STORE], action="power", resource="blade", name=name,
                            after={"action": str(action)})
    return web.json_response({"blade": name, "action": str(action), "power": str(state)})


async def get_power(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _visible(request, name)
    driver, bmc = await asyncio.to_thread(request.app[HARDWARE].bmc, name)
    return web.json_response({"blade": name, "power": str(await driver.get_power(bmc)), "action": None})


async def boot(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _visible(request, name)
    b = body(request)
    want = BootSetting(BootDevice(b["device"]), BootMode(b["mode"]) if b.get("mode") else BootMode.UNKNOWN,
                       bool(b.get("persistent", False)))
    driver, bmc = await asyncio.to_thread(request.app[HARDWARE].bmc, name)
    await driver.set_next_boot(bmc, want)
    got = await driver.get_next_boot(bmc)
    await asyncio.to_thread(record_action, request.app[STORE], action="boot", resource="blade", name=name,
                            after={"device": str(want.device), "persistent": want.persistent})
    return web.json_response({"blade": name, "device": str(got.device), "mode": str(got.mode),
                              "persistent": got.persistent})


async def health(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _visible(request, name)
    driver, bmc = await asyncio.to_thread(request.app[HARDWARE].bmc, name)
    got = await driver.health(bmc)
    return web.json_response({"blade": name, "state": str(got.state), "reason": got.reason or None})


async def capacity(request: web.Request) -> web.Response:
    tenant = tenant_filter(request)
    counts = await asyncio.to_thread(Inventory(request.app[STORE]).capacity, tenant)
    detail = await asyncio.to_thread(CapacityService(request.app[STORE]).capacity,
                                     Scope(tenant, scope_of(request).principal))
    return web.json_response({**counts, **detail.public()})


async def rack(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(Inventory(request.app[STORE]).rack, tenant_filter(request)))


async def list_switches(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(SwitchService(request.app[STORE], _box(request)).list)
    items = [i.public() for i in infos]
    return web.json_response({"items": items, "total": len(items)})


async def get_switch(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(SwitchService(request.app[STORE], _box(request)).get, request.match_info["name"])
    return web.json_response(info.public())


NAMEP = Param("name", NAME, "path", True)
OK = "OK"
OPS = [
    Op("GET", "/blades", list_blades, "List blades, a page at a time", "blades", params=(
        Param("state", {"type": "string", "maxLength": 32}), Param("chassis", {"type": "string", "maxLength": 63}),
        Param("prefix", {"type": "string", "maxLength": 63}, description="names starting with this"),
        Param("search", {"type": "string", "maxLength": 127},
              description="text in the name, chassis, state, bound profile or its tenant"),
        Param("profile", {"type": "string", "maxLength": 127}, description="bound to this profile (NAME or "
              "TENANT/NAME)"),
        Param("tenant", {"type": "string", "maxLength": 63}, description="bound to a profile of this tenant"),
        Param("sort", {"enum": list(SORTS)}, description="name (default: pages by `after`), or state, chassis, "
              "profile, tenant (pages by `offset`)"),
        Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        Param("offset", {"type": "integer", "minimum": 0, "maximum": 1000000}),
        Param("after", {"type": "string", "maxLength": 63}, description="the `next` cursor of the previous page")),
       responses={200: (OK, sc.page_of(sc.BLADE, cursor=True))}),
    Op("POST", "/blades", enroll, "Enrol a blade", "blades", role="admin", appliance_wide=True, body=sc.ENROLL,
       responses={201: ("Enrolled", sc.BLADE_DETAIL)}),
    Op("GET", "/blades/{name}", get_blade, "Show a blade", "blades", params=(NAMEP,),
       responses={200: (OK, sc.BLADE_DETAIL)}),
    Op("DELETE", "/blades/{name}", delete_blade, "Remove a blade that holds no profile", "blades", role="admin",
       appliance_wide=True, params=(NAMEP,), responses={204: ("Deleted", {})}),
    Op("POST", "/blades/{name}/maintenance", maintenance, "Put a blade into maintenance or return it", "blades",
       role="operator", appliance_wide=True, params=(NAMEP,), body=sc.MAINTENANCE,
       responses={200: (OK, sc.BLADE_DETAIL)}),
    Op("GET", "/blades/{name}/power", get_power, "Read a blade's power state from its BMC", "blades",
       params=(NAMEP,), responses={200: (OK, sc.POWER_STATE)}),
    Op("POST", "/blades/{name}/power", power, "Power a blade on, off, soft-off or reset it", "blades",
       role="operator", params=(NAMEP,), body=sc.POWER, responses={200: (OK, sc.POWER_STATE)}),
    Op("POST", "/blades/{name}/boot", boot, "Set a blade's next boot device", "blades", role="operator",
       params=(NAMEP,), body=sc.BOOT, responses={200: (OK, sc.BOOT_STATE)}),
    Op("GET", "/blades/{name}/health", health, "Read a blade's health from its BMC", "blades", params=(NAMEP,),
       responses={200: (OK, sc.HEALTH)}),
    Op("GET", "/capacity", capacity, "Blades by state, and blades, CPUs and memory per pool, chassis and tenant",
       "blades",
       params=(Param("tenant", {"type": "string", "maxLength": 63}),), responses={200: (OK, sc.CAPACITY)}),
    Op("GET", "/rack", rack, "Blades by chassis and slot", "blades",
       params=(Param("tenant", {"type": "string", "maxLength": 63}),), responses={200: (OK, sc.RACK)}),
    Op("GET", "/switches", list_switches, "List switches with their cabling", "switches", appliance_wide=True,
       responses={200: (OK, sc.page_of(sc.SWITCH))}),
    Op("GET", "/switches/{name}", get_switch, "Show a switch", "switches", appliance_wide=True,
       params=(Param("name", STR, "path", True),), responses={200: (OK, sc.SWITCH)}),
]
