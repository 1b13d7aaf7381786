"""A second tenant's names and ids, tried on every REST route and console page and form.

The walk is built from the live router, not from a list of today's routes: every route
with a path parameter must be classified in ``RESOURCES`` by its first path segment,
or this test fails and asks for a rule. For each route, tenant acme's operator asks
with globex's real value and with a value that exists nowhere; the two answers must be
the same (status and body, the value aside): no read, no write, no sign of existence.
Writes are also checked against a digest of every table: nothing changes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import MetaData, inspect, select

from appliance.api.app import all_ops
from appliance.api.ironic import ROUTES as BAREMETAL_ROUTES
from appliance.services.baremetal_ports import port_uuid
from appliance.services.blade_pools import BladePoolService
from appliance.services.failover import FailoverService
from appliance.services.host_reconcile import Reconciler
from appliance.services.hostpools import HostPoolService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.services.users import UserService
from appliance.store import Store
from appliance.store.tables import AuditRow, BladeRow
from tests.api.conftest import Api, profile_doc
from tests.console.test_console_forms import login

TEMPLATE = """apiVersion: anvil/v1
kind: ServerProfileTemplate
metadata: {name: g-tpl, tenant: globex}
spec:
  identity:
    nics:
      - {name: eth0, mac: "02:a0:00:00:01:01"}
"""


@dataclass(frozen=True)
class World:
    """globex's things that acme must not reach, and look-alikes that exist nowhere."""

    job: str
    failover: int
    theirs: dict[str, str]
    missing: dict[str, str]


def build(api: Api) -> World:
    store = api.store
    ProfileService(store).import_document(TEMPLATE)
    BladePoolService(store).create("gpool", tenant="globex")
    BladePoolService(store).add("gpool", ("b03",))
    svc = FailoverService(store)
    svc.create_domain("prod")
    fo = svc.open_failover(tenant="globex", profile="db-01", reason="test", domain="prod")
    job = JobService(store).submit_release("db-01", tenant="globex", idempotency_key="globex-key")
    # globex's host pool with one host requested (its profile g-hosts-001 and job), and its quota.
    HostPoolService(store).create("g-hosts", template="g-tpl", tenant="globex", size=1)
    HostPoolService(store).set_quota("globex", 5)
    Reconciler(store).run_once()
    theirs = {"profile": "db-01", "template": "g-tpl", "job": job.id, "failover": str(fo.id), "pool": "gpool",
              "blade": "b02", "tenant": "globex", "hostpool": "g-hosts"}
    missing = {"profile": "zz-01", "template": "zz-tpl", "job": "00000000-0000-4000-8000-000000000000",
               "failover": "987654", "pool": "zzpool", "blade": "b99", "tenant": "zzcorp", "hostpool": "zz-hosts"}
    return World(job.id, fo.id, theirs, missing)


# First path segment → what the route's {name}/{id} names. "appliance" resources belong to no
# tenant (identity pools, failover domains) and are readable by every caller by design (DESIGN §7);
# "admin" routes are refused to a tenant-scoped caller before any look-up.
RESOURCES = {
    "profiles": "profile", "templates": "template", "jobs": "job", "failovers": "failover", "pools": "pool",
    "blades": "blade", "identity-pools": "appliance", "failover-domains": "appliance", "users": "admin",
    "tokens": "admin", "switches": "admin", "failover": "blade", "discovered": "admin", "vm-hosts": "admin",
    # No path parameter today; scoped by the caller's tenant (appliance.services.capacity / changes).
    "capacity": "tenant-own", "usage": "tenant-own", "changes": "tenant-own",
    "host-pools": "hostpool", "host-quotas": "admin",
    "firmware": "admin", "racks": "admin",
    "sites": "admin",     # paired sites: the appliance's; DR tokens' routes have no path parameter
    # DR plans span tenants: every /dr route is refused to a tenant-scoped caller.
    "dr": "admin",
}
# Console pages without a path parameter that show tenant data: each is read as acme and must
# show nothing of globex (the walk below covers pages with a parameter).
CONSOLE_PAGES = ("/", "/blades", "/capacity", "/profiles", "/jobs", "/audit", "/pools")


