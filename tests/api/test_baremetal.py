"""The Bare Metal (Ironic-compatible) API in process: versions, auth, errors, nodes, states, ports,
drivers, and a tenant's view. (The real clients drive a real ``anvil serve`` in
tests/integration/baremetal/test_ironic_clients.py.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from appliance.services.baremetal import HOLD_REASON
from appliance.store.tables import BladeNicRow, BladeRow, JobRow, ProfileRow
from tests.api.conftest import Api

V1 = "/baremetal/v1"
LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}


def h(api: Api, who: str = "admin", version: str | None = "latest") -> dict[str, str]:
    out = {"X-Auth-Token": api.tokens[who]}
    if version is not None:
        out["X-OpenStack-Ironic-API-Version"] = version
    return out


def fault(body: dict[str, Any]) -> str:
    inner = json.loads(body["error_message"])
    assert set(inner) == {"faultstring", "faultcode", "debuginfo"}
    return str(inner["faultstring"])


async def state_of(api: Api, node: str, who: str = "admin") -> dict[str, Any]:
    resp = await api.client.get(f"{V1}/nodes/{node}", headers=h(api, who))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def wait_state(api: Api, node: str, want: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        got = await state_of(api, node)
        if got["provision_state"] == want or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert got["provision_state"] == want, got
    return got


async def create(api: Api, name: str, **extra: Any) -> dict[str, Any]:
    resp = await api.client.post(f"{V1}/nodes", json={"name": name, "driver": "fake-hardware", **extra},
                                 headers=h(api))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


# -- versions, auth, errors ----------------------------------------------------------------

async def test_version_documents_are_public_and_state_the_microversion_range(api: Api) -> None:
    c = api.client
    root = await c.get("/baremetal")
    body = await root.json()
    assert root.status == 200 and body["default_version"]["version"] == "1.73"
    assert body["versions"][0]["min_version"] == "1.1" and body["versions"][0]["links"][0]["href"].endswith(
        "/baremetal/v1/")
    v1 = await (await c.get(V1)).json()
    assert v1["id"] == "v1" and v1["nodes"][0]["href"].endswith("/baremetal/v1/nodes")
    assert root.headers["X-OpenStack-Ironic-API-Minimum-Version"] == "1.1"
    assert root.headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.73"


async def test_microversions_are_negotiated_as_ironic_does(api: Api) -> None:
    c = api.client
    plain = await c.get(f"{V1}/nodes", headers=h(api, version=None))
    assert plain.status == 200 and plain.headers["X-OpenStack-Ironic-API-Version"] == "1.1"
    latest = await c.get(f"{V1}/nodes", headers=h(api))
    assert latest.headers["X-OpenStack-Ironic-API-Version"] == "1.73"
    too_new = await c.get(f"{V1}/nodes", headers=h(api, version="1.115"))
    assert too_new.status == 406 and too_new.headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.73"
    assert "[1.1, 1.73]" in fault(await too_new.json())
    bad = await c.get(f"{V1}/nodes", headers=h(api, version="one"))
    assert bad.status == 400 and "X-OpenStack-Ironic-API-Version" in fault(await bad.json())
    # A field later versions added is not served below them.
    old = await (await c.get(f"{V1}/nodes/b01", headers=h(api, version="1.40"))).json()
    assert "fault" not in old and "bios_interface" in old
    assert "fault" in await state_of(api, "b01")


async def test_every_route_but_the_version_documents_needs_an_anvil_token(api: Api) -> None:
    c = api.client
    none = await c.get(f"{V1}/nodes", headers=LATEST)
    assert none.status == 401 and "X-Auth-Token" in fault(await none.json())
    wrong = await c.get(f"{V1}/nodes", headers={**LATEST, "X-Auth-Token": "anvil_nope"})
    assert wrong.status == 401
    bearer = await c.get(f"{V1}/nodes", headers={**LATEST, "Authorization": f"Bearer {api.tokens['viewer']}"})
    assert bearer.status == 200
    viewer = await c.post(f"{V1}/nodes", json={"name": "x", "driver": "fake-hardware"}, headers=h(api, "viewer"))
    assert viewer.status == 403 and "admin role" in fault(await viewer.json())


async def test_ironic_features_anvil_does_not_map_are_refused_with_501_and_why(api: Api) -> None:
    c = api.client
    for path, word in (("/chassis", "chassis"), ("/portgroups", "port groups"), ("/allocations", "assign"),
                       ("/nodes/b03/vifs", "VLANs"), ("/nodes/b03/management/boot_device", "stamp")):
        resp = await c.get(V1 + path, headers=h(api))
        assert resp.status == 501, path
        assert word in fault(await resp.json())
    missing = await c.get(f"{V1}/nonsense", headers=h(api))
    assert missing.status == 404


# -- nodes ---------------------------------------------------------------------------------

async def test_a_node_is_created_in_enroll_from_1_11_and_available_before(api: Api) -> None:
    node = await create(api, "n1", properties={"cpus": 24, "memory_mb": 98304, "cpu_arch": "x86_64"},
                        extra={"rack": "r1"})
    assert node["provision_state"] == "enroll" and node["driver"] == "fake-hardware"
    assert node["properties"] == {"cpus": 24, "memory_mb": 98304, "cpu_arch": "x86_64"}
    assert node["extra"] == {"rack": "r1"} and node["maintenance"] is False
    with api.store.read() as s:
        blade = s.scalar(select(BladeRow).where(BladeRow.name == "n1"))
        assert blade is not None
        assert (blade.state, blade.state_reason, blade.cpus, blade.memory_gib, blade.uuid) == (
            "maintenance", HOLD_REASON, 24, 96, node["uuid"])
    old = await api.client.post(f"{V1}/nodes", json={"name": "n2", "driver": "fake-hardware"},
                                headers=h(api, version="1.10"))
    assert old.status == 201 and (await old.json())["provision_state"] == "available"
    oldest = await api.client.post(f"{V1}/nodes", json={"name": "n3", "driver": "fake-hardware"},
                                   headers=h(api, version="1.1"))
    assert (await oldest.json())["provision_state"] is None, "before 1.2, available was None"


async def test_a_node_is_created_with_its_bmc_from_driver_info(api: Api) -> None:
    node = await create(api, "rf1", driver="redfish", uuid="9c0c43e3-28d7-4b2e-9a25-aa0000000001",
                        driver_info={"redfish_address": "https://10.0.0.5:8443", "redfish_system_id":
                                     "/redfish/v1/Systems/1", "redfish_username": "root",
                                     "redfish_password": "calvin", "redfish_verify_ca": "False",
                                     "deploy_kernel": "http://x/k"})
    assert node["uuid"] == "9c0c43e3-28d7-4b2e-9a25-aa0000000001"
    assert node["driver_info"] == {"redfish_address": "https://10.0.0.5:8443", "redfish_system_id":
                                   "/redfish/v1/Systems/1", "redfish_username": "root",
                                   "redfish_password": "******", "redfish_verify_ca": False,
                                   "deploy_kernel": "http://x/k"}
    assert "calvin" not in json.dumps(node)
    with api.store.read() as s:
        blade = s.scalar(select(BladeRow).where(BladeRow.name == "rf1"))
        assert blade is not None and blade.bmc_address == "redfish+https://10.0.0.5:8443/redfish/v1/Systems/1"
        assert blade.verify_tls is False and "calvin" not in blade.password_enc
    ipmi = await create(api, "ip1", driver="ipmi", driver_info={"ipmi_address": "10.0.0.6", "ipmi_username": "a",
                                                                "ipmi_password": "b"})
    assert ipmi["driver_info"]["ipmi_address"] == "10.0.0.6" and ipmi["driver_info"]["ipmi_port"] == 623


async def test_bad_nodes_are_refused_naming_what_is_wrong_and_nothing_is_written(api: Api) -> None:
    c = api.client
    cases = [({"name": "n1", "driver": "nope"}, 400, "not enabled"),
             ({"name": "Bad_Name", "driver": "fake-hardware"}, 400, "blade name"),
             ({"name": "n1", "driver": "redfish", "driver_info": {"redfish_address": "https://x"}}, 400,
              "redfish_system_id"),
             ({"name": "n1", "driver": "fake-hardware", "resource_class": "baremetal"}, 501, "requirements"),
             ({"name": "n1", "driver": "fake-hardware", "bogus": 1}, 400, "bogus"),
             ({"name": "b01", "driver": "fake-hardware"}, 409, "already enrolled"),
             ({"name": "n1", "driver": "fake-hardware", "properties": {"cpus": "many"}}, 400, "properties.cpus")]
    for body, status, words in cases:
        resp = await c.post(f"{V1}/nodes", json=body, headers=h(api))
        assert resp.status == status, (body, await resp.text())
        assert words in fault(await resp.json()), body
    with api.store.read() as s:
        assert s.scalar(select(BladeRow).where(BladeRow.name == "n1")) is None


async def test_lists_page_with_next_links_and_select_fields(api: Api) -> None:
    c = api.client
    first = await (await c.get(f"{V1}/nodes?limit=3", headers=h(api))).json()
    assert [n["name"] for n in first["nodes"]] == ["b01", "b02", "b03"]
    assert set(first["nodes"][0]) == {"uuid", "name", "instance_uuid", "power_state", "provision_state",
                                      "maintenance", "links"}
    nxt = first["next"]
    assert nxt.startswith("http") and "marker=" in nxt
    second = await (await c.get(nxt[nxt.index("/baremetal"):], headers=h(api))).json()
    assert [n["name"] for n in second["nodes"]] == ["b04"] and "next" not in second
    fields = await (await c.get(f"{V1}/nodes?fields=name,provision_state", headers=h(api))).json()
    assert set(fields["nodes"][0]) == {"name", "provision_state", "links"}
    detail = await (await c.get(f"{V1}/nodes/detail", headers=h(api))).json()
    assert "driver_info" in detail["nodes"][0]
    active = await (await c.get(f"{V1}/nodes?provision_state=active", headers=h(api))).json()
    assert {n["name"] for n in active["nodes"]} == {"b01", "b02"}
    assert all(n["instance_uuid"] for n in active["nodes"])
    free = await (await c.get(f"{V1}/nodes?associated=false", headers=h(api))).json()
    assert {n["name"] for n in free["nodes"]} == {"b03", "b04"}
    by_name = await (await c.get(f"{V1}/nodes?sort_key=name&sort_dir=desc&limit=1", headers=h(api))).json()
    assert by_name["nodes"][0]["name"] == "b04"
    bad = await c.get(f"{V1}/nodes?resource_class=x", headers=h(api))
    assert bad.status == 400 and "resource_class" in fault(await bad.json())


async def test_a_node_list_is_read_rendered_and_encoded_off_the_event_loop(api: Api,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A page holds up to 1,000 nodes: rendered on the event loop it held every other request
    # (the list pages of /api/v1 too) for tens of milliseconds.
    from appliance.api.ironic import nodes

    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []
    real = nodes.provision

    def provision(r: Any, **kw: Any) -> Any:
        seen.append(threading.current_thread())
        return real(r, **kw)

    monkeypatch.setattr(nodes, "provision", provision)
    for path in ("/nodes?limit=1000&fields=name,provision_state", "/nodes/detail", "/nodes?limit=2"):
        resp = await api.client.get(V1 + path, headers=h(api))
        assert resp.status == 200 and resp.content_type == "application/json"
        assert (await resp.json())["nodes"]
    assert seen and loop_thread not in seen


async def test_patch_changes_extra_properties_and_instance_info(api: Api) -> None:
    c = api.client
    resp = await c.patch(f"{V1}/nodes/b03", json=[
        {"op": "add", "path": "/extra/owner_team", "value": "infra"},
        {"op": "replace", "path": "/properties/cpus", "value": 48},
        {"op": "add", "path": "/properties/capabilities", "value": "boot_mode:bios"},
        {"op": "add", "path": "/instance_info/anvil_profile", "value": "acme/web-02"}], headers=h(api))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["extra"] == {"owner_team": "infra"} and body["properties"]["cpus"] == 48
    assert body["instance_info"] == {"anvil_profile": "acme/web-02"}
    with api.store.read() as s:
        assert s.scalar(select(BladeRow.cpus).where(BladeRow.name == "b03")) == 48
    bmc = await c.patch(f"{V1}/nodes/b03", json=[{"op": "add", "path": "/driver_info/redfish_address",
                                                  "value": "https://x"}], headers=h(api))
    assert bmc.status == 501 and "enrolled" in fault(await bmc.json())
    name = await c.patch(f"{V1}/nodes/b03", json=[{"op": "replace", "path": "/name", "value": "zz"}],
                         headers=h(api))
    assert name.status == 400
    uuid = await c.patch(f"{V1}/nodes/b03", json=[{"op": "add", "path": "/instance_uuid", "value": "x"}],
                         headers=h(api))
    assert uuid.status == 501


async def test_manage_inspect_and_provide_move_a_node_to_available(api: Api) -> None:
    c = api.client
    await create(api, "n1")
    refused = await c.put(f"{V1}/nodes/n1/states/provision", json={"target": "provide"}, headers=h(api))
    assert refused.status == 400 and 'state "enroll"' in fault(await refused.json())
    resp = await c.put(f"{V1}/nodes/n1/states/provision", json={"target": "manage"}, headers=h(api))
    assert resp.status == 202
    await wait_state(api, "n1", "manageable")
    resp = await c.put(f"{V1}/nodes/n1/states/provision", json={"target": "inspect"}, headers=h(api))
    assert resp.status == 202
    await wait_state(api, "n1", "manageable")
    resp = await c.put(f"{V1}/nodes/n1/states/provision", json={"target": "provide"}, headers=h(api))
    assert resp.status == 202
    node = await wait_state(api, "n1", "available")
    assert node["power_state"] == "power off" and node["maintenance"] is False
    with api.store.read() as s:
        assert s.scalar(select(BladeRow.state).where(BladeRow.name == "n1")) == "spare"
    # From available, manage only takes the blade out of the spares.
    await c.put(f"{V1}/nodes/n1/states/provision", json={"target": "manage"}, headers=h(api))
    assert (await state_of(api, "n1"))["provision_state"] == "manageable"
    with api.store.read() as s:
        assert s.scalar(select(BladeRow.state).where(BladeRow.name == "n1")) == "maintenance"


async def test_a_bmc_that_refuses_the_credentials_leaves_the_node_in_enroll_with_the_error(api: Api) -> None:
    from appliance.api.keys import HARDWARE
    from appliance.drivers.errors import BmcAuthFailed

    await create(api, "n1")
    hw = api.client.server.app[HARDWARE]
    driver, _ = hw.bmc("n1")
    driver.fail("fake://n1", "get_power", BmcAuthFailed("n1", "fake", "get_power", "credentials refused"))  # type: ignore[attr-defined]
    await api.client.put(f"{V1}/nodes/n1/states/provision", json={"target": "manage"}, headers=h(api))
    for _ in range(200):
        node = await state_of(api, "n1")
        if node["last_error"]:
            break
        await asyncio.sleep(0.05)
    assert node["provision_state"] == "enroll" and "credentials refused" in node["last_error"]


async def test_deploy_stamps_the_profile_instance_info_names_onto_this_blade(api: Api) -> None:
    c = api.client
    await c.patch(f"{V1}/nodes/b03", json=[{"op": "add", "path": "/instance_info/anvil_profile",
                                            "value": "acme/web-02"}], headers=h(api))
    resp = await c.put(f"{V1}/nodes/b03/states/provision", json={"target": "deploy"}, headers=h(api))
    assert resp.status == 202, await resp.text()
    node = await state_of(api, "b03")
    assert (node["provision_state"], node["target_provision_state"]) == ("deploying", "active")
    with api.store.read() as s:
        job = s.scalar(select(JobRow).where(JobRow.kind == "stamp"))
        assert job is not None and job.params["blade"] == "b03" and job.subject == "profile acme/web-02"
    again = await c.put(f"{V1}/nodes/b03/states/provision", json={"target": "active"}, headers=h(api))
    assert again.status == 409, "a node with a job in progress is locked"
    old = await c.put(f"{V1}/nodes/b04/states/provision", json={"target": "deploy"}, headers=h(api, version="1.72"))
    assert old.status == 406


async def test_deploy_of_a_kernel_and_ramdisk_makes_a_profile_for_the_node(api: Api) -> None:
    c = api.client
    await c.patch(f"{V1}/nodes/b04", json=[
        {"op": "add", "path": "/instance_info/kernel", "value": "lab/vmlinuz"},
        {"op": "add", "path": "/instance_info/ramdisk", "value": "lab/initrd.img"},
        {"op": "add", "path": "/instance_info/kernel_append_params", "value": "console=ttyS0"}], headers=h(api))
    resp = await c.put(f"{V1}/nodes/b04/states/provision", json={"target": "active"}, headers=h(api))
    assert resp.status == 202, await resp.text()
    with api.store.read() as s:
        made = s.scalar(select(ProfileRow).where(ProfileRow.name == "bm-b04"))
        assert made is not None and made.tenant == "default"
        assert made.document["spec"]["boot"] == {"mode": "uefi", "source": {
            "type": "image", "kernel": "lab/vmlinuz", "initrd": "lab/initrd.img", "cmdline": "console=ttyS0"}}


async def test_deploy_refuses_a_whole_disk_image_and_bad_instance_info(api: Api) -> None:
    c = api.client
    cases = [({"image_source": "http://127.0.0.1/img.qcow2"}, 501, "writes no disks"),
             ({}, 400, "anvil_profile"),
             ({"kernel": "/etc/passwd", "ramdisk": "x"}, 400, "instance_info.kernel"),
             ({"anvil_profile": "a/b/c"}, 400, "TENANT/NAME"),
             ({"anvil_profile": "acme/zz-99"}, 404, "")]
    for info, status, words in cases:
        await c.patch(f"{V1}/nodes/b04", json=[{"op": "replace", "path": "/instance_info", "value": info}],
                      headers=h(api))
        resp = await c.put(f"{V1}/nodes/b04/states/provision", json={"target": "active"}, headers=h(api))
        assert resp.status == status, (info, await resp.text())
        assert words in fault(await resp.json())
    config = await c.put(f"{V1}/nodes/b04/states/provision", json={"target": "active", "configdrive": "x"},
                         headers=h(api))
    assert config.status == 501
    for verb in ("clean", "rescue", "adopt", "rebuild"):
        resp = await c.put(f"{V1}/nodes/b04/states/provision", json={"target": verb}, headers=h(api))
        assert resp.status == 501, verb
    with api.store.read() as s:
        assert s.scalar(select(JobRow.id)) is None


async def test_undeploy_releases_the_profile_live_on_the_node(api: Api) -> None:
    resp = await api.client.put(f"{V1}/nodes/b01/states/provision", json={"target": "undeploy"}, headers=h(api))
    assert resp.status == 202, await resp.text()
    node = await state_of(api, "b01")
    assert (node["provision_state"], node["target_provision_state"]) == ("deleting", "available")
    with api.store.read() as s:
        job = s.scalar(select(JobRow).where(JobRow.kind == "unstamp"))
        assert job is not None and job.subject == "profile acme/web-01"


async def test_power_goes_to_the_blades_bmc_and_show_reads_it_back(api: Api) -> None:
    c = api.client
    for target, want in (("power on", "power on"), ("power off", "power off"), ("rebooting", "power off")):
        resp = await c.put(f"{V1}/nodes/b03/states/power", json={"target": target}, headers=h(api))
        assert resp.status == 202
        if target != "rebooting":
            assert (await state_of(api, "b03"))["power_state"] == want
    states = await (await c.get(f"{V1}/nodes/b03/states", headers=h(api))).json()
    assert states["power_state"] in ("power on", "power off") and states["provision_state"] == "available"
    bad = await c.put(f"{V1}/nodes/b03/states/power", json={"target": "on"}, headers=h(api))
    assert bad.status == 400


async def test_maintenance_is_anvils_maintenance_with_the_reason(api: Api) -> None:
    c = api.client
    resp = await c.put(f"{V1}/nodes/b03/maintenance", json={"reason": "DIMM swap"}, headers=h(api))
    assert resp.status == 202
    node = await state_of(api, "b03")
    assert (node["maintenance"], node["maintenance_reason"], node["provision_state"]) == (True, "DIMM swap",
                                                                                         "available")
    with api.store.read() as s:
        assert s.scalar(select(BladeRow.state).where(BladeRow.name == "b03")) == "maintenance"
    await c.delete(f"{V1}/nodes/b03/maintenance", headers=h(api))
    assert (await state_of(api, "b03"))["maintenance"] is False
    busy = await c.put(f"{V1}/nodes/b01/maintenance", json={"reason": "x"}, headers=h(api))
    assert busy.status == 409


async def test_delete_removes_a_node_that_runs_nothing(api: Api) -> None:
    c = api.client
    busy = await c.delete(f"{V1}/nodes/b01", headers=h(api))
    assert busy.status == 409
    assert (await c.delete(f"{V1}/nodes/b04", headers=h(api))).status == 204
    assert (await c.get(f"{V1}/nodes/b04", headers=h(api))).status == 404


# -- ports and drivers ----------------------------------------------------------------------

async def test_ports_are_the_blades_nics(api: Api) -> None:
    c = api.client
    listed = await (await c.get(f"{V1}/ports?detail=true", headers=h(api))).json()
    assert {p["address"] for p in listed["ports"]} == {f"aa:00:00:00:00:0{i}" for i in range(1, 5)}
    b03 = await state_of(api, "b03")
    resp = await c.post(f"{V1}/ports", json={"node_uuid": b03["uuid"], "address": "52:54:00:AA:00:01"},
                        headers=h(api))
    port = await resp.json()
    assert resp.status == 201, port
    assert port["address"] == "52:54:00:aa:00:01" and port["node_uuid"] == b03["uuid"]
    shown = await (await c.get(f"{V1}/ports/{port['uuid']}", headers=h(api))).json()
    assert shown["uuid"] == port["uuid"]
    mine = await (await c.get(f"{V1}/nodes/b03/ports", headers=h(api))).json()
    assert [p["address"] for p in mine["ports"]] == ["aa:00:00:00:00:03", "52:54:00:aa:00:01"]
    by_node = await (await c.get(f"{V1}/ports?node={b03['uuid']}", headers=h(api))).json()
    assert len(by_node["ports"]) == 2
    with api.store.read() as s:
        nics = list(s.scalars(select(BladeNicRow.name).join(BladeRow).where(BladeRow.name == "b03")
                              .order_by(BladeNicRow.position)))
        assert nics == ["eth0", "eth1"]
    dup = await c.post(f"{V1}/ports", json={"node_uuid": "b04", "address": "52:54:00:aa:00:01"}, headers=h(api))
    assert dup.status == 409
    assert (await c.delete(f"{V1}/ports/{port['uuid']}", headers=h(api))).status == 204
    assert (await c.get(f"{V1}/ports/{port['uuid']}", headers=h(api))).status == 404
    extra = await c.post(f"{V1}/ports", json={"node_uuid": "b04", "address": "52:54:00:aa:00:02",
                                              "physical_network": "p"}, headers=h(api))
    assert extra.status == 501


async def test_drivers_are_the_installed_bmc_drivers_by_ironic_names(api: Api) -> None:
    body = await (await api.client.get(f"{V1}/drivers", headers=h(api))).json()
    names = {d["name"] for d in body["drivers"]}
    assert {"fake-hardware", "ipmi", "redfish"} <= names and "fake" not in names
    one = await api.client.get(f"{V1}/drivers/fake-hardware", headers=h(api))
    assert one.status == 200
    assert (await api.client.get(f"{V1}/drivers/nope", headers=h(api))).status == 404


# -- a tenant's view ------------------------------------------------------------------------

async def test_a_tenant_sees_and_undeploys_only_the_nodes_its_profiles_run_on(api: Api) -> None:
    c = api.client
    listed = await (await c.get(f"{V1}/nodes/detail", headers=h(api, "acme-op"))).json()
    assert [n["name"] for n in listed["nodes"]] == ["b01"] and listed["nodes"][0]["owner"] == "acme"
    ports = await (await c.get(f"{V1}/ports", headers=h(api, "acme-op"))).json()
    assert [p["address"] for p in ports["ports"]] == ["aa:00:00:00:00:01"]
    theirs = await c.get(f"{V1}/nodes/b02", headers=h(api, "acme-op"))
    missing = await c.get(f"{V1}/nodes/b99", headers=h(api, "acme-op"))
    assert theirs.status == missing.status == 404
    assert fault(await theirs.json()).replace("b02", "X") == fault(await missing.json()).replace("b99", "X")
    create_ = await c.post(f"{V1}/nodes", json={"name": "t1", "driver": "fake-hardware"}, headers=h(api, "acme-op"))
    assert create_.status == 403
    manage = await c.put(f"{V1}/nodes/b01/states/provision", json={"target": "manage"}, headers=h(api, "acme-op"))
    assert manage.status == 403
    undeploy = await c.put(f"{V1}/nodes/b01/states/provision", json={"target": "undeploy"},
                           headers=h(api, "acme-op"))
    assert undeploy.status == 202


async def test_hostile_bodies_are_refused_briefly_in_ironics_format(api: Api) -> None:
    c = api.client
    deep = "[" * 5000 + "]" * 5000
    for body in (deep, '{"name": "a", "name": "b", "driver": "fake-hardware"}', "not json", ""):
        for method, path in (("POST", f"{V1}/nodes"), ("PATCH", f"{V1}/nodes/b03"), ("POST", f"{V1}/ports"),
                             ("PUT", f"{V1}/nodes/b03/states/provision")):
            resp = await c.request(method, path, data=body, headers={**h(api), "Content-Type": "application/json"})
            assert resp.status == 400, (method, path, body[:20], await resp.text())
            assert fault(await resp.json())
