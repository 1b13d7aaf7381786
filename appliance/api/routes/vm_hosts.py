"""VM hosts, read-only: the libvirt hosts whose domain slots are blades (driver libvirt).

Enrolling or deleting one defines or undefines domains on a hypervisor over its libvirt
URI (ssh, TLS…), an administrator's act done with ``anvil vm-host`` on the appliance; the
API shows what is enrolled. The appliance's own resource: no tenant-scoped caller.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.api.keys import STORE
from appliance.api.schemas import INT, NSTR, obj, page_of
from appliance.api.spec import NAME, STR, Op, Param
from appliance.services.vm_hosts import VmHostService

SLOT = obj(["name", "state"], name=STR, state=STR, profile=NSTR)
VM_HOST = obj(["name", "uri", "bridge", "slots", "blades"], name=STR, uri=STR, bridge=STR, bridgeType=STR, slots=INT,
              cpus=INT, memoryMiB=INT, nics=INT, accel=STR, blades={"type": "array", "items": SLOT})


async def list_vm_hosts(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(VmHostService(request.app[STORE]).list)
    items = [i.public() for i in infos]
    return web.json_response({"items": items, "total": len(items)})


async def get_vm_host(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(VmHostService(request.app[STORE]).get, request.match_info["name"])
    return web.json_response(info.public())


OPS = [
    Op("GET", "/vm-hosts", list_vm_hosts, "List VM hosts and their slots' blades", "vm-hosts", appliance_wide=True,
       responses={200: ("OK", page_of(VM_HOST))}),
    Op("GET", "/vm-hosts/{name}", get_vm_host, "Show a VM host and what its slots hold", "vm-hosts",
       appliance_wide=True, params=(Param("name", NAME, "path", True),), responses={200: ("OK", VM_HOST)}),
]
