"""Resources: pages and filters, content negotiation, problem+json with field paths, jobs and SSE, audit."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import update

from appliance.store import Store
from appliance.store.tables import JobRow
from tests.api.conftest import Api, profile_doc

XML = """<?xml version="1.0"?>
<ServerProfile xmlns="urn:anvil:profile:v1"><apiVersion>anvil/v1</apiVersion>
<metadata><name>xml-01</name><tenant>acme</tenant></metadata>
<spec><identity><nics><nic><name>eth0</name><mac>02:a0:00:00:00:21</mac></nic></nics></identity></spec>
</ServerProfile>
"""


async def test_blades_page_by_page_with_filters(api: Api) -> None:
    c, h = api.client, api.auth("viewer")
    first = await (await c.get("/api/v1/blades?limit=3", headers=h)).json()
    assert [b["name"] for b in first["items"]] == ["b01", "b02", "b03"] and first["total"] == 4
    second = await (await c.get(f"/api/v1/blades?limit=3&after={first['next']}", headers=h)).json()
    assert [b["name"] for b in second["items"]] == ["b04"] and second["next"] is None
    active = await (await c.get("/api/v1/blades?state=active", headers=h)).json()
    assert {b["name"]: b["profile"] for b in active["items"]} == {"b01": "acme/web-01", "b02": "globex/db-01"}
    bad = await c.get("/api/v1/blades?limit=0", headers=h)
    assert bad.status == 400 and (await bad.json())["errors"][0]["path"] == "query.limit"
    one = await (await c.get("/api/v1/blades/b01", headers=h)).json()
    assert one["password"] == "***" and one["profile"] == "acme/web-01"
    cap = await (await c.get("/api/v1/capacity", headers=h)).json()
    assert (cap["spare"], cap["stamped"], cap["total"]) == (2, 2, 4)


async def test_profiles_in_json_yaml_and_xml_both_ways(api: Api) -> None:
    c, h = api.client, api.auth("operator")
    resp = await c.post("/api/v1/profiles", data=profile_doc("yaml-01", "acme", 0x20),
                        headers={**h, "Content-Type": "application/yaml"})
    assert resp.status == 201, await resp.text()
    resp = await c.post("/api/v1/profiles", data=XML, headers={**h, "Content-Type": "application/xml",
                                                                "Accept": "application/xml"})
    assert resp.status == 201 and resp.content_type == "application/xml" and "<ServerProfile" in await resp.text()
    doc = {"apiVersion": "anvil/v1", "kind": "ServerProfile", "metadata": {"name": "json-01", "tenant": "acme"},
           "spec": {"identity": {"nics": [{"name": "eth0", "mac": "02:a0:00:00:00:22"}]}}}
    resp = await c.post("/api/v1/profiles", json=doc, headers=h)
    assert resp.status == 201 and (await resp.json())["document"]["metadata"]["name"] == "json-01"
    got = await c.get("/api/v1/profiles/xml-01?tenant=acme", headers={**h, "Accept": "application/yaml"})
    assert got.content_type == "application/yaml" and "name: xml-01" in await got.text()
    got = await c.get("/api/v1/profiles/yaml-01?tenant=acme", headers={**h, "Accept": "application/xml"})
    assert "<name>yaml-01</name>" in await got.text()
    listed = await (await c.get("/api/v1/profiles?tenant=acme&limit=2", headers=h)).json()
    assert listed["total"] == 5 and len(listed["items"]) == 2
    dup = await c.post("/api/v1/profiles", json=doc, headers=h)
    assert dup.status == 409 and dup.content_type == "application/problem+json"
    assert (await c.delete("/api/v1/profiles/json-01?tenant=acme", headers=h)).status == 204
    assert (await c.get("/api/v1/profiles/json-01?tenant=acme", headers=h)).status == 404


async def test_validation_errors_are_problem_json_with_path_and_line(api: Api) -> None:
    bad = profile_doc("bad-01", "acme", 0x30).replace('mac: "02:a0:00:00:00:30"', 'mac: "zz:zz"')
    resp = await api.client.post("/api/v1/profile-validation", data=bad,
                                 headers={**api.auth("viewer"), "Content-Type": "application/yaml"})
    assert resp.status == 400 and resp.content_type == "application/problem+json"
    err = (await resp.json())["errors"][0]
    assert err["path"] == "spec.identity.nics[0].mac" and err["line"] == 8
    resp = await api.client.post("/api/v1/blades", json={"name": "B!", "bmc": "x"}, headers=api.auth("admin"))
    paths = {e["path"] for e in (await resp.json())["errors"]}
    assert resp.status == 400 and {"body", "body.name"} <= paths
    resp = await api.client.post("/api/v1/profiles", data="x", headers={**api.auth("admin"),
                                                                         "Content-Type": "text/plain"})
    assert resp.status == 415


async def test_assign_is_a_job_with_events_as_server_sent_events(api: Api) -> None:
    c, h = api.client, api.auth("operator")
    resp = await c.post("/api/v1/profiles/web-02/dry-run", json={"tenant": "acme"}, headers=h)
    placement = await resp.json()
    assert placement["best"] in ("b03", "b04") and {r["blade"] for r in placement["rejected"]} >= {"b01", "b02"}
    job = await (await c.post("/api/v1/profiles/web-02/assign", json={"tenant": "acme", "blade": "b03"},
                              headers={**h, "Idempotency-Key": "k1"})).json()
    again = await (await c.post("/api/v1/profiles/web-02/assign", json={"tenant": "acme", "blade": "b03"},
                                headers={**h, "Idempotency-Key": "k1"})).json()
    assert again["id"] == job["id"] and job["state"] == "pending"
    conflict = await c.post("/api/v1/profiles/web-02/assign", json={"tenant": "acme"}, headers=h)
    assert conflict.status == 409
    with api.store.write() as s:   # no engine here: end the job by hand
        s.execute(update(JobRow).where(JobRow.id == job["id"]).values(state="cancelled"))
    resp = await c.get(f"/api/v1/jobs/{job['id']}/events", headers=h)
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    text = await resp.text()
    events = [block for block in text.split("\n\n") if block.strip()]
    assert events[-1].startswith("event: end") and '"cancelled"' in events[-1]
    assert any(e.startswith("event: job") and json.loads(e.split("data: ", 1)[1])["id"] == job["id"]
               for e in events)
    jobs = await (await c.get("/api/v1/jobs", headers=h)).json()
    assert [j["id"] for j in jobs["items"]] == [job["id"]]


async def test_api_changes_are_audited_with_caller_and_peer(api: Api) -> None:
    c = api.client
    await c.post("/api/v1/blades/b04/maintenance", json={"on": True, "reason": "fan"}, headers=api.auth("operator"))
    await c.post("/api/v1/blades/b04/power", json={"action": "on"}, headers=api.auth("operator"))
    entries = (await (await c.get("/api/v1/audit?resource=blade", headers=api.auth("admin"))).json())["items"]
    power, maint = entries[0], entries[1]
    assert (power["action"], power["who"], power["after"]) == ("power", "token:operator#2", {"action": "on"})
    assert maint["origin"].startswith("api 127.0.0.1")
    assert maint["before"]["state"] == "spare" and maint["after"]["state"] == "maintenance"
    verify = await (await c.get("/api/v1/audit/verify", headers=api.auth("admin"))).json()
    assert verify["ok"] is True
    export = await c.get("/api/v1/audit/export", headers=api.auth("admin"))
    assert len((await export.text()).splitlines()) == verify["checked"]


TEMPLATE = """apiVersion: anvil/v1
kind: ServerProfileTemplate
metadata: {name: tpl, tenant: acme}
spec:
  identity:
    nics:
      - {name: eth0, mac: "pool:nowhere"}
