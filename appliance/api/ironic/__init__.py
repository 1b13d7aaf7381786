"""The Bare Metal API: Ironic's REST API (``/baremetal``, ``/baremetal/v1``, versions 1.1-1.73)
on the API port, so Ironic's clients (python-ironicclient's ``baremetal``, openstacksdk) drive
Anvil unchanged. Ironic's field names and states live at this edge only; inside, it is Anvil's
model (DESIGN §8).

Mapping
-------
========================  ===================================================================
Ironic                    Anvil
========================  ===================================================================
node                      a blade (``uuid``: the blade's stable UUID; ``name``: its name)
node create               enrol a blade; ``driver_info`` is its BMC (appliance.api.ironic.drivers:
                          ``ipmi``, ``redfish``, ``fake-hardware`` = the ``fake`` driver, or any
                          driver with ``anvil_bmc``); from 1.11 it starts in ``enroll``, held in
                          maintenance out of placement
properties                ``cpus``, ``memory_mb`` are the blade's CPUs and memory; other keys are kept
extra, instance_info      kept as given (JSON Patch on both, and on ``properties``)
manage                    enroll → verifying → manageable: the BMC answers with these credentials
                          and the blade's facts are read into the inventory (``anvil blade inspect``)
inspect                   manageable → inspecting → manageable: the facts again
provide                   manageable → cleaning → available: powered off (confirmed), then a spare
available                 a spare blade: placement may take it
deploy / active           a stamp of the profile ``instance_info.anvil_profile`` names, or of one made
                          for the node from ``instance_info.kernel``/``ramdisk`` (network boot),
                          onto this blade: deploying → wait call-back (the image's boot signal) →
                          active; deploy failed when the stamp rolls back
undeploy / deleted        a release: deleting → cleaning → available
maintenance               Anvil maintenance with an admin's reason; a failed or fenced blade reads as
                          maintenance with ``fault``
power states              set through the driver (power on, power off, rebooting, soft power off);
                          a show reads the BMC, a list the monitor's last reading (or ``power on``
                          for a blade stamped since)
instance_uuid, owner      the live profile's UUID and tenant
port                      a blade NIC (by burned-in MAC); ``local_link_connection`` is its cabling
driver                    an installed BMC driver
========================  ===================================================================

States and transitions are named as Ironic names them (appliance.api.ironic.states); errors come
in Ironic's error document (appliance.api.ironic.errors). A tenant-scoped token sees only the
nodes its profiles run on, and may only undeploy and power them.

Refused with 501, and why
-------------------------
A whole-disk ``image_source`` (Anvil writes no disks: its blades boot from the network or a LUN),
config drives and deploy steps, ``clean``/``rescue``/``adopt``/``rebuild``/``abort``/``service``
(Anvil has no such steps), soft rebooting, fields Anvil does not keep (``resource_class``,
``traits``, ``owner``, ``chassis_uuid``, ``instance_uuid``…: placement goes by a profile's
requirements and a node's tenant is its profile's), changing a BMC after enrolment, and the
resources Anvil has no counterpart for: chassis, port groups, volumes, allocations, deploy
templates, conductors, the ramdisk agent's lookup and heartbeat, events, VIFs, traits, BIOS,
consoles, boot devices, vendor passthru, history and inventory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from appliance.api.ironic import drivers, nodes, ports, provision
from appliance.api.ironic.edge import Route, register
from appliance.api.ironic.errors import IronicError, NotImplementedHere
from appliance.api.ironic.provision import WORK, NodeWork
from appliance.api.ironic.versions import root_document, v1_document

# Ironic resources with no counterpart in Anvil: 501 with the reason, never a bare 404.
NOT_MAPPED = {
    "chassis": "Anvil has no chassis objects (a blade's chassis is part of its inventory)",
    "portgroups": "Anvil has no port groups", "volume": "Anvil's boot LUNs belong to profiles",
    "allocations": "placement goes by a profile's requirements (POST /api/v1/profiles/NAME/assign)",
    "deploy_templates": "Anvil's stamp has fixed steps", "runbooks": "Anvil runs no runbooks",
    "conductors": "one appliance is one conductor", "lookup": "Anvil runs no ramdisk agent",
    "heartbeat": "Anvil runs no ramdisk agent", "continue_inspection": "Anvil runs no ramdisk agent",
    "events": "Anvil takes no network events", "shards": "Anvil has no shards",
    "inspection_rules": "Anvil's inspection has no rules",
    "vifs": "a profile's NICs carry their VLANs", "traits": "placement goes by a profile's requirements",
    "bios": "a profile's bios settings are applied by the stamp", "management": "boot devices are set by the stamp",
    "vendor_passthru": "not supported", "history": "GET /api/v1/audit keeps Anvil's history",
    "inventory": "the blade's facts are in GET /api/v1/blades/NAME", "firmware": "not supported",
    "vmedia": "Anvil boots over the network", "children": "not supported", "console": "not supported",
    "raid": "not supported", "boot_mode": "a profile's boot mode is applied by the stamp",
    "secure_boot": "not supported", "indicators": "not supported", "bios_registry": "not supported",
}


async def root(request: web.Request) -> web.Response:
    return web.json_response(root_document(request))


async def v1(request: web.Request) -> web.Response:
    return web.json_response(v1_document(request))


async def anything_else(request: web.Request) -> web.Response:
    words = set(request.match_info["tail"].split("/"))
    for word, why in NOT_MAPPED.items():
        if word in words:
            raise NotImplementedHere(f"{request.method} {request.path}: {why}")
    raise IronicError(404, f"The resource could not be found: {request.method} {request.path}")


N = "/v1/nodes/{node}"
ROUTES: list[Route] = [
    Route("GET", "", root, "API root: versions", public=True),
    Route("GET", "/v1", v1, "Version 1: resources and microversions", public=True),
    Route("GET", "/v1/nodes", nodes.list_nodes, "List nodes"),
    Route("GET", "/v1/nodes/detail", nodes.list_detail, "List nodes with every field"),
    Route("POST", "/v1/nodes", nodes.create_node, "Enrol a blade as a node", role="admin", appliance_wide=True),
    Route("GET", N, nodes.get_node, "Show a node (power read from its BMC)"),
    Route("PATCH", N, nodes.patch_node, "Change extra, properties, instance_info", role="operator",
          appliance_wide=True),
    Route("DELETE", N, nodes.delete_node, "Delete a node that runs no profile", role="admin", appliance_wide=True),
    Route("GET", N + "/states", provision.get_states, "A node's states"),
    Route("PUT", N + "/states/provision", provision.set_provision, "manage, inspect, provide, deploy, undeploy",
          role="operator"),
    Route("PUT", N + "/states/power", provision.set_power, "Power on, off, reboot", role="operator"),
    Route("PUT", N + "/maintenance", provision.set_maintenance, "Into maintenance", role="operator",
          appliance_wide=True),
    Route("DELETE", N + "/maintenance", provision.unset_maintenance, "Out of maintenance", role="operator",
          appliance_wide=True),
    Route("GET", N + "/validate", provision.validate, "Which interfaces would work"),
    Route("GET", N + "/ports", ports.node_ports, "A node's ports"),
    Route("GET", N + "/ports/detail", ports.node_ports_detail, "A node's ports with every field"),
    Route("GET", "/v1/ports", ports.list_ports, "List ports"),
    Route("GET", "/v1/ports/detail", ports.list_detail, "List ports with every field"),
    Route("POST", "/v1/ports", ports.create_port, "Add a NIC to a blade", role="admin", appliance_wide=True),
    Route("GET", "/v1/ports/{port}", ports.get_port, "Show a port"),
    Route("DELETE", "/v1/ports/{port}", ports.delete_port, "Remove a NIC from a blade that runs no profile",
          role="admin", appliance_wide=True),
    Route("GET", "/v1/drivers", drivers.list_drivers, "List drivers"),
    Route("GET", "/v1/drivers/{driver}", drivers.get_driver, "Show a driver"),
    Route("*", "/{tail:.*}", anything_else, "Everything else: 501 for Ironic features Anvil does not map, else 404"),
]


def setup_ironic(app: web.Application) -> None:
    register(app, ROUTES)

    async def work(app: web.Application) -> AsyncIterator[None]:
        app[WORK] = NodeWork()
        yield
        await app[WORK].close()

    app.cleanup_ctx.append(work)


__all__ = ["ROUTES", "Route", "setup_ironic"]
