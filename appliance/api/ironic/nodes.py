"""Nodes: list (pages, filters, ``fields``), show, create, patch, delete — blades in Ironic's words.

A node is a blade: ``uuid`` is the blade's UUID, ``name`` its name, ``driver`` its BMC driver
(``fake`` is ``fake-hardware``), ``driver_info`` its BMC address and user (the password shown as
``******``), ``properties`` its CPUs and memory (``cpus``, ``memory_mb``) and what the client
added, ``instance_uuid`` the UUID of the profile live on it, ``owner`` that profile's tenant.
Fields later versions added are left out below the version that added them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from appliance.api.ironic import drivers, edge
from appliance.api.ironic.errors import IronicError, NotImplementedHere
from appliance.api.ironic.patch import PATCHABLE, apply
from appliance.api.ironic.states import Provision, provision
from appliance.api.ironic.versions import base_url, links, links_at
from appliance.api.keys import HARDWARE, READS, SETTINGS, STORE, WRITES
from appliance.api.spec import scope_of
from appliance.domain.names import NAME_RE
from appliance.drivers.protocols import PowerState, Secret
from appliance.secrets import SecretBox
from appliance.services.baremetal import SORT_KEYS, BaremetalService, NodeFields, NodeRecord
from appliance.services.blades import Enrollment

MASK = "******"
# Field → the minor version that added it (absent: 1.1).
SINCE = {"name": 5, "driver_internal_info": 3, "inspection_started_at": 6, "inspection_finished_at": 6,
         "clean_step": 7, "raid_config": 12, "target_raid_config": 12, "network_interface": 20,
         "resource_class": 21, "boot_interface": 31, "console_interface": 31, "deploy_interface": 31,
         "inspect_interface": 31, "management_interface": 31, "power_interface": 31, "raid_interface": 31,
         "vendor_interface": 31, "storage_interface": 33, "traits": 37, "rescue_interface": 38,
         "bios_interface": 40, "fault": 42, "deploy_step": 44, "conductor_group": 46, "automated_clean": 47,
         "protected": 48, "protected_reason": 48, "conductor": 49, "owner": 50, "description": 51,
         "allocation_uuid": 52, "retired": 61, "retired_reason": 61, "lessee": 65, "network_data": 66,
         "portgroups": 24, "states": 14, "volume": 32}
LIST_FIELDS = ("uuid", "name", "instance_uuid", "power_state", "provision_state", "maintenance")
POWER = {PowerState.ON: "power on", PowerState.OFF: "power off"}
# Ironic fields a client may send on create that Anvil does not keep: refused, with the reason.
NOT_KEPT = {
    "chassis_uuid": "Anvil has no chassis objects (a blade's chassis is part of its inventory)",
    "resource_class": "Anvil places by a profile's requirements, not by resource class",
    "owner": "a node's tenant is that of the profile live on it",
    "lessee": "a node's tenant is that of the profile live on it",
    "instance_uuid": "it is the UUID of the profile a deploy stamps (instance_info.anvil_profile)",
    "traits": "Anvil places by a profile's requirements, not by traits",
    "conductor_group": "one appliance is one conductor",
    "network_data": "a profile carries the blade's networks",
    "automated_clean": "provide always powers the blade off; Anvil runs no clean steps",
    "protected": "not kept", "retired": "not kept", "description": "not kept",
}
_INTERFACES = ("boot", "console", "deploy", "inspect", "management", "network", "power", "raid", "rescue",
               "storage", "vendor", "bios")


def service(request: web.Request) -> BaremetalService:
    return BaremetalService(request.app[STORE], SecretBox(request.app[SETTINGS].secrets_key_path))


def _time(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def driver_info(r: NodeRecord) -> dict[str, Any]:
    """The BMC as Ironic's drivers name its parts; the password masked."""
    u = urlsplit(r.bmc)
    extra = dict(r.driver_info)
    if u.scheme == "ipmi":
        return {**extra, "ipmi_address": u.hostname, "ipmi_port": u.port or 623, "ipmi_username": r.username,
                "ipmi_password": MASK}
    if u.scheme.startswith("redfish"):
        scheme = u.scheme.partition("+")[2] or "https"
        return {**extra, "redfish_address": f"{scheme}://{u.netloc}", "redfish_system_id": u.path,
                "redfish_username": r.username, "redfish_password": MASK, "redfish_verify_ca": r.verify_tls}
    if u.scheme == "fake":
        return extra
    return {**extra, "anvil_bmc": r.bmc, "anvil_username": r.username, "anvil_password": MASK}


