"""DR plans over REST: created from YAML (a bad one refused naming the field), shown with its waves,
reported; tenant-scoped callers see none; the primary's fence and return routes answer only a
paired site's DR token; a rehearsal of a plan made here is refused (it runs at the recovery site)."""

from __future__ import annotations

from tests.api.conftest import Api

PLAN = """\
apiVersion: anvil/v1
kind: DrPlan
metadata: {name: prod}
spec:
  recoverySite: site-b
  profiles: [{tenant: acme}]
  vlans: {20: 220}
  rehearsalVlans: {20: 920}
"""
YAML = {"Content-Type": "application/yaml"}


async def test_a_plan_is_created_from_yaml_shown_listed_reported_and_deleted(api: Api) -> None:
    c, admin = api.client, api.auth("admin")
    bad = PLAN.replace("rehearsalVlans: {20: 920}", "rehearsalVlans: {20: 220}")
    r = await c.post("/api/v1/dr/plans", data=bad, headers={**admin, **YAML})
    assert r.status == 400 and "spec.rehearsalVlans.20" in await r.text()
    assert (await c.get("/api/v1/dr/plans/prod", headers=admin)).status == 404, "a refused plan wrote nothing"
    r = await c.post("/api/v1/dr/plans", data=PLAN, headers={**admin, **YAML})
    assert r.status == 201, await r.text()
    got = await (await c.get("/api/v1/dr/plans/prod", headers=admin)).json()
    assert got["waves"] == [["acme/web-01", "acme/web-02"]] and got["originSite"] is None
    assert [p["name"] for p in (await (await c.get("/api/v1/dr/plans", headers=admin)).json())["items"]] == ["prod"]
    r = await c.post("/api/v1/dr/plans/prod/rehearse", headers=admin)
    assert r.status == 409 and "recovery site site-b" in await r.text()
    rep = await (await c.get("/api/v1/dr/plans/prod/report", headers=admin)).json()
    assert rep == {"items": [], "total": 0, "lastSuccessfulRehearsal": None}
    assert (await c.delete("/api/v1/dr/plans/prod", headers=admin)).status == 204


async def test_tenants_see_no_plan_and_only_a_site_token_may_fence(api: Api) -> None:
    c, admin = api.client, api.auth("admin")
    assert (await c.post("/api/v1/dr/plans", data=PLAN, headers={**admin, **YAML})).status == 201
    for who in ("acme-op", "globex-admin"):
        assert (await c.get("/api/v1/dr/plans", headers=api.auth(who))).status == 403
        assert (await c.get("/api/v1/dr/plans/prod", headers=api.auth(who))).status == 403
    for path in ("/api/v1/dr/plans/prod/fence", "/api/v1/dr/plans/prod/return"):
        r = await c.post(path, json={}, headers=admin)
        assert r.status == 403 and "paired sites" in await r.text(), path
