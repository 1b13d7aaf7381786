"""Hostile bodies for every parser the appliance runs on network input: each gets a 4xx naming
the problem, bounded in size, with no traceback logged — authenticated API routes, document
routes, the console's forms, and the unauthenticated boot routes.

(8f9e50f answered 500 with ~200 KB of traceback for deep YAML or JSON, 8 MB for an XML root
with 80,000 attributes, and stalled /healthz for 5 s per 1 MiB YAML of duplicate keys.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance.api.app import all_ops
from appliance.boot.http import create_boot_app
from appliance.config import load_settings
from appliance.services.users import UserService
from appliance.sites.service import _issue_token, _new_token
from appliance.store import Store
from tests.api.conftest import Api
from tests.console.test_console_forms import login

DEEP_JSON = b'{"a":' * 990 + b"1" + b"}" * 990
DEEP_LIST = b"[" * 990 + b"]" * 990
DUP_JSON = b'{"name": "a", "name": "b"}'
DEEP_YAML = "[" * 400 + "]" * 400 + "\n"
DUP_YAML = "apiVersion: anvil/v1\n" + "".join(f"k: {i}\n" for i in range(80_000))
ATTR_XML = "<ServerProfile xmlns='urn:anvil:profile:v1' " + " ".join(f'a{i}="x"' for i in range(80_000)) + "/>"
DEEP_XML = "<ServerProfile xmlns='urn:anvil:profile:v1'>" + "<a>" * 5000 + "</a>" * 5000 + "</ServerProfile>"
MAX_ERROR_BODY = 16 * 1024


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, f"logged: {[r.getMessage()[:200] for r in bad]}"


def _path(op_path: str) -> str:
    return "/api/v1" + (op_path.replace("{name}", "web-02").replace("{id}", "1").replace("{host}", "h-1")
                        .replace("{tenant}", "acme"))


@pytest.mark.usefixtures("no_tracebacks")
async def test_every_json_body_route_refuses_deep_nesting_and_duplicate_keys(api: Api) -> None:
    c, h = api.client, api.auth("admin")
    # Routes for paired sites take only a site's DR token (anything else is 403 before the body is read).
    with api.store.write() as s:
        _issue_token(s, "peer", token := _new_token())
    site = {"Authorization": f"Bearer {token}"}
    tried = 0
    for op in all_ops():
        if op.body is None:
            continue
        for raw, why in ((DEEP_JSON, "nests deeper"), (DEEP_LIST, "nests deeper"), (DUP_JSON, "appears twice")):
            resp = await c.request(op.method, _path(op.path), data=raw,
                                   headers={**(site if op.role == "site" else h), "Content-Type": "application/json"})
            text = await resp.text()
            assert resp.status == 400, (op.method, op.path, resp.status, text[:200])
            assert why in text and len(text) < MAX_ERROR_BODY, (op.method, op.path, text[:200])
        tried += 1
    assert tried >= 10


@pytest.mark.usefixtures("no_tracebacks")
@pytest.mark.parametrize(("doc", "ctype", "why"), [
    (DEEP_YAML, "application/yaml", "nests deeper"),
    (DEEP_JSON.decode(), "application/yaml", "nests deeper"),
    (DUP_YAML, "application/yaml", "appears twice"),
    (ATTR_XML, "application/xml", "attributes"),
    (DEEP_XML, "application/xml", "nest deeper"),
    ("x" * (1024 * 1024 + 10), "application/yaml", "limit is"),
])
async def test_document_routes_refuse_hostile_profiles_briefly(api: Api, doc: str, ctype: str, why: str) -> None:
    c, h = api.client, api.auth("admin")
    for method, path in (("POST", "/api/v1/profiles"), ("PUT", "/api/v1/profiles/web-02"),
                         ("POST", "/api/v1/profile-validation")):
        resp = await c.request(method, path, data=doc.encode(), headers={**h, "Content-Type": ctype})
        text = await resp.text()
        assert resp.status == 400 and why in text, (method, path, resp.status, text[:300])
        assert len(text) < MAX_ERROR_BODY, (method, path, len(text))


async def test_parsing_documents_does_not_stall_the_appliance(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents are parsed on worker threads, never on the event loop's: four large ones at once,
    and /healthz answers between them. (Latency itself is the benchmarks' business: on a loaded
    2-core machine even a free loop answers late.)"""
    from appliance.services.profiles import ProfileService

    c, h = api.client, api.auth("admin")
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real = ProfileService.parse

    def parse(*args: object, **kwargs: object) -> object:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)    # type: ignore[arg-type]

    monkeypatch.setattr(ProfileService, "parse", staticmethod(parse))
    labels = "".join(f"    k{i:05d}: v{i}\n" for i in range(9_000))
    big = f"apiVersion: anvil/v1\nkind: ServerProfile\nmetadata:\n  name: big\n  tenant: acme\n  labels:\n{labels}"

    async def post() -> int:
        resp = await c.post("/api/v1/profile-validation", data=big.encode(),
                            headers={**h, "Content-Type": "application/yaml"})
        await resp.read()
        return resp.status

    posts = [asyncio.create_task(post()) for _ in range(4)]
    answered = 0
    started = time.monotonic()
    while not all(p.done() for p in posts) and time.monotonic() - started < 60:
        assert (await c.get("/healthz")).status == 200
        answered += 1
        await asyncio.sleep(0.01)
    statuses = await asyncio.gather(*posts)
    assert all(s in (200, 400, 503) for s in statuses), statuses
    assert len(threads) == 4 and loop_thread not in threads, "a document was parsed on the event loop"
    assert answered >= 2