def properties(r: NodeRecord) -> dict[str, Any]:
    out = dict(r.properties)
    out.pop("memory_mb", None)
    if r.cpus is not None:
        out["cpus"] = r.cpus
    if r.memory_gib is not None:
        exact = r.properties.get("memory_mb")
        out["memory_mb"] = exact if isinstance(exact, int) and exact // 1024 == r.memory_gib else r.memory_gib * 1024
    return out


def instance_uuid(r: NodeRecord) -> str | None:
    if r.profile is None:
        return None
    if r.profile_uuid:
        return r.profile_uuid
    # A profile whose identity has no UUID: a stable one from its tenant and name.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"anvil:profile:{r.profile[0]}/{r.profile[1]}"))


@dataclass(frozen=True, slots=True)
class View:
    """What a node's rendering takes from its request, read on the event loop: the version's
    minor and the base of links. A list page of up to 1,000 nodes renders in a worker thread."""

    minor: int
    base: str


def view_of(request: web.Request) -> View:
    return View(edge.version_of(request)[1], base_url(request))


def _iface(r: NodeRecord) -> str:
    return "fake" if drivers.ironic_name(r.driver) == "fake-hardware" else "anvil"


Field = Callable[[View, NodeRecord, Provision, "str | None"], Any]
# Every field of a node, in Ironic's order, each computed only when asked for: a list shows
# six (or the client's ``fields``), and the dearer ones (links, driver_info, a UUID derived
# from the profile's name) cost more than the rest of a node together.
FIELDS: dict[str, Field] = {
    "uuid": lambda v, r, p, power: r.uuid,
    "name": lambda v, r, p, power: r.name,
    "driver": lambda v, r, p, power: drivers.ironic_name(r.driver),
    "driver_info": lambda v, r, p, power: driver_info(r),
    "driver_internal_info": lambda v, r, p, power: {},
    "properties": lambda v, r, p, power: properties(r),
    "instance_info": lambda v, r, p, power: r.instance_info,
    "instance_uuid": lambda v, r, p, power: instance_uuid(r),
    "extra": lambda v, r, p, power: r.extra,
    "chassis_uuid": lambda v, r, p, power: None,
    "console_enabled": lambda v, r, p, power: False,
    "maintenance": lambda v, r, p, power: p.maintenance,
    "maintenance_reason": lambda v, r, p, power: p.maintenance_reason,
    "fault": lambda v, r, p, power: p.fault,
    "power_state": lambda v, r, p, power: power,
    "target_power_state": lambda v, r, p, power: None,
    "provision_state": lambda v, r, p, power: p.state if p.state != "available" or v.minor >= 2 else None,
    "target_provision_state": lambda v, r, p, power: p.target,
    "provision_updated_at": lambda v, r, p, power: _time(r.provision_updated_at),
    "last_error": lambda v, r, p, power: p.last_error,
    "reservation": lambda v, r, p, power: None,
    "inspection_started_at": lambda v, r, p, power: None,
    "inspection_finished_at": lambda v, r, p, power: None,
    "clean_step": lambda v, r, p, power: {},
    "deploy_step": lambda v, r, p, power: {},
    "raid_config": lambda v, r, p, power: {},
    "target_raid_config": lambda v, r, p, power: {},
    "resource_class": lambda v, r, p, power: None,
    "traits": lambda v, r, p, power: [],
    "conductor_group": lambda v, r, p, power: "",
    "automated_clean": lambda v, r, p, power: None,
    "protected": lambda v, r, p, power: False,
    "protected_reason": lambda v, r, p, power: None,
    "conductor": lambda v, r, p, power: "anvil",
    "owner": lambda v, r, p, power: r.profile[0] if r.profile else None,
    "description": lambda v, r, p, power: None,
    "allocation_uuid": lambda v, r, p, power: None,
    "retired": lambda v, r, p, power: False,
    "retired_reason": lambda v, r, p, power: None,
    "lessee": lambda v, r, p, power: None,
    "network_data": lambda v, r, p, power: {},
    **{f"{i}_interface": ((lambda v, r, p, power: "noop") if i in ("network", "storage") else
                          (lambda v, r, p, power: _iface(r))) for i in _INTERFACES},
    "created_at": lambda v, r, p, power: _time(r.created_at),
    "updated_at": lambda v, r, p, power: _time(r.updated_at),
    "links": lambda v, r, p, power: links_at(v.base, f"nodes/{r.uuid}"),
    "ports": lambda v, r, p, power: links_at(v.base, f"nodes/{r.uuid}/ports"),
    "states": lambda v, r, p, power: links_at(v.base, f"nodes/{r.uuid}/states"),
    "portgroups": lambda v, r, p, power: links_at(v.base, f"nodes/{r.uuid}/portgroups"),
    "volume": lambda v, r, p, power: links_at(v.base, f"nodes/{r.uuid}/volume"),
}


