"""The console's capacity page: per pool, chassis and tenant counters and the rack view; in the nav."""

from __future__ import annotations

import re

from appliance.services.users import UserService
from tests.api.conftest import Api
from tests.console.test_console_forms import login


async def test_capacity_page_shows_pools_chassis_tenants_and_each_blades_slot(api: Api) -> None:
    UserService(api.store).add("root", "password1", role="admin")
    c = api.client
    await login(c, "root", "password1")
    resp = await c.get("/capacity")
    text = await resp.text()
    assert resp.status == 200
    assert '<a href="/capacity" aria-current="page">Capacity</a>' in text
    row = re.search(r'<table class="capacity-table" id="cap-chassis">.*?<tr data-name="c1">(.*?)</tr>', text, re.S)
    assert row is not None
    cells = dict(re.findall(r'data-counter="(\w+)">(\d+)<', row.group(1)))
    assert cells == {"total": "4", "spare": "2", "committed": "2", "inUse": "2", "failed": "0", "maintenance": "0"}
    assert "32 / 64" in row.group(1)        # CPUs spare / total
    assert 'id="slot-b01"' in text and "acme/web-01" in text and 'data-state="active"' in text
    assert 'id="cap-tenants"' in text and 'data-name="globex"' in text


async def test_a_tenant_sees_its_own_capacity_only(api: Api) -> None:
    UserService(api.store).add("ann", "password1", role="viewer", tenant="acme")
    c = api.client
    await login(c, "ann", "password1")
    text = await (await c.get("/capacity")).text()
    assert 'data-name="acme"' in text and "globex" not in text and 'id="cap-chassis"' not in text
    assert 'id="slot-b01"' in text and 'id="slot-b02"' not in text
