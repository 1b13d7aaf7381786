"""Failover over the API: domains with a write-only webhook secret, the spare queue with its
reasons, failover timelines, health history, and the admin-only fence confirmation and
clear — each behind the right role and tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from appliance.domain.failover import FailoverState, FenceMethod
from appliance.services.failover import FailoverService, HealthSample
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.tables import BladeRow, ProfileRow
from tests.api.conftest import Api

SECRET = "whsec-0123456789abcdef-NEVER-SHOWN"
HOOK = {"name": "prod", "sparePool": "spares", "description": "web and db", "restartAttempts": 2,
        "webhookUrl": "https://hooks.example/anvil", "webhookSecret": SECRET}
DOC = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  requirements: {{nics: 1, minCpus: {cpus}}}
  identity:
    nics:
      - {{name: eth0, mac: "02:b0:00:00:00:{mac:02x}"}}
  failover: {{domain: prod, priority: {priority}, policy: n+1}}
"""


def protect(store: Store, tenant: str, name: str, mac: int, *, priority: int = 10, cpus: int = 8) -> None:
    ProfileService(store).import_document(DOC.format(name=name, tenant=tenant, mac=mac, priority=priority, cpus=cpus))


def fenced(store: Store, tenant: str, profile: str, from_blade: str | None = None) -> int:
    """A failover that got as far as a confirmed fence: it now needs a spare."""
    svc = FailoverService(store)
    fo = svc.open_failover(tenant=tenant, profile=profile, reason="heartbeats lost", from_blade=from_blade)
    svc.advance(fo.id, FailoverState.FENCING)
    svc.advance(fo.id, FailoverState.FENCED, fence=FenceMethod.POWER, detail="power off confirmed")
    return fo.id


async def create_prod(api: Api) -> None:
    resp = await api.client.post("/api/v1/failover-domains", json=HOOK, headers=api.auth("admin"))
    assert resp.status == 201, await resp.text()


async def test_every_failover_route_needs_credentials(api: Api) -> None:
    for method, path in (("GET", "/failover-domains"), ("POST", "/failover-domains"),
                         ("GET", "/failover-domains/prod"), ("PATCH", "/failover-domains/prod"),
                         ("DELETE", "/failover-domains/prod"), ("GET", "/failover-domains/prod/queue"),
                         ("GET", "/failovers"), ("GET", "/failovers/1"), ("GET", "/blades/b01/health/history"),
                         ("POST", "/blades/b01/confirm-fenced"), ("POST", "/blades/b01/clear-failed")):
        resp = await api.client.request(method, "/api/v1" + path)
        assert resp.status == 401 and resp.content_type == "application/problem+json", (method, path)


async def test_the_webhook_secret_is_write_only_and_masked_everywhere(api: Api) -> None:
    c = api.client
    resp = await c.post("/api/v1/failover-domains", json=HOOK, headers=api.auth("admin"))
    text = await resp.text()
    assert resp.status == 201 and SECRET not in text
    assert resp.headers["Location"] == "/api/v1/failover-domains/prod"
    created = await resp.json()
    assert created["webhookSecret"] == "***" and created["webhookUrl"] == HOOK["webhookUrl"]
    assert (created["sparePool"], created["restartAttempts"], created["profiles"]) == ("spares", 2, [])
    for path in ("/api/v1/failover-domains", "/api/v1/failover-domains/prod", "/api/v1/audit?resource=failover-domain",
                 "/api/v1/audit/export"):
        got = await c.get(path, headers=api.auth("admin"))
        assert got.status == 200 and SECRET not in await got.text(), path
    patched = await c.patch("/api/v1/failover-domains/prod", json={"description": "web tier"},
                            headers=api.auth("admin"))
    assert patched.status == 200 and (await patched.json())["webhookSecret"] == "***"   # kept
    rotated = await c.patch("/api/v1/failover-domains/prod", json={"webhookSecret": SECRET + "-2"},
                            headers=api.auth("admin"))
    assert rotated.status == 200 and "NEVER-SHOWN" not in await rotated.text()
    dropped = await (await c.patch("/api/v1/failover-domains/prod", json={"webhookUrl": None},
                                   headers=api.auth("admin"))).json()
    assert (dropped["webhookUrl"], dropped["webhookSecret"], dropped["description"]) == (None, None, "web tier")