def render(request: web.Request, r: NodeRecord, p: Provision, power: str | None,
           fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """One node, every field the request's version has (or ``fields`` of them)."""
    return render_as(view_of(request), r, p, power, fields)


def render_as(view: View, r: NodeRecord, p: Provision, power: str | None,
              fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """:func:`render` with the request's :class:`View`: callable from a worker thread."""
    keys = fields if fields is not None else FIELDS
    out = {k: FIELDS[k](view, r, p, power) for k in keys if SINCE.get(k, 1) <= view.minor}
    if fields is not None:
        out["links"] = FIELDS["links"](view, r, p, power)
    return out


def power_of(r: NodeRecord) -> str | None:
    """What a list shows (a show reads the BMC instead, :func:`live_power`): the monitor's last
    reading, unless the blade changed state since; then ``power on`` for a blade stamped since
    (its stamp confirmed it), else unknown, as Ironic shows a node it has not synced."""
    if r.power is not None and r.power_at is not None and r.power_at >= r.updated_at:
        return {"on": "power on", "off": "power off"}.get(r.power)
    return "power on" if r.state == "active" else None


async def live_power(request: web.Request, r: NodeRecord) -> str | None:
    """The BMC's answer now, within 3 s; the monitor's last reading if the BMC does not answer."""
    try:
        async with asyncio.timeout(3):
            driver, bmc = await request.app[READS].run(request.app[HARDWARE].bmc, r.name)
            return POWER.get(await driver.get_power(bmc))
    except Exception:   # a show must not fail because a BMC is down: fall back to the last reading
        return power_of(r)


def fields_param(request: web.Request) -> tuple[str, ...] | None:
    raw = request.query.get("fields")
    if raw is None:
        return None
    names = tuple(f.strip() for f in raw.split(",") if f.strip())
    unknown = [f for f in names if f not in KNOWN]
    if unknown:
        raise IronicError(400, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}")
    return names


KNOWN = frozenset({*SINCE, *LIST_FIELDS, "driver", "driver_info", "properties", "instance_info", "extra",
                   "chassis_uuid", "console_enabled", "maintenance_reason", "target_power_state",
                   "target_provision_state", "provision_updated_at", "last_error", "reservation", "created_at",
                   "updated_at", "links", "ports", *(f"{i}_interface" for i in _INTERFACES)})


# -- list --------------------------------------------------------------------------------

FILTERS = ("provision_state", "maintenance", "associated", "driver", "instance_uuid", "fault")
PAGING = ("limit", "marker", "sort_key", "sort_dir", "fields", "detail")
MAX_LIMIT = 1000


def _bool(name: str, raw: str) -> bool:
    if raw.lower() in ("true", "1", "yes", "on"):
        return True
    if raw.lower() in ("false", "0", "no", "off"):
        return False
    raise IronicError(400, f"{name}={raw!r} is not true or false")


async def list_nodes(request: web.Request, *, detail: bool = False) -> web.Response:
    q = request.query
    unknown = sorted(set(q) - set(FILTERS) - set(PAGING))
    if unknown:
        raise IronicError(400, f"unsupported parameter(s) {', '.join(unknown)} (filters: {', '.join(FILTERS)})")
    try:
        limit = min(int(q.get("limit", MAX_LIMIT)), MAX_LIMIT)
    except ValueError:
        raise IronicError(400, f"limit={q.get('limit')!r} is not a number") from None
    if limit <= 0:
        raise IronicError(400, "Limit must be positive")
    sort_key, sort_dir = q.get("sort_key", "id"), q.get("sort_dir", "asc")
    if sort_key not in SORT_KEYS or sort_dir not in ("asc", "desc"):
        raise IronicError(400, f"sort_key is one of {', '.join(SORT_KEYS)} and sort_dir asc or desc")
    if "detail" in q and _bool("detail", q["detail"]):
        detail = True
    fields = fields_param(request)
    want_state = q.get("provision_state")
    want_maint = _bool("maintenance", q["maintenance"]) if "maintenance" in q else None
    want_instance, want_fault = q.get("instance_uuid"), q.get("fault")

    def keep(r: NodeRecord) -> bool:
        p = provision(r)
        return ((want_state is None or (p.state or "available") == want_state)
                and (want_maint is None or p.maintenance == want_maint)
                and (want_instance is None or instance_uuid(r) == want_instance)
                and (want_fault is None or p.fault == want_fault))

    filtered = any(x is not None for x in (want_state, want_maint, want_instance, want_fault))
    chosen = fields if fields is not None else (None if detail else LIST_FIELDS)
    view, svc, scope = view_of(request), service(request), scope_of(request)
    driver = drivers.anvil_name(q["driver"]) if "driver" in q else None
    associated = _bool("associated", q["associated"]) if "associated" in q else None
    here = f"{request.scheme}://{request.host}{request.path}"

    def body() -> dict[str, Any]:
        # Read, rendered and encoded in a worker thread: a page of 1,000 nodes rendered on the
        # event loop held every other request for tens of milliseconds.
        page, more = svc.nodes(scope, limit=limit, marker=q.get("marker"), sort_key=sort_key, sort_dir=sort_dir,
                               driver=driver, associated=associated, keep=keep if filtered else None)
        out: dict[str, Any] = {"nodes": [render_as(view, r, provision(r), power_of(r), chosen) for r in page]}
        if more and page:
            nxt = {**{k: v for k, v in q.items() if k != "marker"}, "limit": str(limit), "marker": page[-1].uuid}
            out["next"] = f"{here}?{urlencode(nxt)}"
        return out

    return await request.app[READS].json(body)


async def list_detail(request: web.Request) -> web.Response:
    return await list_nodes(request, detail=True)


# -- show, create, patch, delete ------------------------------------------------------------

async def get_node(request: web.Request) -> web.Response:
    fields = fields_param(request)
    r = await request.app[READS].run(service(request).node, scope_of(request), request.match_info["node"])
    power = await live_power(request, r) if fields is None or "power_state" in fields else None
    return web.json_response(render(request, r, provision(r), power, fields))


def _dict(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name) or {}
    if not isinstance(value, dict):
        raise IronicError(400, f"{name} must be an object")
    return value


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise IronicError(400, f"{where} must be a whole number, not {value!r}") from None
    if n < 0:
        raise IronicError(400, f"{where} is negative")
    return n


def split_properties(props: dict[str, Any]) -> tuple[int | None, int | None, dict[str, Any]]:
    """``cpus`` and ``memory_mb`` (into the blade's columns, GiB rounded down) and the rest."""
    rest = {k: v for k, v in props.items() if k != "cpus"}
    mb = _int(props.get("memory_mb"), "properties.memory_mb")
    if mb is None:
        rest.pop("memory_mb", None)
    return _int(props.get("cpus"), "properties.cpus"), None if mb is None else mb // 1024, rest


async def create_node(request: web.Request) -> web.Response:
    body = await edge.json_body(request)
    if not isinstance(body, dict):
        raise IronicError(400, "the body must be a JSON object (a node)")
    refused = [k for k in body if k in NOT_KEPT and body[k] not in (None, "", [], {}, False)]
    if refused:
        raise NotImplementedHere("; ".join(f"{k}: {NOT_KEPT[k]}" for k in refused))
    allowed = {"name", "uuid", "driver", "driver_info", "properties", "extra", "instance_info",
               *(f"{i}_interface" for i in _INTERFACES), *NOT_KEPT}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise IronicError(400, f"unknown or read-only field(s): {', '.join(unknown)}")
    if not isinstance(body.get("driver"), str):
        raise IronicError(400, "driver is required (see GET /baremetal/v1/drivers)")
    node_uuid = body.get("uuid")
    if node_uuid is not None and not isinstance(node_uuid, str):
        raise IronicError(400, "uuid must be a string")
    name = body.get("name")
    if name is None:   # Ironic's nodes may be nameless; a blade is not
        name = f"node-{(node_uuid or str(uuid.uuid4()))[:8].lower()}"
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise IronicError(400, f"name {name!r} is not an Anvil blade name (1-63 lowercase letters, digits or '-', "
                               "starting and ending with a letter or digit)")
    bmc = drivers.bmc_from(body["driver"], _dict(body, "driver_info"), name)
    cpus, memory_gib, props = split_properties(_dict(body, "properties"))
    req = Enrollment(name=name, bmc=bmc.address, username=bmc.username, password=Secret(bmc.password),
                     driver=bmc.driver, verify_tls=bmc.verify_tls, cpus=cpus, memory_gib=memory_gib,
                     uuid=node_uuid.lower() if node_uuid else None)
    # From 1.11 a node starts in enroll (its BMC not yet checked); before, available at once.
    hold = "enroll" if edge.at_least(request, 11) else None
    r = await request.app[WRITES].run(service(request).enroll, req, hold=hold, fields=NodeFields(
        extra=_dict(body, "extra"), instance_info=_dict(body, "instance_info"), properties=props,
        driver_info=bmc.leftover))
    resp = web.json_response(render(request, r, provision(r), None), status=201)
    resp.headers["Location"] = links(request, f"nodes/{r.uuid}")[0]["href"]
    return resp


async def patch_node(request: web.Request) -> web.Response:
    ops = await edge.json_body(request)
    if isinstance(ops, list):
        for op in ops:
            path = op.get("path", "") if isinstance(op, dict) else ""
            top = path.strip("/").split("/")[0] if isinstance(path, str) else ""
            if top and top not in PATCHABLE:
                raise (NotImplementedHere(f"/{top}: {NOT_KEPT[top]}") if top in NOT_KEPT else
                       IronicError(400, f"/{top} cannot be changed through this API (patchable: "
                                        f"{', '.join('/' + p for p in PATCHABLE)})"))
    # Applied to the node as it is inside the write: two clients patching one node both land.
    r = await request.app[WRITES].run(service(request).update, scope_of(request), request.match_info["node"],
                                      partial(_patched, ops))
    return web.json_response(render(request, r, provision(r), power_of(r)))


def _patched(ops: Any, r: NodeRecord) -> NodeFields:
    """What JSON patch ``ops`` changes of node ``r``; IronicError (nothing written) when it cannot apply."""
    current = {"extra": r.extra, "instance_info": r.instance_info, "properties": properties(r),
               "driver_info": dict(r.driver_info)}
    new, touched = apply(current, ops)
    changes: dict[str, Any] = {}
    if "extra" in touched:
        changes["extra"] = new["extra"]
    if "instance_info" in touched:
        changes["instance_info"] = new["instance_info"]
    if "properties" in touched:
        cpus, memory_gib, rest = split_properties(new["properties"])
        changes.update(properties=rest, cpus=cpus, memory_gib=memory_gib, clear_cpus=cpus is None,
                       clear_memory=memory_gib is None)
    if "driver_info" in touched:
        bmc_keys = drivers.BMC_KEYS & (set(new["driver_info"]) ^ set(current["driver_info"])
                                       | {k for k in new["driver_info"] if new["driver_info"][k]
                                          != current["driver_info"].get(k)})
        if bmc_keys:
            raise NotImplementedHere(f"{', '.join(sorted(bmc_keys))}: a blade's BMC is set when it is enrolled; "
                                     "delete and create the node to change it")
        changes["driver_info"] = drivers.without_secrets(new["driver_info"])
    return NodeFields(**changes)


async def delete_node(request: web.Request) -> web.Response:
    await request.app[WRITES].run(service(request).delete, scope_of(request), request.match_info["node"])
    return web.Response(status=204)