@pytest.mark.usefixtures("no_tracebacks")
async def test_boot_routes_refuse_hostile_bodies_without_authentication(store: Store, tmp_path: Path) -> None:
    settings = load_settings(env={"ANVIL_STATE_DIR": str(tmp_path / "state"),
                                  "ANVIL_CONFIG": str(tmp_path / "none.toml")})
    async with TestClient(TestServer(create_boot_app(settings, store=store))) as c:
        for path in ("/boot/callback", "/boot/discover", "/boot/heartbeat"):
            for raw in (DEEP_JSON, DEEP_LIST, DUP_JSON, b"{not json"):
                resp = await c.post(path, data=raw, headers={"Content-Type": "application/json"})
                text = await resp.text()
                assert 400 <= resp.status < 500, (path, resp.status, text[:200])
                assert len(text) < MAX_ERROR_BODY
            huge = await c.post(path, data=b"x" * (300 * 1024), headers={"Content-Type": "application/json"})
            assert huge.status == 413, (path, huge.status)


@pytest.mark.usefixtures("no_tracebacks")
async def test_console_forms_refuse_hostile_input_with_a_page_not_a_500(api: Api) -> None:
    UserService(api.store).add("ann", "password1", role="admin")
    c = api.client
    csrf = await login(c, "ann", "password1")
    for offset in ("99999999999999999999999", "-1", "abc", "1e9"):
        resp = await c.get(f"/audit?offset={offset}")
        assert resp.status == 400 and "offset" in await resp.text(), offset
    assert (await c.get("/audit?offset=50")).status == 200
    bogus = await c.post("/blades/b01/power", data={"action": "bogus", "csrf_token": csrf}, allow_redirects=False)
    assert bogus.status == 400 and "is not a power action" in await bogus.text()
    for doc in (DEEP_YAML, DUP_YAML[:200_000], ATTR_XML):
        resp = await c.post("/profiles", data={"document": doc, "csrf_token": csrf})
        assert resp.status == 400, resp.status
    long_pw = await c.get("/login")
    assert long_pw.status == 200


@pytest.mark.usefixtures("no_tracebacks")
async def test_malformed_form_bodies_are_a_400(api: Api, store: Store, tmp_path: Path) -> None:
    """8f9e50f: a multipart type without its boundary raised inside aiohttp: 500 with a traceback."""
    broken = {"Content-Type": "multipart/form-data"}
    c = api.client
    assert (await c.post("/login", data=b"x=1", headers=broken)).status == 400
    UserService(api.store).add("ann", "password1", role="admin")
    await login(c, "ann", "password1")
    assert (await c.post("/blades/b01/power", data=b"x=1", headers=broken)).status == 400
    settings = load_settings(env={"ANVIL_STATE_DIR": str(tmp_path / "state"),
                                  "ANVIL_CONFIG": str(tmp_path / "none.toml")})
    async with TestClient(TestServer(create_boot_app(settings, store=store))) as boot:
        for path in ("/boot/callback", "/boot/discover", "/boot/heartbeat"):
            assert (await boot.post(path, data=b"x=1", headers=broken)).status == 400, path