async def test_viewers_and_operators_read_only_appliance_admins_write(api: Api) -> None:
    c = api.client
    for who in ("viewer", "operator", "globex-admin"):
        resp = await c.post("/api/v1/failover-domains", json=HOOK, headers=api.auth(who))
        assert resp.status == 403 and (await resp.json())["title"] == "Forbidden", who
    await create_prod(api)
    for who in ("viewer", "operator", "acme-viewer"):
        assert (await c.get("/api/v1/failover-domains/prod", headers=api.auth(who))).status == 200, who
        assert (await c.get("/api/v1/failovers", headers=api.auth(who))).status == 200, who
        assert (await c.patch("/api/v1/failover-domains/prod", json={"description": "x"},
                              headers=api.auth(who))).status == 403, who
        assert (await c.delete("/api/v1/failover-domains/prod", headers=api.auth(who))).status == 403, who
        for action in ("confirm-fenced", "clear-failed"):
            assert (await c.post(f"/api/v1/blades/b01/{action}", headers=api.auth(who))).status == 403, who
    for action in ("confirm-fenced", "clear-failed"):   # an admin of one tenant is not the appliance's
        assert (await c.post(f"/api/v1/blades/b01/{action}", headers=api.auth("globex-admin"))).status == 403
    assert (await c.delete("/api/v1/failover-domains/prod", headers=api.auth("admin"))).status == 204
    assert (await c.get("/api/v1/failover-domains/prod", headers=api.auth("viewer"))).status == 404


async def test_validation_errors_name_the_field(api: Api) -> None:
    c, h = api.client, api.auth("admin")

    async def paths(resp: object) -> set[str]:
        assert resp.status == 400 and resp.content_type == "application/problem+json"  # type: ignore[attr-defined]
        return {e["path"] for e in (await resp.json())["errors"]}  # type: ignore[attr-defined]

    assert {"body.name", "body.restartAttempts"} <= await paths(
        await c.post("/api/v1/failover-domains", json={"name": "Bad!", "restartAttempts": 99}, headers=h))
    assert await paths(await c.post("/api/v1/failover-domains", json={"name": "d", "webhookUrl": "https://h/x"},
                                    headers=h)) == {"body.webhookSecret"}
    assert await paths(await c.post("/api/v1/failover-domains", json={"name": "d", "sparePool": "nope"},
                                    headers=h)) == {"body.sparePool"}
    assert await paths(await c.post("/api/v1/failover-domains", json={**HOOK, "webhookUrl": "ftp://h/x"},
                                    headers=h)) == {"body.webhookUrl"}
    assert await paths(await c.post("/api/v1/failover-domains", json={**HOOK, "webhookSecret": "short"},
                                    headers=h)) == {"body.webhookSecret"}
    await create_prod(api)
    assert await paths(await c.patch("/api/v1/failover-domains/prod",
                                     json={"webhookUrl": None, "webhookSecret": SECRET}, headers=h)) \
        == {"body.webhookUrl"}
    assert await paths(await c.get("/api/v1/failovers/abc", headers=h)) == {"path.id"}
    assert await paths(await c.get(f"/api/v1/failovers/{2**64}", headers=h)) == {"path.id"}
    assert await paths(await c.get("/api/v1/failovers?state=bogus&open=maybe", headers=h)) \
        == {"query.state", "query.open"}
    dup = await c.post("/api/v1/failover-domains", json=HOOK, headers=h)
    assert dup.status == 409 and "already exists" in (await dup.json())["detail"]
    assert (await c.get("/api/v1/failovers/999", headers=h)).status == 404
    assert (await c.get("/api/v1/failover-domains/ghost/queue", headers=h)).status == 404


async def test_domains_list_protected_profiles_most_important_first_and_refuse_deletion(api: Api) -> None:
    await create_prod(api)
    protect(api.store, "acme", "app-a", 1, priority=10)
    protect(api.store, "globex", "app-g", 2, priority=100)
    c = api.client
    doms = (await (await c.get("/api/v1/failover-domains", headers=api.auth("viewer"))).json())["items"]
    assert [(p["tenant"], p["name"], p["priority"], p["policy"], p["state"]) for p in doms[0]["profiles"]] == [
        ("globex", "app-g", 100, "n+1", "unassigned"), ("acme", "app-a", 10, "n+1", "unassigned")]
    mine = await (await c.get("/api/v1/failover-domains/prod", headers=api.auth("acme-viewer"))).json()
    assert [p["name"] for p in mine["profiles"]] == ["app-a"]
    assert mine["webhookUrl"] is None and mine["webhookSecret"] is None   # the appliance's, not a tenant's
    refused = await c.delete("/api/v1/failover-domains/prod", headers=api.auth("admin"))
    assert refused.status == 409 and "still protects 2 profile(s)" in (await refused.json())["detail"]