"""


async def test_profile_validation_checks_pools_and_held_identities_as_import_would(api: Api) -> None:
    c = api.client
    yaml_type = {"Content-Type": "application/yaml"}
    resp = await c.post("/api/v1/profile-validation", data=TEMPLATE, headers={**api.auth("viewer"), **yaml_type})
    assert resp.status == 400, await resp.text()
    assert [(e["path"], e["reason"]) for e in (await resp.json())["errors"]] == [
        ("spec.identity.nics[0].mac", "identity pool 'nowhere' does not exist")]
    imported = await c.post("/api/v1/profiles", data=TEMPLATE, headers={**api.auth("operator"), **yaml_type})
    assert imported.status == 400 and (await imported.json())["errors"] == (await resp.json())["errors"]

    taken = profile_doc("web-09", "acme", 1)   # acme/web-01's MAC
    resp = await c.post("/api/v1/profile-validation", data=taken, headers={**api.auth("admin"), **yaml_type})
    [err] = (await resp.json())["errors"]
    assert resp.status == 400 and err["path"] == "spec.identity.nics[0].mac" and "acme/web-01" in err["reason"]
    resp = await c.post("/api/v1/profile-validation", data=taken.replace("acme", "globex"),
                        headers={**api.auth("globex-admin"), **yaml_type})
    [err] = (await resp.json())["errors"]   # a tenant is not told another tenant's profile names
    assert err["reason"] == '"02:a0:00:00:00:01" is already in use'

    resp = await c.post("/api/v1/profile-validation", data=profile_doc("web-09", "acme", 9),
                        headers={**api.auth("viewer"), **yaml_type})
    assert resp.status == 200 and (await resp.json())["checked"] == ["document", "store"]


async def test_profile_import_uses_the_configured_parking_vlan(store: Store, tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from appliance.api.app import create_app
    from appliance.config import load_settings
    from appliance.services.tokens import TokenService

    settings = load_settings(env={"ANVIL_STATE_DIR": str(tmp_path / "state"), "ANVIL_CONFIG": str(tmp_path / "x.toml"),
                                  "ANVIL_NETWORK_PARKING_VLAN": "100"})
    token = TokenService(store).create("op", role="operator")
    doc = profile_doc("vlan-01", "acme", 0x40).replace('"}', '", vlans: {native: 100}}')
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/yaml"}
    async with TestClient(TestServer(create_app(settings, store))) as c:
        for path in ("/api/v1/profile-validation", "/api/v1/profiles"):
            resp = await c.post(path, data=doc, headers=h)
            assert resp.status == 400, await resp.text()
            [err] = (await resp.json())["errors"]
            assert err["path"] == "spec.identity.nics[0].vlans.native"
            assert err["reason"].startswith("VLAN 100 is the parking VLAN") and "network.parking_vlan" in err["reason"]
        resp = await c.post("/api/v1/profiles", data=doc.replace("native: 100", "native: 4094"), headers=h)
        assert resp.status == 201, await resp.text()
