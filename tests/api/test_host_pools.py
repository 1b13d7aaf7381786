"""/host-pools and /host-quotas: sizes moved (202), refusals with reasons, hosts, tenants apart."""

from __future__ import annotations

from sqlalchemy import select

from appliance.api.keys import SETTINGS
from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.host_reconcile import Reconciler
from appliance.services.pools import PoolService
from appliance.services.profiles import ProfileService
from appliance.store.tables import AuditRow, HostRow
from tests.api.conftest import Api

TEMPLATE = """apiVersion: anvil/v1
kind: ServerProfileTemplate
metadata: {{name: kvm, tenant: {tenant}}}
spec:
  requirements: {{minCpus: 32, nics: 1}}
  identity:
    uuid: pool:uuids
    nics:
      - {{name: eth0, mac: pool:macs}}
"""


def world(api: Api) -> None:
    """Two big blades in two chassis beside the seeded small ones; pools; acme's and globex's templates."""
    store = api.store
    blades = BladeService(store, SecretBox(api.client.server.app[SETTINGS].secrets_key_path))
    for i, chassis in ((5, "c1"), (6, "c2")):
        blades.enroll(Enrollment(name=f"b{i:02d}", bmc=f"fake://b{i:02d}", username="u", password=Secret("p"),
                                 cpus=32, memory_gib=256, chassis=chassis, slot=i,
                                 nics=(NicSpec("eth0", f"aa:00:00:00:00:{i:02x}"),)))
    PoolService(store).create("macs", "mac", "02:b0:00:00:00:00", "02:b0:00:00:ff:ff")
    PoolService(store).create("uuids", "uuid", "4c4c4544-0000-0000-0000-000000000000",
                              "4c4c4544-0000-0000-0000-00000000ffff")
    for tenant in ("acme", "globex"):
        ProfileService(store).import_document(TEMPLATE.format(tenant=tenant))


async def test_a_pool_is_created_grown_and_shown_with_its_hosts(api: Api) -> None:
    world(api)
    c, h = api.client, api.auth("acme-op")
    made = await c.post("/api/v1/host-pools", json={"name": "east", "template": "kvm", "max": 4}, headers=h)
    assert made.status == 201, await made.text()
    pool = await made.json()
    assert (pool["tenant"], pool["size"], pool["converged"], pool["spread"]) == ("acme", 0, True, "chassis")
    assert made.headers["Location"] == "/api/v1/host-pools/east"
    grown = await c.post("/api/v1/host-pools/east/hosts", json={"count": 2}, headers=h)
    assert grown.status == 202 and (await grown.json())["size"] == 2
    assert (await (await c.get("/api/v1/host-pools/east/hosts", headers=h)).json())["total"] == 0
    Reconciler(api.store).run_once()       # the engine's pass: hosts requested with their identity
    hosts = (await (await c.get("/api/v1/host-pools/east/hosts", headers=h)).json())["items"]
    assert [x["name"] for x in hosts] == ["east-001", "east-002"] and {x["state"] for x in hosts} == {"requested"}
    assert all(x["uuid"].startswith("4c4c4544-") and len(x["macs"]) == 1 for x in hosts)
    one = await (await c.get(f"/api/v1/host-pools/east/hosts/{hosts[0]['id']}", headers=h)).json()
    by_name = await (await c.get("/api/v1/host-pools/east/hosts/east-001", headers=h)).json()
    assert one == by_name == hosts[0]
    shown = await (await c.get("/api/v1/host-pools/east", headers=h)).json()
    assert shown["hosts"] == {"requested": 2} and shown["ready"] == 0 and not shown["converged"]
    listed = await (await c.get("/api/v1/host-pools", headers=h)).json()
    assert [p["name"] for p in listed["items"]] == ["east"]
    sized = await c.put("/api/v1/host-pools/east/size", json={"size": 1}, headers=h)
    assert sized.status == 202 and (await sized.json())["size"] == 1
    with api.store.read() as s:
        entry = s.scalars(select(AuditRow).where(AuditRow.resource == "host-pool").order_by(AuditRow.id.desc())
                          ).first()
        assert entry is not None and entry.who.startswith("token:acme-op")
        assert entry.after and entry.after["desired"] == 1