_REFLECTED: dict[tuple[str, tuple[str, ...]], MetaData] = {}


def _tables(store: Store) -> MetaData:
    """The store's tables as reflected from the database; reflected again only when the set of
    table names changes (reflecting every table took ~3/4 of this module's time: ~250 ms a call)."""
    names = tuple(sorted(inspect(store.engine).get_table_names()))
    key = (str(store.engine.url), names)
    if key not in _REFLECTED:
        _REFLECTED.clear()   # one store at a time: no engine outlives its test
        meta = MetaData()
        meta.reflect(store.engine)
        _REFLECTED[key] = meta
    return _REFLECTED[key]


def digest(store: Store) -> str:
    """Every row of every table but the audit trail (a refused request writes no entry either:
    checked separately), in a stable order; a table made or dropped changes it too."""
    meta = _tables(store)
    h = hashlib.sha256()
    with store.read() as s:
        for name in sorted(meta.tables):
            h.update(f"table {name}\n".encode())
            if name in ("alembic_version",):
                continue
            table = meta.tables[name]
            for row in sorted(repr(tuple(r)) for r in s.execute(select(table))):
                h.update(f"{name}:{row}\n".encode())
    return h.hexdigest()


def audit_count(store: Store) -> int:
    with store.read() as s:
        return len(list(s.scalars(select(AuditRow.id))))


def fill(path: str, kind: str, values: dict[str, str]) -> str:
    out = re.sub(r"{tenant}", values["tenant"], path)
    return re.sub(r"{\w+}", values.get(kind, "zz"), out)


# A name not found comes with "did you mean …?" drawn from what the caller sees (appliance.
# services.scope): it depends on the name asked, so globex's name and a missing one may get
# different suggestions. Each must name only what acme may see; then it is set aside.
HINT = re.compile(r"; did you mean (?P<names>[^?]{1,200})\?")
ACME_SEES = {"web-01", "web-02", "b01", "spares"}


def without_hints(text: str) -> str:
    for m in HINT.finditer(text):
        names = set(re.split(r", | or ", m.group("names").removeprefix("tenant ")))
        assert names <= ACME_SEES, f"a suggestion names what acme may not see: {m.group(0)}"
    assert "exists in tenant" not in text, f"a tenant-scoped caller is told of another tenant: {text[:300]}"
    return HINT.sub("", text)


def normalised(text: str, value: str, placeholder: str = "<VALUE>") -> str:
    text = without_hints(text).replace(value, placeholder)
    # The console's pages carry a fresh request id nowhere, but JSON may quote the value with
    # different lengths in a repr; nothing else differs between the two answers.
    return text


def classify(path: str) -> str:
    segment = path.removeprefix("/api/v1").strip("/").split("/")[0]
    if segment not in RESOURCES:
        pytest.fail(f"route {path} is not classified for the two-tenant walk: add its first segment "
                    f"{segment!r} to RESOURCES in {__file__}")
    return RESOURCES[segment]


BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/profiles/{name}/assign"): {},
    ("POST", "/profiles/{name}/release"): {},
    ("POST", "/profiles/{name}/dry-run"): {},
    ("POST", "/templates/{name}/instantiate"): {"name": "from-walk"},
    ("POST", "/blades/{name}/power"): {"action": "on"},
    ("POST", "/blades/{name}/boot"): {"device": "network"},
    ("POST", "/blades/{name}/maintenance"): {"on": True},
    ("PUT", "/users/{name}/password"): {"password": "longenough1"},
    ("PATCH", "/failover-domains/{name}"): {"description": "x"},
    ("PUT", "/pools/{name}/firmware"): {"firmwareBaseline": None},
    ("PATCH", "/host-pools/{name}"): {"min": 0},
    ("PUT", "/host-pools/{name}/size"): {"size": 1},
    ("POST", "/host-pools/{name}/hosts"): {"count": 1},
    ("POST", "/host-pools/{name}/hosts/{host}/metrics"): {"cpu": 50},
    ("PUT", "/host-quotas/{tenant}"): {"maxHosts": 1},
    ("POST", "/host-pools/{name}/webhooks"): {"url": "http://127.0.0.1:9/hook", "secret": "s" * 20},
}


