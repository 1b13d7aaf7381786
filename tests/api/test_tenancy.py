"""A tenant-scoped caller never sees or touches another tenant's profiles, blades, jobs or audit entries."""

from __future__ import annotations

from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store.audit import Actor, acting_as
from tests.api.conftest import Api, profile_doc


async def test_profiles(api: Api) -> None:
    c, h = api.client, api.auth("acme-op")
    listed = await (await c.get("/api/v1/profiles?tenant=globex", headers=h)).json()
    assert {p["tenant"] for p in listed["items"]} == {"acme"}
    assert (await c.get("/api/v1/profiles/db-01?tenant=globex", headers=h)).status == 404
    assert (await c.get("/api/v1/profiles/web-01", headers=h)).status == 200
    resp = await c.post("/api/v1/profiles", data=profile_doc("evil", "globex", 0x40),
                        headers={**h, "Content-Type": "application/yaml"})
    assert resp.status == 403
    assert (await c.delete("/api/v1/profiles/db-01?tenant=globex", headers=h)).status == 404
    assert (await c.post("/api/v1/profiles/db-01/release", json={"tenant": "globex"}, headers=h)).status == 404


async def test_blades(api: Api) -> None:
    c, h = api.client, api.auth("acme-op")
    listed = await (await c.get("/api/v1/blades", headers=h)).json()
    assert [b["name"] for b in listed["items"]] == ["b01"]
    assert (await c.get("/api/v1/blades/b02", headers=h)).status == 404
    assert (await c.post("/api/v1/blades/b02/power", json={"action": "off"}, headers=h)).status == 404
    assert (await c.post("/api/v1/blades/b01/power", json={"action": "on"}, headers=h)).status == 200
    assert (await c.post("/api/v1/blades/b01/maintenance", json={"on": True}, headers=h)).status == 403
    cap = await (await c.get("/api/v1/capacity", headers=h)).json()
    assert cap["total"] == 1
    assert (await c.get("/api/v1/switches", headers=h)).status == 403


async def test_jobs(api: Api) -> None:
    mine = JobService(api.store).submit_assign("web-02", tenant="acme")
    theirs = JobService(api.store).submit_release("db-01", tenant="globex")
    c, h = api.client, api.auth("acme-viewer")
    listed = await (await c.get("/api/v1/jobs?tenant=globex", headers=h)).json()
    assert [j["id"] for j in listed["items"]] == [mine.id]
    assert (await c.get(f"/api/v1/jobs/{theirs.id}", headers=h)).status == 404
    assert (await c.get(f"/api/v1/jobs/{theirs.id}/events", headers=h)).status == 404


async def test_audit_entries(api: Api) -> None:
    with acting_as(Actor("local:root", "cli")):
        ProfileService(api.store).import_document(profile_doc("a-2", "acme", 0x50))
        ProfileService(api.store).import_document(profile_doc("g-2", "globex", 0x51))
    for who, tenant in (("acme-viewer", "acme"), ("globex-admin", "globex")):
        items = (await (await api.client.get("/api/v1/audit?tenant=acme", headers=api.auth(who))).json())["items"]
        assert items and {e["tenant"] for e in items} == {tenant}
    assert (await api.client.get("/api/v1/audit/verify", headers=api.auth("globex-admin"))).status == 403
    assert (await api.client.get("/api/v1/users", headers=api.auth("globex-admin"))).status == 403


async def test_a_tenant_picks_a_pool_never_a_named_blade(api: Api) -> None:
    c, h = api.client, api.auth("acme-op")
    named = await c.post("/api/v1/profiles/web-02/assign", json={"blade": "b03"}, headers=h)
    assert named.status == 403
    pooled = await c.post("/api/v1/profiles/web-02/assign", json={}, headers=h)
    assert pooled.status == 202 and (await pooled.json())["tenant"] == "acme"
    placement = await (await c.post("/api/v1/profiles/web-02/dry-run", json={}, headers=h)).json()
    assert all(r["blade"] == "b01" for r in placement["rejected"])   # only its own blade is named