async def test_refusals_name_what_is_wrong_and_change_nothing(api: Api) -> None:
    world(api)
    c, h, admin = api.client, api.auth("acme-op"), api.auth("admin")
    bad = await c.post("/api/v1/host-pools", json={"name": "east", "template": "kvm", "min": 5, "max": 2}, headers=h)
    assert bad.status == 400 and (await bad.json())["errors"] == [{"path": "body.max", "reason": "2 is below min 5",
                                                                   "line": None}]
    missing = await c.post("/api/v1/host-pools", json={"name": "east", "template": "nope"}, headers=h)
    assert missing.status == 404 and "template 'nope' not found" in (await missing.json())["detail"]
    assert (await c.put("/api/v1/host-quotas/acme", json={"maxHosts": 3}, headers=h)).status == 403
    quota = await c.put("/api/v1/host-quotas/acme", json={"maxHosts": 3}, headers=admin)
    assert quota.status == 200 and await quota.json() == {"tenant": "acme", "maxHosts": 3, "used": 0}
    await c.post("/api/v1/host-pools", json={"name": "east", "template": "kvm", "size": 2, "max": 5}, headers=h)
    over = await c.post("/api/v1/host-pools/east/hosts", json={"count": 2}, headers=h)
    assert over.status == 409
    assert (await over.json())["detail"] == "tenant acme's quota is 3 hosts; its pools would hold 4 (east 4)"
    too_big = await c.put("/api/v1/host-pools/east/size", json={"size": 6}, headers=admin, params={"tenant": "acme"})
    assert too_big.status == 409 and "has max 5; 6 hosts asked" in (await too_big.json())["detail"]
    assert (await (await c.get("/api/v1/host-pools/east", headers=h)).json())["size"] == 2
    neg = await c.post("/api/v1/host-pools/east/hosts", json={"count": 0}, headers=h)
    assert neg.status == 400
    quotas = await (await c.get("/api/v1/host-quotas", headers=h)).json()
    assert quotas["items"] == [{"tenant": "acme", "maxHosts": 3, "used": 2}]


async def test_metrics_are_checked_and_kept_for_live_hosts_only(api: Api) -> None:
    world(api)
    c, h = api.client, api.auth("acme-op")
    await c.post("/api/v1/host-pools", json={"name": "east", "template": "kvm", "size": 1}, headers=h)
    Reconciler(api.store).run_once()
    ok = await c.post("/api/v1/host-pools/east/hosts/east-001/metrics", json={"cpu": 55.5, "vms": 3}, headers=h)
    assert ok.status == 204
    bad = await c.post("/api/v1/host-pools/east/hosts/east-001/metrics", json={"cpu": 101}, headers=h)
    assert bad.status == 400 and (await bad.json())["errors"][0]["path"] == "body.cpu"
    gone = await c.post("/api/v1/host-pools/east/hosts/east-999/metrics", json={"cpu": 5}, headers=h)
    assert gone.status == 404


async def test_releasing_a_host_moves_the_size_and_refuses_below_min(api: Api) -> None:
    world(api)
    c, h = api.client, api.auth("acme-op")
    await c.post("/api/v1/host-pools", json={"name": "east", "template": "kvm", "size": 2, "min": 1}, headers=h)
    Reconciler(api.store).run_once()
    out = await c.delete("/api/v1/host-pools/east/hosts/east-002", headers=h, params={"keepProfile": "true"})
    assert out.status == 202 and (await out.json())["state"] == "releasing"
    assert (await (await c.get("/api/v1/host-pools/east", headers=h)).json())["size"] == 1
    again = await c.delete("/api/v1/host-pools/east/hosts/east-001", headers=h)
    assert again.status == 409 and "has min 1" in (await again.json())["detail"]
    swap = await c.delete("/api/v1/host-pools/east/hosts/east-001", headers=h, params={"replace": "true"})
    assert swap.status == 202 and (await swap.json())["reason"] == "to be replaced, as asked"
    busy = await c.delete("/api/v1/host-pools/east", headers=h)
    assert busy.status == 409 and "scale it to 0" in (await busy.json())["detail"]
    with api.store.read() as s:
        assert {r.name: r.keep_profile for r in s.scalars(select(HostRow))} == {"east-001": False,
                                                                               "east-002": True}


