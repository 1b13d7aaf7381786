"""GET /vm-hosts and /vm-hosts/{name}: what is enrolled, for the appliance's callers only; a
failover domain's VM hosts through /failover-domains."""

from __future__ import annotations

from pathlib import Path

from appliance.drivers.libvirt.domain import Slot
from appliance.secrets import SecretBox
from appliance.services.vm_hosts import VmHostService, VmHostSpec
from tests.api.conftest import Api


def _enroll(api: Api, tmp_path_key: SecretBox) -> None:
    def define(uri: str, slot: Slot) -> str:
        return "defined"

    VmHostService(api.store, tmp_path_key, define=define, undefine=lambda uri, name: "gone").enroll(
        VmHostSpec(name="hv1", uri="qemu+ssh://root@hv1/system", slots=2))


async def test_vm_hosts_are_shown_to_the_appliance_and_hidden_from_tenants(api: Api, tmp_path: Path) -> None:
    _enroll(api, SecretBox(tmp_path / "k"))
    c = api.client
    listed = await (await c.get("/api/v1/vm-hosts", headers=api.auth("viewer"))).json()
    assert [(h["name"], [b["name"] for b in h["blades"]]) for h in listed["items"]] == [("hv1", ["hv1-01", "hv1-02"])]
    one = await c.get("/api/v1/vm-hosts/hv1", headers=api.auth("viewer"))
    assert one.status == 200 and (await one.json())["uri"] == "qemu+ssh://root@hv1/system"
    assert (await c.get("/api/v1/vm-hosts/hv9", headers=api.auth("viewer"))).status == 404
    assert (await c.get("/api/v1/vm-hosts", headers=api.auth("acme-op"))).status == 403
    blade = await (await c.get("/api/v1/blades/hv1-01", headers=api.auth("viewer"))).json()
    assert blade["driver"] == "libvirt"

    made = await c.post("/api/v1/failover-domains", json={"name": "pv", "vmHosts": ["hv1"]},
                        headers=api.auth("admin"))
    assert made.status == 201 and (await made.json())["vmHosts"] == ["hv1"]
    bad = await c.post("/api/v1/failover-domains", json={"name": "pv2", "vmHosts": ["hv9"]},
                       headers=api.auth("admin"))
    assert bad.status == 400 and "hv9" in await bad.text()
    cleared = await c.patch("/api/v1/failover-domains/pv", json={"vmHosts": []}, headers=api.auth("admin"))
    assert (await cleared.json())["vmHosts"] == []
