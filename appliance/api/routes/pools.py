"""Identity pools (/identity-pools) and blade pools (/pools)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from aiohttp import web

from appliance.api import schemas as sc
from appliance.api.keys import SETTINGS, STORE
from appliance.api.spec import Op, Param, body, scope_of
from appliance.services.blade_pools import BladePoolInfo, BladePoolService
from appliance.services.firmware import baseline_dirs
from appliance.services.pools import PoolInfo, PoolService


def _ipool(p: PoolInfo) -> dict[str, Any]:
    return {**asdict(p), "free": p.free}


def _bpool(p: BladePoolInfo) -> dict[str, Any]:
    return {"name": p.name, "tenant": p.tenant, "description": p.description, "blades": list(p.blades),
            "available": p.available, "firmwareBaseline": p.firmware_baseline, "firmwarePolicy": p.firmware_policy}


async def list_identity_pools(request: web.Request) -> web.Response:
    items = [_ipool(p) for p in await asyncio.to_thread(PoolService(request.app[STORE]).list)]
    return web.json_response({"items": items, "total": len(items)})


async def get_identity_pool(request: web.Request) -> web.Response:
    return web.json_response(_ipool(await asyncio.to_thread(PoolService(request.app[STORE]).get,
                                                             request.match_info["name"])))


async def create_identity_pool(request: web.Request) -> web.Response:
    b = body(request)
    info = await asyncio.to_thread(PoolService(request.app[STORE]).create, b["name"], b["kind"], b["start"], b["end"],
                                   b.get("prefix"))
    return web.json_response(_ipool(info), status=201)


async def delete_identity_pool(request: web.Request) -> web.Response:
    await asyncio.to_thread(PoolService(request.app[STORE]).delete, request.match_info["name"])
    return web.Response(status=204)


async def list_blade_pools(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(BladePoolService(request.app[STORE]).list, scope=scope_of(request))
    items = [_bpool(p) for p in infos]
    return web.json_response({"items": items, "total": len(items)})


async def get_blade_pool(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(BladePoolService(request.app[STORE]).get, request.match_info["name"],
                                   scope=scope_of(request))
    return web.json_response(_bpool(info))


async def create_blade_pool(request: web.Request) -> web.Response:
    b = body(request)
    svc = BladePoolService(request.app[STORE])

    def run() -> BladePoolInfo:
        info = svc.create(b["name"], tenant=b.get("tenant"), description=b.get("description", ""),
                          firmware_baseline=b.get("firmwareBaseline"), firmware_policy=b.get("firmwarePolicy"),
                          baselines=baseline_dirs(request.app[SETTINGS].state_dir))
        return svc.add(info.name, tuple(b["blades"])) if b.get("blades") else info

    return web.json_response(_bpool(await asyncio.to_thread(run)), status=201)


async def set_blade_pool_firmware(request: web.Request) -> web.Response:
    b = body(request)
    info = await asyncio.to_thread(BladePoolService(request.app[STORE]).set_firmware, request.match_info["name"],
                                   b.get("firmwareBaseline"), b.get("firmwarePolicy"),
                                   baselines=baseline_dirs(request.app[SETTINGS].state_dir))
    return web.json_response(_bpool(info))


async def delete_blade_pool(request: web.Request) -> web.Response:
    await asyncio.to_thread(BladePoolService(request.app[STORE]).delete, request.match_info["name"])
    return web.Response(status=204)


NAMEP = Param("name", {"type": "string", "minLength": 1, "maxLength": 63}, "path", True)
OPS = [
    Op("GET", "/identity-pools", list_identity_pools, "List identity pools", "identity-pools",
       responses={200: ("OK", sc.page_of(sc.IDENTITY_POOL))}),
    Op("POST", "/identity-pools", create_identity_pool, "Create an identity pool", "identity-pools", role="admin",
       appliance_wide=True, body=sc.IDENTITY_POOL_NEW, responses={201: ("Created", sc.IDENTITY_POOL)}),
    Op("GET", "/identity-pools/{name}", get_identity_pool, "Show an identity pool", "identity-pools",
       params=(NAMEP,), responses={200: ("OK", sc.IDENTITY_POOL)}),
    Op("DELETE", "/identity-pools/{name}", delete_identity_pool, "Delete an identity pool none of whose "
       "identities is held", "identity-pools", role="admin", appliance_wide=True, params=(NAMEP,),
       responses={204: ("Deleted", {})}),
    Op("GET", "/pools", list_blade_pools, "List blade pools (a tenant sees those granted to it)", "pools",
       responses={200: ("OK", sc.page_of(sc.BLADE_POOL))}),
    Op("POST", "/pools", create_blade_pool, "Create a blade pool", "pools", role="admin", appliance_wide=True,
       body=sc.BLADE_POOL_NEW, responses={201: ("Created", sc.BLADE_POOL)}),
    Op("GET", "/pools/{name}", get_blade_pool, "Show a blade pool", "pools", params=(NAMEP,),
       responses={200: ("OK", sc.BLADE_POOL)}),
    Op("PUT", "/pools/{name}/firmware", set_blade_pool_firmware, "Name a blade pool's firmware baseline and "
       "policy (null: none)", "pools", role="admin", appliance_wide=True, params=(NAMEP,),
       body=sc.BLADE_POOL_FIRMWARE, responses={200: ("OK", sc.BLADE_POOL)}),
    Op("DELETE", "/pools/{name}", delete_blade_pool, "Delete a blade pool", "pools", role="admin",
       appliance_wide=True, params=(NAMEP,), responses={204: ("Deleted", {})}),
]