async def test_another_tenants_pool_answers_as_a_missing_one(api: Api) -> None:
    world(api)
    c = api.client
    made = await c.post("/api/v1/host-pools", json={"name": "west", "template": "kvm"},
                        headers=api.auth("globex-admin"))
    assert made.status == 201 and (await made.json())["tenant"] == "globex"
    h = api.auth("acme-op")
    theirs = await c.get("/api/v1/host-pools/west", headers=h)
    nowhere = await c.get("/api/v1/host-pools/zzwest", headers=h)
    assert theirs.status == nowhere.status == 404
    assert (await theirs.json())["detail"].replace("west", "X") == (await nowhere.json())["detail"].replace(
        "zzwest", "X")
    assert (await (await c.get("/api/v1/host-pools", headers=h, params={"tenant": "globex"})).json())["items"] == []
    # An appliance-wide admin names the tenant, and is told where a name lives.
    admin = api.auth("admin")
    assert (await c.get("/api/v1/host-pools/west", headers=admin, params={"tenant": "globex"})).status == 200
    hint = await (await c.get("/api/v1/host-pools/west", headers=admin)).json()
    assert "west exists in tenant globex" in hint["detail"]


async def test_the_feed_resumes_after_a_cursor_long_polls_and_streams(api: Api) -> None:
    world(api)
    c, h = api.client, api.auth("acme-op")
    await c.post("/api/v1/host-pools", json={"name": "east", "template": "kvm", "size": 2}, headers=h)
    empty = await (await c.get("/api/v1/host-pools/east/events", headers=h)).json()
    assert empty == {"items": [], "cursor": 0, "more": False}
    Reconciler(api.store).run_once()
    feed = await (await c.get("/api/v1/host-pools/east/events", headers=h)).json()
    assert [(e["event"], e["host"]["name"]) for e in feed["items"]] == [("host.requested", "east-001"),
                                                                        ("host.requested", "east-002")]
    first = feed["items"][0]["cursor"]
    # Each event names the pool's event before it: a webhook receiver can tell it missed one.
    assert [e["previous"] for e in feed["items"]] == [0, first]
    after = await (await c.get("/api/v1/host-pools/east/events", headers=h, params={"after": first})).json()
    assert [e["host"]["name"] for e in after["items"]] == ["east-002"] and after["cursor"] == feed["cursor"]
    page = await (await c.get("/api/v1/host-pools/east/events", headers=h, params={"limit": 1})).json()
    assert page["more"] and len(page["items"]) == 1
    # A long poll with nothing new answers empty after its wait; one with news answers at once.
    quiet = await (await c.get("/api/v1/host-pools/east/events", headers=h,
                               params={"after": feed["cursor"], "wait": 1})).json()
    assert quiet == {"items": [], "cursor": feed["cursor"], "more": False}
    # Server-sent events: resumes after Last-Event-ID, each event's id is its cursor.
    async with c.get("/api/v1/host-pools/east/events", headers={**h, "Accept": "text/event-stream",
                                                                 "Last-Event-ID": str(first)}) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        seen = b""
        for _ in range(50):
            seen += await resp.content.readany()
            if b"event: host.requested" in seen:
                break
    assert f"id: {feed['cursor']}\nevent: host.requested\n".encode() in seen and b"east-002" in seen
    assert b"east-001" not in seen
    bad = await c.get("/api/v1/host-pools/east/events", headers={**h, "Last-Event-ID": "x"})
    assert bad.status == 400


async def test_webhooks_are_added_with_a_write_only_secret_and_logged(api: Api) -> None:
    world(api)
    c, h = api.client, api.auth("acme-op")
    await c.post("/api/v1/host-pools", json={"name": "east", "template": "kvm"}, headers=h)
    bad = await c.post("/api/v1/host-pools/east/webhooks", json={"url": "ftp://x", "secret": "s" * 16}, headers=h)
    assert bad.status == 400 and (await bad.json())["errors"][0]["path"] == "body.url"
    made = await c.post("/api/v1/host-pools/east/webhooks",
                        json={"url": "https://vm.example/hook", "secret": "s" * 20}, headers=h)
    assert made.status == 201
    hook = await made.json()
    assert hook["secret"] == "***" and hook["cursor"] == 0 and "s" * 20 not in str(hook)
    listed = await (await c.get("/api/v1/host-pools/east/webhooks", headers=h)).json()
    assert [w["url"] for w in listed["items"]] == ["https://vm.example/hook"]
    log = await c.get(f"/api/v1/host-pools/east/webhooks/{hook['id']}/deliveries", headers=h)
    assert log.status == 200 and (await log.json())["items"] == []
    assert (await c.get("/api/v1/host-pools/east/webhooks/999/deliveries", headers=h)).status == 404
    assert (await c.get("/api/v1/host-pools/east/webhooks/x1/deliveries", headers=h)).status == 400
    assert (await c.delete(f"/api/v1/host-pools/east/webhooks/{hook['id']}", headers=h)).status == 204
    assert (await (await c.get("/api/v1/host-pools/east", headers=h)).json())["webhooks"] == 0