async def test_the_queue_says_who_moves_where_and_why_the_others_wait(api: Api) -> None:
    await create_prod(api)
    protect(api.store, "globex", "app-g", 1, priority=100)
    protect(api.store, "acme", "app-a", 2, priority=10)
    protect(api.store, "acme", "app-c", 3, priority=5)
    protect(api.store, "acme", "app-big", 4, priority=50, cpus=64)
    for tenant, name in (("globex", "app-g"), ("acme", "app-a"), ("acme", "app-c"), ("acme", "app-big")):
        fenced(api.store, tenant, name)
    c = api.client
    q = await (await c.get("/api/v1/failover-domains/prod/queue", headers=api.auth("viewer"))).json()
    assert q["domain"] == "prod"
    assert [s["name"] for s in q["spares"]] == ["b03", "b04"]
    assert {(a["tenant"], a["profile"]) for a in q["assignments"]} == {("globex", "app-g"), ("acme", "app-a")}
    assert {a["blade"] for a in q["assignments"]} == {"b03", "b04"}
    waiting = {w["profile"]: w for w in q["waiting"]}
    assert waiting["app-big"]["position"] == 1 and "b03: too few CPUs (16 < 64)" in waiting["app-big"]["reason"]
    assert waiting["app-c"]["position"] == 2
    assert waiting["app-c"]["reason"] == "waiting for a spare: 2 higher-priority profiles ahead"

    mine = await (await c.get("/api/v1/failover-domains/prod/queue", headers=api.auth("acme-viewer"))).json()
    assert mine["spares"] is None
    assert [a["profile"] for a in mine["assignments"]] == ["app-a"]
    assert {w["tenant"] for w in mine["waiting"]} == {"acme"}
    big = next(w for w in mine["waiting"] if w["profile"] == "app-big")
    assert big["reason"] == "waiting for a spare that meets its requirements" and "b03" not in str(mine["waiting"])
    theirs = await (await c.get("/api/v1/failover-domains/prod/queue", headers=api.auth("globex-admin"))).json()
    assert [a["profile"] for a in theirs["assignments"]] == ["app-g"] and theirs["waiting"] == []


async def test_failovers_carry_their_timeline_and_stay_within_their_tenant(api: Api) -> None:
    await create_prod(api)
    protect(api.store, "acme", "app-a", 1)
    protect(api.store, "globex", "app-g", 2)
    svc = FailoverService(api.store)
    t0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    fo = svc.open_failover(tenant="acme", profile="app-a", reason="3 heartbeats missed", from_blade="b01",
                           detected_at=t0)
    svc.advance(fo.id, FailoverState.FENCING, at=t0 + timedelta(seconds=0.4))
    svc.advance(fo.id, FailoverState.FENCED, fence=FenceMethod.POWER, at=t0 + timedelta(seconds=1))
    svc.advance(fo.id, FailoverState.MOVING, to_blade="b03", at=t0 + timedelta(seconds=1.2))
    svc.advance(fo.id, FailoverState.BOOTING, at=t0 + timedelta(seconds=2.5))
    svc.add_event(fo.id, "booted", detail="boot signal", at=t0 + timedelta(seconds=30))
    svc.advance(fo.id, FailoverState.SUCCEEDED, at=t0 + timedelta(seconds=30))
    other = fenced(api.store, "globex", "app-g")
    c = api.client

    got = await (await c.get(f"/api/v1/failovers/{fo.id}", headers=api.auth("acme-viewer"))).json()
    assert [(e["event"], e["at"]) for e in got["timeline"]] == [
        ("detected", "2026-05-01T12:00:00+00:00"), ("fenced", "2026-05-01T12:00:01+00:00"),
        ("spare-chosen", "2026-05-01T12:00:01.200000+00:00"), ("powered-on", "2026-05-01T12:00:02.500000+00:00"),
        ("booted", "2026-05-01T12:00:30+00:00"), ("active", "2026-05-01T12:00:30+00:00")]
    assert (got["fromBlade"], got["toBlade"], got["state"], got["fence"]) == ("b01", "b03", "succeeded", "power")
    assert (await c.get(f"/api/v1/failovers/{other}", headers=api.auth("acme-viewer"))).status == 404

    listed = await (await c.get("/api/v1/failovers?tenant=globex", headers=api.auth("acme-viewer"))).json()
    assert [f["id"] for f in listed["items"]] == [fo.id]    # its own, whatever it asks for
    everyone = await (await c.get("/api/v1/failovers", headers=api.auth("viewer"))).json()
    assert [f["id"] for f in everyone["items"]] == [other, fo.id]
    for q, ids in (("tenant=globex", [other]), ("open=true", [other]), ("state=succeeded", [fo.id]),
                   ("profile=app-a", [fo.id]), ("domain=other", []), ("limit=1", [other])):
        page = await (await c.get(f"/api/v1/failovers?{q}", headers=api.auth("operator"))).json()
        assert [f["id"] for f in page["items"]] == ids, q