@pytest.mark.parametrize("who", ["acme-op", "acme-viewer"])
async def test_every_api_route_answers_a_second_tenants_names_as_if_they_did_not_exist(api: Api, who: str) -> None:
    world = build(api)
    c, h = api.client, api.auth(who)
    walked = 0
    # Each route must leave the store as it was, so one digest taken first is every route's "before".
    before, entries = digest(api.store), audit_count(api.store)
    for op in all_ops():
        if "{" not in op.path:
            continue
        kind = classify(op.path)
        if kind == "appliance" and op.method == "GET":
            continue    # the appliance's own resources: the same for every caller
        theirs_path = "/api/v1" + fill(op.path, kind, world.theirs)
        missing_path = "/api/v1" + fill(op.path, kind, world.missing)
        payload = BODIES.get((op.method, op.path))
        got = []
        for path in (theirs_path, missing_path):
            resp = await c.request(op.method, path, headers=h, json=payload)
            got.append((resp.status, await resp.text()))
        walked += 1
        (s1, t1), (s2, t2) = got
        value, other = world.theirs.get(kind, ""), world.missing.get(kind, "")
        assert s1 == s2, f"{op.method} {op.path}: {s1} for globex's {value!r} but {s2} for a missing one"
        assert s1 >= 400, f"{op.method} {op.path}: {s1} for globex's {value!r}"
        if value and other:
            assert normalised(t1, value) == normalised(t2, other), f"{op.method} {op.path}: the bodies differ"
        assert "globex" not in normalised(t1, value), f"{op.method} {op.path}: {t1[:200]}"
        assert digest(api.store) == before and audit_count(api.store) == entries, f"{op.method} {op.path} wrote"
    assert walked >= 20


async def test_lists_with_a_second_tenants_name_show_none_of_its_data(api: Api) -> None:
    world = build(api)
    c, h = api.client, api.auth("acme-op")
    for op in all_ops():
        if op.method != "GET" or "{" in op.path:
            continue
        params = {"tenant": "globex"} if any(p.name == "tenant" for p in op.params) else {}
        resp = await c.get("/api/v1" + op.path, headers=h, params=params)
        text = await resp.text()
        for secret in ("globex", "db-01", "g-tpl", "gpool", "g-hosts", world.job):
            assert secret not in text, f"GET {op.path}?tenant=globex shows {secret!r}: {text[:300]}"


async def test_usage_and_console_pages_without_parameters_show_none_of_a_second_tenants_data(api: Api) -> None:
    world = build(api)
    c, h = api.client, api.auth("acme-op")
    resp = await c.get("/api/v1/usage", headers=h, params={"from": "2000-01-01", "to": "2100-01-01",
                                                          "tenant": "globex", "format": "csv"})
    assert resp.status == 200 and "globex" not in await resp.text()
    UserService(api.store).add("ann", "password1", role="viewer", tenant="acme")
    await login(c, "ann", "password1")
    for path in CONSOLE_PAGES:
        resp = await c.get(path, allow_redirects=False)
        text = await resp.text()
        assert resp.status == 200, path
        for secret in ("globex", "db-01", "g-tpl", "gpool", world.job, "b02"):
            assert secret not in text, f"console {path} shows {secret!r} to acme"


