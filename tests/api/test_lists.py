"""Lists of the API and the console at a glance: each blade's profile, power and health (the
monitor's last sample and its age), each profile's blade; search, sort and counts; a
tenant sees none of another tenant's blades, whatever it searches for."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appliance.services.failover import FailoverService, HealthSample
from appliance.services.inventory import Inventory
from appliance.services.users import UserService
from tests.api.conftest import Api
from tests.console.test_console_forms import login


def _samples(api: Api) -> None:
    fo = FailoverService(api.store)
    fo.record_health("b01", HealthSample(ok=True, power="on", health="ok",
                                         at=datetime.now(UTC) - timedelta(seconds=30)))
    fo.record_health("b02", HealthSample(ok=False, detail="BMC unreachable: timeout"))


async def test_the_blade_list_shows_binding_power_and_health_and_sorts_and_searches(api: Api) -> None:
    _samples(api)
    c, h = api.client, api.auth("admin")
    page = await (await c.get("/api/v1/blades", headers=h)).json()
    by = {b["name"]: b for b in page["items"]}
    assert (by["b01"]["profile"], by["b01"]["power"], by["b01"]["health"]) == ("acme/web-01", "on", "ok")
    assert 30 <= by["b01"]["healthAge"] < 90 and by["b02"]["health"] == "unreachable"
    assert by["b03"]["power"] is None and by["b03"]["healthAge"] is None
    by_tenant = await (await c.get("/api/v1/blades?sort=tenant", headers=h)).json()
    assert [b["name"] for b in by_tenant["items"]] == ["b01", "b02", "b03", "b04"]
    second = await (await c.get("/api/v1/blades?sort=state&limit=2&offset=2", headers=h)).json()
    assert [b["name"] for b in second["items"]] == ["b03", "b04"] and second["total"] == 4
    found = await (await c.get("/api/v1/blades?search=globex", headers=h)).json()
    assert [b["name"] for b in found["items"]] == ["b02"]
    bad = await c.get("/api/v1/blades?sort=power", headers=h)
    assert bad.status == 400
    detail = await (await c.get("/api/v1/blades/b01", headers=h)).json()
    assert (detail["power"], detail["health"], detail["tenant"]) == ("on", "ok", "acme")
    rack = await (await c.get("/api/v1/rack", headers=h)).json()
    assert {b["name"]: b["power"] for ch in rack for b in ch["blades"]}["b01"] == "on"
    profiles = await (await c.get("/api/v1/profiles?sort=blade", headers=h)).json()
    assert [(p["name"], p["blade"]) for p in profiles["items"]] == [("web-01", "b01"), ("db-01", "b02"),
                                                                    ("web-02", None)]


async def test_a_tenant_searching_blades_finds_only_its_own(api: Api) -> None:
    _samples(api)
    c, h = api.client, api.auth("acme-viewer")
    for query in ("search=globex", "search=b0", "tenant=globex", "profile=globex/db-01", "sort=tenant"):
        got = await (await c.get(f"/api/v1/blades?{query}", headers=h)).json()
        assert {b["name"] for b in got["items"]} <= {"b01"}, query
        assert "globex" not in str(got), query


async def test_the_console_lists_show_power_health_and_binding_with_counts(api: Api) -> None:
    _samples(api)
    UserService(api.store).add("ann", "password1", role="operator")
    c = api.client
    await login(c, "ann", "password1")
    page = await (await c.get("/blades")).text()
    assert "4 shown" in page and "2 active" in page and "2 spare" in page
    row = page[page.index('data-blade="b01"'):page.index('data-blade="b02"')]
    assert "acme/web-01" in row and ">on<" in row and ">ok<" in row and "ago" in row
    assert "unreachable" in page[page.index('data-blade="b02"'):]
    searched = await (await c.get("/blades?q=globex&sort=profile")).text()
    assert 'data-blade="b02"' in searched and 'data-blade="b01"' not in searched and "1 shown" in searched
    bad = await c.get("/blades?sort=power")
    assert bad.status == 400 and "is not one of" in await bad.text()
    dashboard = await (await c.get("/")).text()
    slot = dashboard[dashboard.index('id="slot-b01"'):dashboard.index('id="slot-b02"')]
    assert "power on" in slot and ">ok<" in slot
    profiles = await (await c.get("/profiles?q=web&sort=blade")).text()
    assert "2 of 3" in profiles and 'data-profile="acme/web-01"' in profiles and "db-01" not in profiles
    assert '<a href="/blades/b01">b01</a>' in profiles


async def test_list_pages_waiting_on_the_store_leave_other_requests_their_threads(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many clients paging at once wait in the list pages' own threads (appliance.api.offload.Lane, READS),
    not in the process's default pool, where every other request's store calls (a deploy's, a
    show's, the monitor's) would queue behind them. 40 pages: more than any default pool holds."""
    release = threading.Event()
    real = Inventory.page

    def slow_page(self: Inventory, *args: Any, **kwargs: Any) -> Any:
        release.wait(20)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Inventory, "page", slow_page)
    c, h = api.client, api.auth("admin")
    pages = [asyncio.create_task(c.get("/api/v1/blades?limit=2", headers=h)) for _ in range(40)]
    try:
        await asyncio.sleep(0.5)
        async with asyncio.timeout(10):
            shown = await c.get("/api/v1/blades/b01", headers=h)
        assert shown.status == 200 and (await shown.json())["name"] == "b01"
        assert not any(p.done() for p in pages)
    finally:
        release.set()
        answers = await asyncio.gather(*pages)
    assert all(a.status == 200 for a in answers)
    assert [b["name"] for b in (await answers[0].json())["items"]] == ["b01", "b02"]


async def test_a_list_page_is_answered_while_the_default_pool_is_full_of_other_work(api: Api) -> None:
    """A page's token check and read have threads of their own (``CHECKS``, ``READS``): with the
    process's default pool taken by other requests' store calls (a hundred deploys' writes queued
    on the writer lock), a page is still answered instead of waiting behind all of them."""
    release = threading.Event()
    loop = asyncio.get_running_loop()
    busy = [loop.run_in_executor(None, release.wait, 20) for _ in range(40)]
    try:
        async with asyncio.timeout(10):
            page = await api.client.get("/api/v1/blades?limit=2", headers=api.auth("viewer"))
        assert page.status == 200 and [b["name"] for b in (await page.json())["items"]] == ["b01", "b02"]
        assert not any(b.done() for b in busy)
    finally:
        release.set()
        await asyncio.gather(*busy)
