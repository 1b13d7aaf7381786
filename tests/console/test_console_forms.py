"""Console sessions and forms without a browser: login, cookie flags, CSRF on every form, roles."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from appliance.services.users import UserService
from tests.api.conftest import Api


async def login(c: TestClient, name: str, password: str) -> str:
    """Log in through the form; returns the page's CSRF token."""
    page = await (await c.get("/login")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    resp = await c.post("/login", data={"username": name, "password": password, "csrf_token": token.group(1),
                                        "next": "/"}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    home = await (await c.get("/")).text()
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', home)
    assert csrf is not None
    return csrf.group(1)


async def test_pages_need_a_session_and_login_needs_its_form_token(api: Api) -> None:
    UserService(api.store).add("ann", "password1", role="operator")
    c = api.client
    resp = await c.get("/profiles", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=")
    forged = await c.post("/login", data={"username": "ann", "password": "password1", "csrf_token": "x"},
                          allow_redirects=False)
    assert forged.status == 403
    wrong = await c.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await wrong.text())
    assert token is not None
    bad = await c.post("/login", data={"username": "ann", "password": "nope-nope", "csrf_token": token.group(1)})
    assert bad.status == 401 and "Wrong user name or password" in await bad.text()
    await login(c, "ann", "password1")
    assert "Dashboard" in await (await c.get("/")).text()


async def test_forms_without_the_csrf_token_are_refused(api: Api) -> None:
    UserService(api.store).add("ann", "password1", role="operator")
    c = api.client
    csrf = await login(c, "ann", "password1")
    for path, data in (("/blades/b03/power", {"action": "on"}), ("/profiles/acme/web-02/assign",
                                                                  {"target": "blade:b03"}),
                       ("/profiles", {"document": "x"}), ("/logout", {})):
        refused = await c.post(path, data=data, allow_redirects=False)
        assert refused.status == 403, path
        bad = await c.post(path, data={**data, "csrf_token": "forged"}, allow_redirects=False)
        assert bad.status == 403, path
    ok = await c.post("/blades/b03/power", data={"action": "on", "csrf_token": csrf}, allow_redirects=False)
    assert ok.status == 303
    entries = (await (await c.get("/api/v1/audit?resource=blade")).json())["items"]
    assert entries[0]["who"] == "user:ann" and entries[0]["origin"].startswith("console ")


async def test_a_viewer_sees_no_assign_button_and_gets_403(api: Api) -> None:
    UserService(api.store).add("vic", "password1", role="viewer")
    c = api.client
    csrf = await login(c, "vic", "password1")
    page = await (await c.get("/profiles/acme/web-02")).text()
    assert "assign-button" not in page and "can view this profile only" in page
    refused = await c.post("/profiles/acme/web-02/assign", data={"target": "pool:spares", "csrf_token": csrf})
    assert refused.status == 403
    api_refused = await c.post("/api/v1/profiles/web-02/assign", json={"tenant": "acme"},
                               headers={"X-CSRF-Token": csrf})
    assert api_refused.status == 403


async def test_import_errors_are_shown_at_their_line(api: Api) -> None:
    UserService(api.store).add("ann", "password1", role="operator")
    c = api.client
    csrf = await login(c, "ann", "password1")
    doc = "apiVersion: anvil/v1\nkind: ServerProfile\nmetadata: {name: p1, tenant: acme}\nspec:\n  identity:\n" \
          "    nics:\n      - {name: eth0, mac: \"nope\"}\n"
    resp = await c.post("/profiles", data={"document": doc, "csrf_token": csrf})
    page = await resp.text()
    assert resp.status == 400
    assert re.search(r'<li id="line-7" value="7" class="bad" data-line="7">.*?spec.identity.nics\[0\].mac', page,
                     re.S)