async def test_pools_and_blades_of_a_second_tenant_are_not_placement_targets(api: Api) -> None:
    world = build(api)
    c, h = api.client, api.auth("acme-op")
    results = {}
    for pool in ("gpool", "zzpool"):
        before = digest(api.store)
        assign = await c.post("/api/v1/profiles/web-02/assign", json={"pool": pool}, headers=h)
        dry = await c.post("/api/v1/profiles/web-02/dry-run", json={"pool": pool}, headers=h)
        results[pool] = (assign.status, (await assign.json())["detail"].replace(pool, "P"),
                         dry.status, (await dry.json())["detail"].replace(pool, "P"))
        assert digest(api.store) == before
    assert results["gpool"] == results["zzpool"] and results["gpool"][0] == 404
    for blade in ("b02", "b03", "b99"):
        dry = await c.post("/api/v1/profiles/web-02/dry-run", json={"blade": blade}, headers=h)
        assert dry.status == 403, blade
    # From the shared spares, acme never gets a blade of globex's pool (b03 is reserved for globex).
    placement = await (await c.post("/api/v1/profiles/web-02/dry-run", json={}, headers=h)).json()
    assert placement["best"] not in (None, "b03") and placement["chosen"] == [placement["best"]]
    assert world.job


async def test_idempotency_keys_belong_to_their_caller(api: Api) -> None:
    build(api)   # globex's release job was sent with Idempotency-Key "globex-key"
    c, h = api.client, api.auth("acme-op")
    mine = await c.post("/api/v1/profiles/web-02/assign", json={}, headers={**h, "Idempotency-Key": "globex-key"})
    assert mine.status == 202
    job = await mine.json()
    assert job["tenant"] == "acme" and job["subject"] == "profile acme/web-02" and "db-01" not in str(job)
    again = await c.post("/api/v1/profiles/web-02/assign", json={}, headers={**h, "Idempotency-Key": "globex-key"})
    assert again.status == 202 and (await again.json())["id"] == job["id"]
    other = await c.post("/api/v1/profiles/web-01/release", json={}, headers={**h, "Idempotency-Key": "globex-key"})
    assert other.status == 422 and "different request" in (await other.json())["detail"]
    # Another caller of the same tenant has keys of its own.
    viewer_op = api.auth("operator")
    theirs = await c.post("/api/v1/profiles/web-01/release", json={"tenant": "acme"},
                          headers={**viewer_op, "Idempotency-Key": "globex-key"})
    assert theirs.status == 202 and (await theirs.json())["id"] != job["id"]


async def test_an_identity_clash_never_names_another_tenants_profile(api: Api) -> None:
    c, h = api.client, api.auth("acme-op")
    clash = await c.post("/api/v1/profiles", data=profile_doc("copycat", "acme", 3),   # globex/db-01's MAC
                         headers={**h, "Content-Type": "application/yaml"})
    body = await clash.json()
    assert clash.status == 400 and "is already in use" in body["detail"]
    assert "globex" not in str(body) and "db-01" not in str(body)
    own = await c.post("/api/v1/profiles", data=profile_doc("copycat", "acme", 1),      # acme/web-01's MAC
                       headers={**h, "Content-Type": "application/yaml"})
    assert own.status == 400 and "acme/web-01" in (await own.json())["detail"]


# -- the console --------------------------------------------------------------------------

CONSOLE_FORMS: dict[str, dict[str, str]] = {
    "/blades/{name}/power": {"action": "on"},
    "/profiles/{tenant}/{name}/assign": {"target": "pool:spares"},
    "/profiles/{tenant}/{name}/release": {},
    "/failover/blades/{name}/confirm-fenced": {},
    "/failover/blades/{name}/clear-failed": {},
    "/discovered/{mac}/dismiss": {},
    "/discovered/{mac}/enroll": {"name": "walk-1", "bmc": "fake://walk-1", "username": "u", "password": "p"},
    "/identity-pools/{name}/delete": {},
    "/pools/{name}/blades": {"blades": "b01"},
    "/pools/{name}/remove": {"blade": "b01"},
    "/pools/{name}/grant": {"tenant": "acme"},
    "/pools/{name}/delete": {},
    "/templates/{tenant}/{name}/instantiate": {"prefix": "walk-", "count": "1"},
    "/switches/{name}/cable": {"blade": "b01", "nic": "eth0", "port": "9"},
    "/switches/{name}/ports": {"port": "9", "native": "10"},
    "/failover-domains/{name}/update": {"description": "x"},
    "/failover-domains/{name}/delete": {},
    "/failover-domains/{name}/drill": {},
    "/failover-domains/{name}/drill-back": {"failover": "1"},
    "/users/{name}/password": {"password": "longenough1"},
    "/users/{name}/delete": {},
    "/tokens/{id}/revoke": {"name": "x"},
    "/host-pools/{tenant}/{name}/size": {"size": "1"},
    "/host-pools/{tenant}/{name}/hosts/{host}/release": {},
    "/host-pools/{tenant}/{name}/delete": {},
}