async def test_health_history_is_newest_first_and_only_for_visible_blades(api: Api) -> None:
    svc = FailoverService(api.store)
    t0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    for i in range(3):
        svc.record_health("b01", HealthSample(ok=i < 2, source="poll", at=t0 + timedelta(seconds=30 * i),
                                              power="on", health="ok" if i < 2 else "critical",
                                              detail=f"sample {i}"))
    c = api.client
    got = await (await c.get("/api/v1/blades/b01/health/history", headers=api.auth("acme-viewer"))).json()
    assert [e["detail"] for e in got["items"]] == ["sample 2", "sample 1", "sample 0"]
    assert got["items"][0]["ok"] is False and got["items"][0]["at"] == "2026-05-01T12:01:00+00:00"
    one = await (await c.get("/api/v1/blades/b01/health/history?limit=1", headers=api.auth("viewer"))).json()
    assert one["total"] == 1
    assert (await c.get("/api/v1/blades/b02/health/history", headers=api.auth("acme-viewer"))).status == 404
    assert (await c.get("/api/v1/blades/nope/health/history", headers=api.auth("viewer"))).status == 404


async def test_an_admin_confirms_a_fence_by_hand_and_it_is_audited(api: Api) -> None:
    await create_prod(api)
    with api.store.write() as s:   # acme/web-01 runs on b01 (seeded) and is active
        s.execute(update(ProfileRow).where(ProfileRow.name == "web-01").values(state="active"))
    svc = FailoverService(api.store)
    fo = svc.open_failover(tenant="acme", profile="web-01", reason="BMC unreachable", domain="prod")
    c, h = api.client, api.auth("admin")
    early = await c.post("/api/v1/blades/b01/confirm-fenced", headers=h)
    assert early.status == 409 and "no failover waiting" in (await early.json())["detail"]
    svc.advance(fo.id, FailoverState.FENCING)
    svc.mark_needs_operator(fo.id, "no fence could be confirmed: BMC unreachable, no cabled port")
    assert (await c.post("/api/v1/blades/b01/confirm-fenced", headers=api.auth("operator"))).status == 403
    assert (await c.post("/api/v1/blades/nope/confirm-fenced", headers=h)).status == 404
    resp = await c.post("/api/v1/blades/b01/confirm-fenced", headers=h)
    assert resp.status == 200, await resp.text()
    done = await resp.json()
    assert (done["id"], done["state"], done["fence"]) == (fo.id, "fenced", "operator")
    assert done["timeline"][-1]["event"] == "fence-confirmed" and done["timeline"][-1]["detail"] == "by token:admin#1"
    audit = (await (await c.get("/api/v1/audit?action=confirm-fenced", headers=h)).json())["items"]
    assert [(e["who"], e["name"]) for e in audit] == [("token:admin#1", "b01")]
    assert audit[0]["origin"].startswith("api ")


async def test_an_admin_returns_a_repaired_blade_to_the_spares(api: Api) -> None:
    with api.store.write() as s:
        s.execute(update(BladeRow).where(BladeRow.name == "b04").values(state="failed", state_reason="PSU"))
    c, h = api.client, api.auth("admin")
    assert (await c.post("/api/v1/blades/b04/clear-failed", headers=api.auth("operator"))).status == 403
    resp = await c.post("/api/v1/blades/b04/clear-failed", headers=h)
    assert resp.status == 200 and await resp.json() == {"blade": "b04", "state": "spare"}
    again = await c.post("/api/v1/blades/b04/clear-failed", headers=h)
    assert again.status == 409 and "is spare, not failed or fenced" in (await again.json())["detail"]
    blade = await (await c.get("/api/v1/blades/b04", headers=h)).json()
    assert blade["state"] == "spare"
    audit = (await (await c.get("/api/v1/audit?action=clear-failed", headers=h)).json())["items"]
    assert [(e["who"], e["name"]) for e in audit] == [("token:admin#1", "b04")]
