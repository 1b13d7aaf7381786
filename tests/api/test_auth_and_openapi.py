"""Every API route needs credentials; roles and CSRF are enforced; the OpenAPI document is the router."""

from __future__ import annotations

import re
from datetime import timedelta

from appliance.api.app import all_ops
from appliance.services.tokens import TokenService
from appliance.services.users import UserService
from tests.api.conftest import Api


def _concrete(path: str) -> str:
    return re.sub(r"{\w+}", "x", path)


async def test_every_api_route_without_credentials_is_401_but_healthz_is_open(api: Api) -> None:
    for op in all_ops():
        resp = await api.client.request(op.method, _concrete(op.full_path))
        if op.public:   # site pairing: the one-time code in the body is its credential
            assert resp.status == 400, (op.method, op.full_path)
            continue
        assert resp.status == 401, (op.method, op.full_path)
        assert resp.content_type == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await api.client.get("/healthz")).status == 200


async def test_expired_and_revoked_tokens_are_refused(api: Api) -> None:
    svc = TokenService(api.store)
    expired = svc.create("short", role="admin", ttl=timedelta(seconds=-1))
    assert (await api.client.get("/api/v1", headers={"Authorization": f"Bearer {expired}"})).status == 401
    ok = await api.client.get("/api/v1", headers=api.auth("viewer"))
    assert ok.status == 200 and (await ok.json())["role"] == "viewer"
    svc.revoke("viewer")
    assert (await api.client.get("/api/v1", headers=api.auth("viewer"))).status == 401


async def test_roles_viewer_reads_operator_assigns_admin_administers(api: Api) -> None:
    c = api.client
    assert (await c.get("/api/v1/blades", headers=api.auth("viewer"))).status == 200
    resp = await c.post("/api/v1/profiles/web-02/assign", json={"tenant": "acme"}, headers=api.auth("viewer"))
    assert resp.status == 403 and (await resp.json())["title"] == "Forbidden"
    resp = await c.post("/api/v1/profiles/web-02/assign", json={"tenant": "acme"}, headers=api.auth("operator"))
    assert resp.status == 202 and resp.headers["Location"].startswith("/api/v1/jobs/")
    assert (await c.get("/api/v1/users", headers=api.auth("operator"))).status == 403
    assert (await c.get("/api/v1/users", headers=api.auth("admin"))).status == 200
    body = {"name": "new-pool", "kind": "mac", "start": "02:10:00:00:00:01", "end": "02:10:00:00:00:09"}
    assert (await c.post("/api/v1/identity-pools", json=body, headers=api.auth("operator"))).status == 403
    assert (await c.post("/api/v1/identity-pools", json=body, headers=api.auth("admin"))).status == 201


async def test_a_console_session_needs_its_csrf_token_for_api_changes(api: Api) -> None:
    users = UserService(api.store)
    users.add("olga", "password1", role="operator")
    cookie, csrf = users.open_session("olga")
    c = api.client
    c.session.cookie_jar.update_cookies({"anvil_session": cookie})
    assert (await c.get("/api/v1/blades")).status == 200
    refused = await c.post("/api/v1/blades/b03/maintenance", json={"on": True})
    assert refused.status == 403 and "CSRF" in (await refused.json())["detail"]
    ok = await c.post("/api/v1/blades/b03/power", json={"action": "on"}, headers={"X-CSRF-Token": csrf})
    assert ok.status == 200 and (await ok.json())["power"] in ("on", "off")


async def test_the_openapi_document_lists_exactly_the_routes_the_app_serves(api: Api) -> None:
    resp = await api.client.get("/api/v1/openapi.json", headers=api.auth("viewer"))
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    served = set()
    for route in api.client.server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/") and route.method != "HEAD":
            served.add((route.method, path))
    assert documented == served
    for item in doc["paths"].values():
        for op in item.values():
            assert "401" in op["responses"] and "403" in op["responses"]