def console_routes(app: web.Application) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path") or ""
        # /rack/v1 is a rack controller's (its rack token, scoped to its rack: tests/unit/boot/test_rack_region.py).
        skip = ("/api/", "/boot/", "/static", "/events/", "/baremetal", "/rack/")
        if not path or path.startswith(skip) or "{" not in path:
            continue
        if route.method in ("GET", "POST"):
            out.append((route.method, path))
    return out


async def test_every_console_page_and_form_answers_a_second_tenants_names_as_if_they_did_not_exist(
        api: Api) -> None:
    world = build(api)
    UserService(api.store).add("ann", "password1", role="admin", tenant="acme")
    c = api.client
    csrf = await login(c, "ann", "password1")
    routes = console_routes(c.server.app)
    assert len(routes) >= 8
    before, entries = digest(api.store), audit_count(api.store)   # every form's "before": none may write
    for method, path in routes:
        kind = classify(path)
        values = {**world.theirs}
        if kind == "template":
            kind = "profile"
        if "{tenant}" in path and kind == "profile":
            kind = "profile"
        theirs_path, missing_path = fill(path, kind, world.theirs), fill(path, kind, world.missing)
        form = CONSOLE_FORMS.get(path)
        if method == "POST" and form is None:
            pytest.fail(f"console form {path} has no body in CONSOLE_FORMS of {__file__}")
        got = []
        for p in (theirs_path, missing_path):
            if method == "GET":
                resp = await c.get(p, allow_redirects=False)
            else:
                resp = await c.post(p, data={**(form or {}), "csrf_token": csrf}, allow_redirects=False)
            got.append((resp.status, await resp.text()))
        (s1, t1), (s2, t2) = got
        value, other = values.get(kind, ""), world.missing.get(kind, "")
        assert s1 == s2 and s1 >= 400, f"{method} {path}: {s1} vs {s2}"
        t1 = without_hints(t1).replace("globex", "<T>").replace(value, "<V>")
        t2 = without_hints(t2).replace("zzcorp", "<T>").replace(other, "<V>")
        assert t1 == t2, f"{method} {path}: the pages differ"
        assert digest(api.store) == before and audit_count(api.store) == entries, f"{method} {path} wrote"
    # The assign form with another tenant's pool: the same "not found" as a missing pool.
    pages = []
    for pool in ("gpool", "zzpool"):
        resp = await c.post("/profiles/acme/web-02/assign", data={"target": f"pool:{pool}", "csrf_token": csrf},
                            allow_redirects=False)
        pages.append((resp.status, (await resp.text()).replace(pool, "P")))
    assert pages[0] == pages[1] and pages[0][0] == 404


# -- the Bare Metal (Ironic-compatible) API ------------------------------------------------------

# Segment after /baremetal/v1 → what its {node}/{port}/{driver} names. Drivers are the appliance's
# (the same list for every caller); "{tail}" is the catch-all that answers 501/404 for everything else.
BAREMETAL = {"nodes": "node", "ports": "port", "drivers": "appliance", "{tail:.*}": "anything"}
BAREMETAL_BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/nodes/{node}"): [{"op": "add", "path": "/extra/x", "value": 1}],
    ("PUT", "/v1/nodes/{node}/states/provision"): {"target": "undeploy"},
    ("PUT", "/v1/nodes/{node}/states/power"): {"target": "power off"},
    ("PUT", "/v1/nodes/{node}/maintenance"): {"reason": "x"},
}
IRONIC = {"X-OpenStack-Ironic-API-Version": "latest"}


