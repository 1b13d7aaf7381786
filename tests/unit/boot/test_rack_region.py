"""Rack controllers on the region (appliance.boot.region, appliance.services.racks), against a real
aiohttp server: a rack token sees only its own rack's blades — another rack's blade is a 404 like a
machine that does not exist, its boot token counts for nothing —, the appliance's own boot role no
longer serves a blade cabled to a rack, and a rack not heard from is shown down."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from appliance.boot.dhcp import Reservation, render_hosts
from appliance.boot.http import setup
from appliance.boot.region import setup_rack_api
from appliance.errors import Conflict, NotFound, ValidationError
from appliance.services.racks import RackService, health, rack_down_reason
from appliance.store.audit import Actor, acting_as
from appliance.store.tables import AuditRow, JobEventRow, RackRow, utcnow
from tests.unit.boot.conftest import Inventory, loopback_peers

A_BASE = "http://10.77.0.1:8080"
B_BASE = "http://10.78.0.1:8080"
WEB_MAC = "52:54:00:00:01:01"       # blade-1 (web-01), rack a
DB_MAC = "52:54:00:00:02:01"        # blade-2 (db-01), rack b


@pytest.fixture
def racks(inventory: Inventory) -> dict[str, str]:
    svc = RackService(inventory.store)
    _, a = svc.add("rack-a", ["10.77.0.0/24"])
    _, b = svc.add("rack-b", ["10.78.0.0/24"])
    svc.set_blade_rack("blade-1", "rack-a")
    svc.set_blade_rack("blade-2", "rack-b")
    return {"rack-a": a, "rack-b": b}


@pytest.fixture
async def region(inventory: Inventory, racks: dict[str, str], tmp_path: Path) -> AsyncIterator[TestClient]:
    images = tmp_path / "images"
    (images / "lab").mkdir(parents=True)
    (images / "lab" / "vmlinuz").write_bytes(b"kernel")
    app = web.Application()
    setup_rack_api(app, inventory.store, images, inventory.key)
    async with TestClient(TestServer(app)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def script(c: TestClient, token: str, mac: str, base: str = A_BASE) -> tuple[int, str]:
    resp = await c.get("/rack/v1/script", params={"mac": mac, "base": base, "mode": "agent"}, headers=bearer(token))
    return resp.status, await resp.text()


async def test_a_rack_token_reads_its_own_blades_script_and_nothing_of_another_racks(
        region: TestClient, racks: dict[str, str], inventory: Inventory) -> None:
    status, text = await script(region, racks["rack-a"], WEB_MAC)
    assert status == 200
    assert f"anvil.token={inventory.tokens['web-01']}" in text
    assert f"anvil.callback={A_BASE}/boot/callback" in text and f"{A_BASE}/boot/images/lab/vmlinuz" in text
    # rack-b's blade (burned-in MAC or the profile's MAC) through rack-a: exactly a machine nobody knows
    for mac in (DB_MAC, "02:a0:00:00:01:01"):
        status, text = await script(region, racks["rack-a"], mac)
        assert status == 404 and "blade-2" not in text and "db-01" not in text
    status, text = await script(region, racks["rack-b"], DB_MAC, B_BASE)
    assert status == 200 and "blade-2 boots profile acme/db-01" in text
    # a machine nobody knows is told to post its facts, through either rack
    status, text = await script(region, racks["rack-a"], "52:54:00:99:99:99")
    assert status == 200 and "/boot/discover" in text


async def test_rack_routes_need_a_rack_token(region: TestClient, inventory: Inventory) -> None:
    for headers in ({}, bearer("anvil-rack-forged"), bearer("not-even-a-rack-token")):
        resp = await region.get("/rack/v1/script", params={"mac": WEB_MAC, "base": A_BASE}, headers=headers)
        assert resp.status == 401
        assert inventory.tokens["web-01"] not in await resp.text()
        assert (await region.post("/rack/v1/heartbeat", json={"version": "x"}, headers=headers)).status == 401
        assert (await region.get("/rack/v1/images/lab/vmlinuz", headers=headers)).status == 401


async def test_another_racks_blade_token_counts_for_nothing(
        region: TestClient, racks: dict[str, str], inventory: Inventory) -> None:
    body = {"token": inventory.tokens["db-01"], "peer": "10.78.0.100", "peerMacs": [DB_MAC], "params": {}}
    resp = await region.post("/rack/v1/callback", json=body, headers=bearer(racks["rack-a"]))
    assert resp.status == 403
    # a peer the rack did not see with one of the blade's MACs is refused too
    wrong = {**body, "peerMacs": ["52:54:00:99:99:99"]}
    assert (await region.post("/rack/v1/callback", json=wrong, headers=bearer(racks["rack-b"]))).status == 403
    with inventory.store.read() as s:
        assert not s.scalars(select(JobEventRow).where(JobEventRow.kind == "boot-signal")).all()
    resp = await region.post("/rack/v1/callback", json=body, headers=bearer(racks["rack-b"]))
    assert resp.status == 200
    secret = (await resp.json())["secret"]
    with inventory.store.read() as s:
        signals = s.scalars(select(JobEventRow).where(JobEventRow.kind == "boot-signal")).all()
    assert [e.data["blade"] for e in signals] == ["blade-2"] and signals[0].data["peer_rule"] == "rack-neighbour"
    assert (await region.post("/rack/v1/beat", json={"secret": secret}, headers=bearer(racks["rack-b"]))).status == 204
    # the secret of rack-b's blade counts for nothing through rack-a
    assert (await region.post("/rack/v1/beat", json={"secret": secret}, headers=bearer(racks["rack-a"]))).status == 403
    assert (await region.post("/rack/v1/beat", json={"secret": "nope"}, headers=bearer(racks["rack-b"]))).status == 403


async def test_reservations_are_the_racks_own_and_other_blades_are_ignored(
        region: TestClient, racks: dict[str, str]) -> None:
    got, ignored = {}, {}
    for name, token in racks.items():
        resp = await region.get("/rack/v1/reservations", headers=bearer(token))
        assert resp.status == 200
        body = await resp.json()
        got[name] = {a for item in body["items"] for a in item["macs"]}
        ignored[name] = set(body["ignore"])
    assert WEB_MAC in got["rack-a"] and DB_MAC not in got["rack-a"]
    assert DB_MAC in got["rack-b"] and WEB_MAC not in got["rack-b"]
    # rack-b's blade (its NIC and its profile's MAC) and the appliance's own blades get nothing from rack-a
    assert {DB_MAC, "02:a0:00:00:01:01", "52:54:00:00:03:01"} <= ignored["rack-a"]
    assert WEB_MAC not in ignored["rack-a"] and "02:a0:00:00:00:01" not in ignored["rack-a"]
    assert WEB_MAC in ignored["rack-b"] and DB_MAC not in ignored["rack-b"]


def test_hostsfile_ignores_other_racks_blades() -> None:
    text = render_hosts([Reservation(("52:54:00:00:01:01",), "10.77.0.50", "web")],
                        ["52-54-00-00-02-01", "52:54:00:00:01:01", "junk"])
    assert text == "52:54:00:00:01:01,10.77.0.50,web\n52:54:00:00:02:01,ignore\n"


async def test_heartbeat_registers_version_networks_and_health(
        region: TestClient, racks: dict[str, str], inventory: Inventory) -> None:
    svc = RackService(inventory.store)
    assert svc.get("rack-a").health == "never"
    with inventory.store.read() as s:
        blade_1 = inventory.blades["blade-1"]
        assert "never registered" in (rack_down_reason(s, blade_1) or "")
        assert rack_down_reason(s, inventory.blades["blade-3"]) is None     # the appliance's own boot role
    resp = await region.post("/rack/v1/heartbeat", headers=bearer(racks["rack-a"]),
                             json={"version": "9.9", "networks": ["10.77.0.1/24"], "bootUrl": A_BASE})
    assert resp.status == 200
    info = svc.get("rack-a")
    assert (info.health, info.version, info.reported_networks, info.boot_url) == \
        ("up", "9.9", ("10.77.0.0/24",), A_BASE)
    assert info.blades == ("blade-1",)
    with inventory.store.read() as s:
        assert rack_down_reason(s, blade_1) is None
    with inventory.store.write() as s:
        row = s.scalar(select(RackRow).where(RackRow.name == "rack-a"))
        assert row is not None
        row.last_seen_at = utcnow() - timedelta(seconds=60)
    assert svc.get("rack-a").health == "down"
    with inventory.store.read() as s:
        assert re.search(r"rack controller rack-a is down \(last heartbeat 6\d s ago\)", rack_down_reason(s, blade_1)
                         or "")
    bad = await region.post("/rack/v1/heartbeat", headers=bearer(racks["rack-a"]),
                            json={"version": "9.9", "networks": ["not-a-net"]})
    assert bad.status == 400


def test_health_states() -> None:
    now = utcnow()
    assert health(None, now) == "never"
    assert health(now - timedelta(seconds=3), now, down_after=15) == "up"
    assert health(now - timedelta(seconds=16), now, down_after=15) == "down"


def test_rack_service_refuses_bad_input_and_changes_nothing(inventory: Inventory, racks: dict[str, str]) -> None:
    svc = RackService(inventory.store)
    with pytest.raises(ValidationError, match="Rack_C"):
        svc.add("Rack_C", [])
    with pytest.raises(ValidationError, match=r"network\[1\]"):
        svc.add("rack-c", ["10.0.0.0/24", "10.0.0"])
    with pytest.raises(Conflict):
        svc.add("rack-a", [])
    with pytest.raises(NotFound):
        svc.set_blade_rack("blade-1", "rack-zz")
    with pytest.raises(Conflict, match="blade-1"):
        svc.remove("rack-a")
    assert [r.name for r in svc.list()] == ["rack-a", "rack-b"]
    assert svc.get("rack-a").blades == ("blade-1",)
    assert svc.authenticate(racks["rack-a"]) is not None
    old = racks["rack-a"]
    svc.rotate_token("rack-a")
    assert svc.authenticate(old) is None


async def test_the_appliances_own_boot_role_does_not_serve_a_racks_blade(
        inventory: Inventory, racks: dict[str, str], tmp_path: Path) -> None:
    app = web.Application()
    setup(app, store=inventory.store, images_dir=tmp_path, base_url=A_BASE, key=inventory.key, peers=loopback_peers())
    async with TestClient(TestServer(app)) as c:
        text = await (await c.get("/boot/ipxe", params={"mac": WEB_MAC})).text()
        assert inventory.tokens["web-01"] not in text and "no boot script" in text
        # a blade of no rack is served as before
        text = await (await c.get("/boot/ipxe", params={"mac": "52:54:00:00:04:01"})).text()
        assert inventory.tokens["hybrid-01"] in text
        # and a racked blade's token is refused by it
        resp = await c.post("/boot/callback", data={"token": inventory.tokens["web-01"]})
        assert resp.status == 403


def test_rack_changes_are_audited_and_heartbeats_are_not(inventory: Inventory) -> None:
    svc = RackService(inventory.store)
    with acting_as(Actor("local:ops", "cli")):
        _, token = svc.add("rack-c", ["10.79.0.0/24"])
        svc.set_blade_rack("blade-5", "rack-c")
    rack = svc.authenticate(token)
    assert rack is not None
    with acting_as(Actor("local:ops", "cli")):
        svc.heartbeat(rack, version="1", networks=[], boot_url=None)
    with inventory.store.read() as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.who == "local:ops").order_by(AuditRow.id)).all()
    assert [(r.action, r.resource, r.name) for r in rows] == [("create", "rack", "rack-c"),
                                                             ("update", "blade", "blade-5")]
    assert token not in repr(rows[0].after) and rows[0].after["token_hash"] == "***"
