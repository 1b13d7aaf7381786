"""The console's switch pages: switches with their cabling, enrolling one, cabling a blade
NIC to a port, and each cabled port's VLANs and admin state read back from the switch.

Switches are the appliance's: a tenant-scoped user is refused these pages, as the API
refuses it ``/switches``. Reading a port goes through the switch driver (SNMP Q-BRIDGE-MIB,
OVS…) with a deadline per port, a few ports at a time, so a dead switch shows "no answer"
in its rows instead of hanging the page.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from appliance.api.keys import HARDWARE, SETTINGS, STORE
from appliance.console.views import page, render
from appliance.domain.vlans import parse_vlan_list, vlan_ranges
from appliance.drivers.errors import DriverError
from appliance.drivers.protocols import PortConfig, Secret
from appliance.errors import AnvilError, Issue, ValidationError
from appliance.secrets import SecretBox
from appliance.services.inventory import BladeFilter, Inventory
from appliance.services.switches import SwitchService

PORT_DEADLINE = 4.0     # seconds for one port's read-back
PORTS_AT_ONCE = 8       # a switch's agent answers a few requests at a time


def _service(request: web.Request) -> SwitchService:
    return SwitchService(request.app[STORE], SecretBox(request.app[SETTINGS].secrets_key_path))


def _field(data: Any, name: str) -> str:
    return str(data.get(name, "") or "").strip()


@page(appliance=True)
async def switches(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(_service(request).list)
    return render(request, "switches.html", switches=infos, message=request.query.get("msg"), form={}, errors=[])


@page("admin", form=True, appliance=True)
async def switch_enroll(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    form = {k: _field(data, k) for k in ("name", "address", "username")}
    password, privacy = str(data.get("password", "") or ""), str(data.get("privacy", "") or "")
    svc = _service(request)
    try:
        info = await asyncio.to_thread(svc.enroll, form["name"], form["address"], username=form["username"],
                                       password=Secret(password) if password else None,
                                       privacy=Secret(privacy) if privacy else None)
    except ValidationError as exc:
        infos = await asyncio.to_thread(svc.list)
        return render(request, "switches.html", status=400, switches=infos, message=None, form=form,
                      errors=exc.issues)
    raise web.HTTPSeeOther(f"/switches/{quote(info.name)}?msg=" + quote(f"Enrolled switch {info.name} "
                                                                         f"({info.driver})."))


async def read_ports(request: web.Request, name: str, ports: list[str]) -> dict[str, dict[str, Any]]:
    """Each port's native VLAN, tagged VLANs and admin state as the switch answers now, or why not."""
    out: dict[str, dict[str, Any]] = {}
    try:
        driver, ref = await asyncio.to_thread(request.app[HARDWARE].switch, name)
    except (AnvilError, DriverError) as exc:
        return {p: {"error": str(exc)} for p in ports}
    gate = asyncio.Semaphore(PORTS_AT_ONCE)

    async def one(port: str) -> None:
        async with gate:
            try:
                async with asyncio.timeout(PORT_DEADLINE):
                    cfg = await driver.get_port(ref, port)
            except TimeoutError:
                out[port] = {"error": f"no answer within {PORT_DEADLINE:g} s"}
                return
            except (AnvilError, DriverError) as exc:
                out[port] = {"error": str(exc)}
                return
            out[port] = {"native": cfg.native, "tagged": vlan_ranges(cfg.tagged), "up": cfg.up, "error": None}

    async with asyncio.TaskGroup() as tg:
        for p in ports:
            tg.create_task(one(p))
    return out


@page(appliance=True)
async def switch(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    info = await asyncio.to_thread(_service(request).get, name)
    ports = await read_ports(request, name, [c.port for c in info.cables])
    blades = (await asyncio.to_thread(Inventory(request.app[STORE]).page, BladeFilter(), limit=100_000))[0]
    return render(request, "switch.html", switch=info, ports=ports, blades=blades, message=request.query.get("msg"))


@page("admin", form=True, appliance=True)
async def switch_cable(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    data = await request.post()
    blade, nic, port = _field(data, "blade"), _field(data, "nic"), _field(data, "port")
    await asyncio.to_thread(_service(request).cable, blade, nic, name, port)
    raise web.HTTPSeeOther(f"/switches/{quote(name)}?msg=" + quote(f"Cabled {blade}/{nic} to port {port}."))


def _wanted(data: Any, now: PortConfig) -> PortConfig:
    native_raw, tagged_raw, state = _field(data, "native"), _field(data, "tagged"), _field(data, "state")
    native = now.native
    if native_raw:
        if native_raw == "none":
            native = None
        elif native_raw.isdigit() and 1 <= int(native_raw) <= 4094:
            native = int(native_raw)
        else:
            raise ValidationError([Issue("native", f"{native_raw[:20]!r} is not a VLAN 1..4094 or none")])
    try:
        tagged = parse_vlan_list(tagged_raw) if "tagged" in data else now.tagged
    except ValueError as exc:
        raise ValidationError([Issue("tagged", str(exc))]) from None
    up = now.up if state not in ("up", "down") else state == "up"
    return PortConfig(native=native, tagged=tagged, up=up)


@page("admin", form=True, appliance=True)
async def switch_port(request: web.Request) -> web.StreamResponse:
    """Set a port's VLANs and admin state (what is left empty stays), then read it back."""
    name = request.match_info["name"]
    data = await request.post()
    port = _field(data, "port")
    if not port or len(port) > 63:
        raise ValidationError([Issue("port", "give the port (1 to 63 characters)")])
    driver, ref = await asyncio.to_thread(request.app[HARDWARE].switch, name)
    async with asyncio.timeout(PORT_DEADLINE * 3):
        now = await driver.get_port(ref, port)
        await driver.set_port(ref, port, _wanted(data, now))
        got = await driver.get_port(ref, port)
    said = (f"Port {port} of {name} reads native {got.native if got.native is not None else 'none'}, tagged "
            f"{vlan_ranges(got.tagged)}, {'up' if got.up else 'down'}.")
    raise web.HTTPSeeOther(f"/switches/{quote(name)}?msg=" + quote(said))


def setup_switch_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/switches", switches)
    r.add_post("/switches", switch_enroll)
    r.add_get("/switches/{name}", switch)
    r.add_post("/switches/{name}/cable", switch_cable)
    r.add_post("/switches/{name}/ports", switch_port)
