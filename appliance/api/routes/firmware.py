"""Firmware: each blade's compliance with a baseline, and firmware update jobs.

The appliance's own concern (a blade's firmware belongs to no tenant): no tenant-scoped caller.
Compliance is read from the BMCs now (Redfish FirmwareInventory), a few at a time, and kept as
each blade's last reading for the console's blade list.
"""

from __future__ import annotations

import asyncio
from functools import partial

from aiohttp import web

from appliance.api.keys import ENGINE, HARDWARE, SETTINGS, STORE
from appliance.api.schemas import JOB, NSTR, OBJ, obj, page_of
from appliance.api.spec import STR, Op, Param, body, caller, nullable, query
from appliance.services import firmware as sfw

COMPLIANCE = obj(["blade", "baseline", "compliant", "summary", "components"], blade=STR, baseline=STR,
                 compliant={"type": "boolean"}, summary=STR, error=NSTR, components=OBJ)
UPDATE = {"type": "object", "additionalProperties": False, "properties": {
    "baseline": nullable("string", minLength=1, maxLength=63, description="default: the one the pool names"),
    "blade": nullable("string", maxLength=1000, description="a blade, or several separated by commas"),
    "pool": nullable("string", maxLength=63, description="every blade of this blade pool (spares: every blade)"),
    "wave": {"type": "integer", "minimum": 1, "maximum": 64, "description": "blades updated at once"},
    "failureBudget": {"type": "integer", "minimum": 0, "maximum": 10000,
                      "description": "failed blades tolerated before the wave stops"}}}


async def compliance(request: web.Request) -> web.Response:
    store, dirs = request.app[STORE], sfw.baseline_dirs(request.app[SETTINGS].state_dir)
    blade, pool = query(request, "blade"), query(request, "pool")
    pool = pool or (None if blade else "spares")
    name = await asyncio.to_thread(sfw.baseline_name, store, query(request, "baseline"), pool)
    baseline = await asyncio.to_thread(sfw.load_baseline, dirs, name)
    target = await asyncio.to_thread(partial(sfw.targets, store, blade=blade, pool=pool))
    hw = request.app[HARDWARE]
    await asyncio.to_thread(hw.prefetch, list(target.blades))
    results = await sfw.compliance_of(hw, target.blades, baseline)
    await asyncio.to_thread(sfw.record, store, results)
    items = [r.public() for r in results]
    return web.json_response({"items": items, "total": len(items),
                              "compliant": sum(1 for r in results if r.compliant)})


async def submit_update(request: web.Request) -> web.Response:
    b = body(request) or {}
    store, dirs = request.app[STORE], sfw.baseline_dirs(request.app[SETTINGS].state_dir)
    name = await asyncio.to_thread(sfw.baseline_name, store, b.get("baseline"), b.get("pool"))
    baseline = await asyncio.to_thread(sfw.load_baseline, dirs, name)
    target = await asyncio.to_thread(partial(sfw.targets, store, blade=b.get("blade"), pool=b.get("pool")))
    info = await asyncio.to_thread(partial(sfw.submit_update, store, baseline, target, wave=b.get("wave") or 1,
                                           budget=b.get("failureBudget") or 0, created_by=caller(request).who))
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()
    resp = web.json_response(info.public(), status=202)
    resp.headers["Location"] = f"/api/v1/jobs/{info.id}"
    return resp


OPS = [
    Op("GET", "/firmware/compliance", compliance, "Each blade's firmware against a baseline, read from its BMC",
       "firmware", appliance_wide=True, params=(
           Param("baseline", {"type": "string", "minLength": 1, "maxLength": 63},
                 description="default: the one the pool names"),
           Param("blade", {"type": "string", "maxLength": 1000}, description="a blade, or several separated by commas"),
           Param("pool", {"type": "string", "maxLength": 63}, description="a blade pool (default: spares, every "
                 "blade)")),
       responses={200: ("OK", {**page_of(COMPLIANCE), "properties": {**page_of(COMPLIANCE)["properties"],
                                                                     "compliant": {"type": "integer"}}})}),
    Op("POST", "/firmware/updates", submit_update, "Update blades to a baseline (a job: one blade or a rolling "
       "wave with a failure budget)", "firmware", role="operator", appliance_wide=True, body=UPDATE,
       responses={202: ("Accepted: the job", JOB)}),
]