def baremetal_kind(path: str) -> str:
    segment = path.removeprefix("/v1").strip("/").split("/")[0]
    if segment not in BAREMETAL:
        pytest.fail(f"Bare Metal API route {path} is not classified for the two-tenant walk: add its first segment "
                    f"{segment!r} to BAREMETAL in {__file__}")
    return BAREMETAL[segment]


def baremetal_values(api: Api) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """globex's node (b02, by name and by UUID) and its NIC's port; look-alikes that exist nowhere."""
    with api.store.read() as s:
        b02 = s.scalar(select(BladeRow.uuid).where(BladeRow.name == "b02"))
    assert b02 is not None
    ghost = "00000000-0000-4000-8000-0000000000b9"
    theirs = {"node": ["b02", b02], "port": [port_uuid(b02, "aa:00:00:00:00:02")],
              "anything": ["v1/nodes/b02/vifs", f"v1/nodes/{b02}/bios"]}
    missing = {"node": ["b99", ghost], "port": [port_uuid(ghost, "aa:00:00:00:00:99")],
               "anything": ["v1/nodes/b99/vifs", f"v1/nodes/{ghost}/bios"]}
    return theirs, missing


@pytest.mark.parametrize("who", ["acme-op", "acme-viewer"])
async def test_every_baremetal_route_answers_a_second_tenants_nodes_as_if_they_did_not_exist(
        api: Api, who: str) -> None:
    build(api)
    theirs, missing = baremetal_values(api)
    c = api.client
    headers = {**IRONIC, "X-Auth-Token": api.tokens[who]}
    walked = 0
    before, entries = digest(api.store), audit_count(api.store)   # every route's "before": none may write
    for route in BAREMETAL_ROUTES:
        if "{" not in route.path:
            continue
        kind = baremetal_kind(route.path)
        if kind == "appliance":
            continue    # the appliance's drivers: the same for every caller
        methods = ["GET", "PUT", "DELETE"] if route.method == "*" else [route.method]
        for method in methods:
            for mine, other in zip(theirs[kind], missing[kind], strict=True):
                path = re.sub(r"{[^}]+}", mine, route.full_path)
                ghost = re.sub(r"{[^}]+}", other, route.full_path)
                body = BAREMETAL_BODIES.get((method, route.path))
                got = []
                for p in (path, ghost):
                    resp = await c.request(method, p, headers=headers, json=body)
                    got.append((resp.status, await resp.text()))
                (s1, t1), (s2, t2) = got
                assert s1 == s2 and s1 >= 400, f"{method} {route.path}: {s1} for globex's {mine!r}, {s2} for missing"
                assert t1.replace(mine, "<V>") == t2.replace(other, "<V>"), f"{method} {route.path}: bodies differ"
                assert "globex" not in t1 and "db-01" not in t1, f"{method} {route.path}: {t1[:200]}"
                assert digest(api.store) == before and audit_count(api.store) == entries, f"{method} {route.path}"
                walked += 1
    assert walked >= 15


async def test_baremetal_lists_show_none_of_a_second_tenants_nodes_or_ports(api: Api) -> None:
    world = build(api)
    theirs, _ = baremetal_values(api)
    headers = {**IRONIC, "X-Auth-Token": api.tokens["acme-op"]}
    for route in BAREMETAL_ROUTES:
        if route.method != "GET" or "{" in route.path:
            continue
        resp = await api.client.get(route.full_path, headers=headers)
        text = await resp.text()
        assert resp.status == 200, route.path
        for secret in ("globex", "db-01", "b02", theirs["node"][1], theirs["port"][0], "aa:00:00:00:00:02",
                       world.job):
            assert secret not in text, f"GET {route.full_path} shows {secret!r}: {text[:300]}"
