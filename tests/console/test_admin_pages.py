"""The admin's workflow in the console, without a browser: identity pools, blade pools and
grants, templates instantiated N at a time, switches, failover domains, users and tokens;
each with the API's roles and tenancy."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from appliance.services.blade_pools import BladePoolService
from appliance.services.failover import FailoverService
from appliance.services.pools import PoolService
from appliance.services.profiles import PROFILE, ProfileService
from appliance.services.switches import SwitchService
from appliance.services.users import UserService
from tests.api.conftest import Api
from tests.console.test_console_forms import login

TEMPLATE = """apiVersion: anvil/v1
kind: ServerProfileTemplate
metadata: {name: kvm-host, tenant: acme}
spec:
  identity:
    uuid: pool:uuids
    nics:
      - {name: eth0, mac: "pool:macs"}
"""


async def post(c: TestClient, path: str, csrf: str, **data: str) -> tuple[int, str, str]:
    resp = await c.post(path, data={**data, "csrf_token": csrf}, allow_redirects=False)
    return resp.status, resp.headers.get("Location", ""), await resp.text()


async def test_identity_pools_are_created_from_the_console_and_show_their_use(api: Api) -> None:
    UserService(api.store).add("root", "password1", role="admin")
    c = api.client
    csrf = await login(c, "root", "password1")
    form = await (await c.get("/identity-pools")).text()
    assert "8-4-4-4-12 hex digits" in form and "4c4c4544-0000-0000-0000-000000000000" in form   # the range format
    status, _, page = await post(c, "/identity-pools", csrf, name="uuids", kind="uuid", start="not-a-uuid",
                                 end="4c4c4544-0000-0000-0000-00000000ffff")
    assert status == 400 and 'id="form-errors"' in page and "not-a-uuid" in page
    assert PoolService(api.store).list() == []
    status, where, _ = await post(c, "/identity-pools", csrf, name="uuids", kind="uuid",
                                  start="4c4c4544-0000-0000-0000-000000000000",
                                  end="4c4c4544-0000-0000-0000-00000000ffff")
    assert status == 303 and "Created uuid pool uuids: 65,536 identities" in (await (await c.get(where)).text())
    await post(c, "/identity-pools", csrf, name="macs", kind="mac", start="02:b0:00:00:00:00",
               end="02:b0:00:00:00:ff")
    ProfileService(api.store).import_document(TEMPLATE)
    ProfileService(api.store).instantiate("kvm-host", "kvm-01", tenant="acme")
    page = await (await c.get("/identity-pools/macs")).text()
    assert 'id="pool-used">1<' in page and "acme/kvm-01" in page
    UserService(api.store).add("vic", "password1", role="viewer", tenant="acme")
    c.session.cookie_jar.clear()
    await login(c, "vic", "password1")
    tenant_view = await (await c.get("/identity-pools/macs")).text()
    assert 'id="pool-used">1<' in tenant_view and "holders-table" not in tenant_view   # counts, not profiles
    assert (await c.post("/identity-pools", data={"name": "x"})).status == 403


async def test_templates_are_instantiated_n_at_a_time_all_or_none(api: Api) -> None:
    PoolService(api.store).create("uuids", "uuid", "4c4c4544-0000-0000-0000-000000000000",
                                  "4c4c4544-0000-0000-0000-000000000002")
    PoolService(api.store).create("macs", "mac", "02:b0:00:00:00:00", "02:b0:00:00:00:ff")
    ProfileService(api.store).import_document(TEMPLATE)
    UserService(api.store).add("op", "password1", role="operator", tenant="acme")
    c = api.client
    csrf = await login(c, "op", "password1")
    assert "acme/kvm-host" in await (await c.get("/templates")).text()
    page = await (await c.get("/templates/acme/kvm-host")).text()
    assert "uuids" in page and ">3<" in page     # 3 UUIDs free
    status, where, _ = await post(c, "/templates/acme/kvm-host/instantiate", csrf, prefix="kvm-", count="2")
    assert status == 303
    listed = await (await c.get(where)).text()
    assert "Created 2 profiles from acme/kvm-host: kvm-01, kvm-02" in listed
    # Three more need three UUIDs; one is left: none is created.
    status, _, page = await post(c, "/templates/acme/kvm-host/instantiate", csrf, names="kvm-03\nkvm-04\nkvm-05")
    assert status == 409 and "exhausted" in page
    assert [p.name for p in ProfileService(api.store).list(kind=PROFILE, tenant="acme")] == [
        "kvm-01", "kvm-02", "web-01", "web-02"]
    status, _, page = await post(c, "/templates/acme/kvm-host/instantiate", csrf, prefix="kvm-", count="0")
    assert status == 400 and "is not a number from 1 to 100" in page


async def test_blade_pools_members_and_tenant_grants(api: Api) -> None:
    UserService(api.store).add("root", "password1", role="admin")
    UserService(api.store).add("ann", "password1", role="operator", tenant="acme")
    c = api.client
    csrf = await login(c, "root", "password1")
    created = await c.post("/pools", data={"name": "web", "csrf_token": csrf, "blades": ["b03", "b04"]},
                           allow_redirects=False)
    assert created.status == 303
    await post(c, "/pools/web/grant", csrf, tenant="acme")
    await post(c, "/pools/web/remove", csrf, blade="b04")
    info = BladePoolService(api.store).get("web")
    assert (info.tenant, info.blades) == ("acme", ("b03",))
    page = await (await c.get("/pools/web")).text()
    assert 'id="pool-tenant">acme<' in page and 'data-blade="b03"' in page and '<option value="b04">' in page
    BladePoolService(api.store).create("other")
    c.session.cookie_jar.clear()
    csrf = await login(c, "ann", "password1")
    listed = await (await c.get("/pools")).text()
    assert 'data-pool="web"' in listed and 'data-pool="other"' not in listed
    assert (await c.get("/pools/other")).status == 404
    assert (await post(c, "/pools/web/grant", csrf, tenant="globex"))[0] == 403


async def test_switches_are_enrolled_and_cabled_from_the_console_and_refused_to_tenants(api: Api) -> None:
    UserService(api.store).add("root", "password1", role="admin")
    UserService(api.store).add("tina", "password1", role="admin", tenant="acme")
    c = api.client
    csrf = await login(c, "root", "password1")
    status, _, page = await post(c, "/switches", csrf, name="tor-1", address="ftp://x")
    assert status == 400 and "unknown switch address scheme" in page
    # A switch that never answers: the page still comes, saying so per port.
    status, where, _ = await post(c, "/switches", csrf, name="tor-1", address="snmp://127.0.0.1:9",
                                  password="public")
    assert status == 303 and where.startswith("/switches/tor-1")
    await post(c, "/switches/tor-1/cable", csrf, blade="b03", nic="eth0", port="7")
    assert [(x.port, x.blade) for x in SwitchService(api.store, None).get("tor-1").cables] == [  # type: ignore[arg-type]
        ("7", "b03")]
    page = await (await c.get("/switches/tor-1")).text()
    row = page[page.index('data-port="7"'):]
    assert "b03" in row and "port-error" in row
    assert "public" not in page
    c.session.cookie_jar.clear()
    await login(c, "tina", "password1")
    assert (await c.get("/switches")).status == 403 and (await c.get("/switches/tor-1")).status == 403
    assert "/switches" not in (await (await c.get("/")).text()).split("<main")[0]


async def test_failover_domains_are_created_changed_and_deleted_from_the_console(api: Api) -> None:
    UserService(api.store).add("root", "password1", role="admin")
    c = api.client
    csrf = await login(c, "root", "password1")
    status, where, _ = await post(c, "/failover-domains", csrf, name="prod-web", spare_pool="spares",
                                  restart_attempts="2", webhook_url="https://ops.example/hook",
                                  webhook_secret="a-secret-of-24-characters")
    assert status == 303
    assert "Created failover domain prod-web" in await (await c.get(where)).text()
    await post(c, "/failover-domains/prod-web/update", csrf, spare_pool="spares", restart_attempts="3",
               description="web tier", webhook_url="", webhook_secret="")
    info = FailoverService(api.store).get_domain("prod-web")
    assert (info.restart_attempts, info.description, info.webhook_url, info.has_webhook_secret) == (
        3, "web tier", "https://ops.example/hook", True)
    page = await (await c.get("/failover-domains/prod-web")).text()
    assert "a-secret-of-24-characters" not in page and "(set; leave empty to keep it)" in page
    status, _, page = await post(c, "/failover-domains/prod-web/drill", csrf)
    assert status == 409 and "no active protected profile" in page
    await post(c, "/failover-domains/prod-web/update", csrf, remove_webhook="on")
    assert FailoverService(api.store).get_domain("prod-web").webhook_url is None
    await post(c, "/failover-domains/prod-web/delete", csrf)
    assert FailoverService(api.store).list_domains() == []


async def test_users_and_tokens_for_admins_only_and_a_token_is_shown_once(api: Api) -> None:
    UserService(api.store).add("root", "password1", role="admin")
    UserService(api.store).add("op", "password1", role="operator")
    c = api.client
    await login(c, "op", "password1")
    assert (await c.get("/users")).status == 403
    c.session.cookie_jar.clear()
    csrf = await login(c, "root", "password1")
    status, _, _page = await post(c, "/users", csrf, name="alice", role="operator", tenant="acme",
                                  password="alice-pass-1")
    assert status == 303 and UserService(api.store).get("alice").tenant == "acme"
    status, _, page = await post(c, "/tokens", csrf, name="ci", role="viewer", expires="30d")
    assert status == 201
    token = re.search(r'id="token-value"[^>]*>([^<]+)<', page)
    assert token is not None
    got = await c.get("/api/v1/blades", headers={"Authorization": f"Bearer {token.group(1)}"})
    assert got.status == 200
    again = await (await c.get("/users")).text()
    assert token.group(1) not in again and "ci" in again    # listed, never shown again
    row = re.search(r'data-token="(\d+)"><td class="num">\d+</td><td>ci<', again)
    assert row is not None
    await post(c, f"/tokens/{row.group(1)}/revoke", csrf, name="ci")
    got = await c.get("/api/v1/blades", headers={"Authorization": f"Bearer {token.group(1)}"})
    assert got.status == 401
    await post(c, "/users/alice/delete", csrf)
    assert "alice" not in [u.name for u in UserService(api.store).list()]


async def test_the_jobs_page_says_why_who_and_how_long_and_the_audit_what_happened(api: Api) -> None:
    from appliance.services.jobs import JobService
    from appliance.store.tables import JobRow

    UserService(api.store).add("root", "password1", role="admin")
    c = api.client
    csrf = await login(c, "root", "password1")
    resp = await c.post("/profiles/acme/web-02/assign", data={"target": "blade:b03", "csrf_token": csrf},
                        allow_redirects=False)
    assert resp.status == 303
    job = JobService(api.store).list()[0]
    with api.store.write() as s:
        row = s.get(JobRow, job.id)
        assert row is not None
        row.state, row.error, row.data = "rolled_back", "power-on: BMC unreachable", {"blade": "b03"}
        row.finished_at = row.created_at
    page = await (await c.get("/jobs?state=rolled_back&blade=b03&kind=stamp&profile=acme/web-02")).text()
    row_html = page[page.index(f'data-job="{job.id}"'):]
    assert "power-on: BMC unreachable" in row_html and "user:root" in row_html and "0.0s" in row_html
    assert f'data-job="{job.id}"' not in await (await c.get("/jobs?blade=b04")).text()
    audit = await (await c.get("/audit?resource=job")).text()
    assert "admin root assigned acme/web-02 to blade b03" in audit and f'href="/jobs/{job.id}"' in audit


async def test_rack_controllers_are_listed_with_their_health_and_refused_to_tenants(api: Api) -> None:
    from appliance.services.racks import RackService

    UserService(api.store).add("root", "password1", role="admin")
    UserService(api.store).add("tina", "password1", role="admin", tenant="acme")
    racks = RackService(api.store)
    _, token = racks.add("rack-a", ["10.77.0.0/24"])
    racks.add("rack-b", ["10.78.0.0/24"])
    rack_a = racks.authenticate(token)
    assert rack_a is not None
    racks.heartbeat(rack_a, version="1.2.3", networks=["10.77.0.1/24"], boot_url="http://10.77.0.1:8080")
    c = api.client
    await login(c, "root", "password1")
    page = await (await c.get("/racks")).text()
    row_a = page[page.index('data-rack="rack-a"'):page.index('data-rack="rack-b"')]
    assert ">up<" in row_a and "1.2.3" in row_a and "10.77.0.0/24" in row_a and "http://10.77.0.1:8080" in row_a
    assert ">never<" in page[page.index('data-rack="rack-b"'):]
    assert token not in page
    c.session.cookie_jar.clear()
    await login(c, "tina", "password1")
    assert (await c.get("/racks")).status == 403
    assert "/racks" not in (await (await c.get("/")).text()).split("<main")[0]
