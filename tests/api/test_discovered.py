"""Discovery from the provisioning network is bounded, and shown to admins to enrol or dismiss.

8f9e50f: 2,000 posts to /boot/discover made 2,000 rows in 3.7 s (130 MB with 1 KiB facts), never
read or pruned by anyone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from appliance.boot.http import BOOT_SERVICE, RateLimit, create_boot_app
from appliance.config import load_settings
from appliance.services.discovered import MAX_FACTS, MAX_FACTS_BYTES
from appliance.services.users import UserService
from appliance.store import Store
from appliance.store.tables import BootDiscoveryRow
from tests.api.conftest import Api
from tests.console.test_console_forms import login


@pytest.fixture
async def boot(store: Store, tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = load_settings(env={"ANVIL_STATE_DIR": str(tmp_path / "boot-state"),
                                  "ANVIL_CONFIG": str(tmp_path / "none.toml")})
    async with TestClient(TestServer(create_boot_app(settings, store=store))) as c:
        yield c


def _rows(store: Store) -> int:
    with store.read() as s:
        return int(s.scalar(select(func.count()).select_from(BootDiscoveryRow)) or 0)


async def test_one_address_flooding_discovery_is_slowed_down(boot: TestClient, store: Store) -> None:
    statuses = []
    for i in range(200):
        resp = await boot.post("/boot/discover", data={"mac": f"52:54:01:00:{i // 256:02x}:{i % 256:02x}",
                                                        "serial": "x" * 1024})
        statuses.append(resp.status)
    assert statuses.count(200) <= 21 and statuses[-1] == 429
    assert _rows(store) == statuses.count(200)


async def test_the_table_and_each_records_facts_are_bounded(boot: TestClient, store: Store) -> None:
    svc = boot.server.app[BOOT_SERVICE]
    svc.discover_limit = RateLimit(per_second=1e6, burst=10**6)      # many sources, as a botnet would be
    svc.discover_cap = 50
    big = {f"k{i}": "v" * 1024 for i in range(100)}
    statuses = [(await boot.post("/boot/discover", data={"mac": f"52:54:02:00:00:{i:02x}", **big})).status
                for i in range(60)]
    assert statuses.count(200) == 50 and statuses[50:] == [429] * 10
    assert _rows(store) == 50
    again = await boot.post("/boot/discover", data={"mac": "52:54:02:00:00:01", "serial": "SN9"})
    assert again.status == 200, "a machine already recorded is updated in place, full or not"
    with store.read() as s:
        rows = list(s.scalars(select(BootDiscoveryRow)))
    assert all(len(r.facts) <= MAX_FACTS and len(str(r.facts)) <= 2 * MAX_FACTS_BYTES for r in rows)
    assert next(r for r in rows if r.mac == "52:54:02:00:00:01").facts == {"serial": "SN9"}


async def test_admins_see_dismiss_and_enrol_discovered_machines(api: Api, boot: TestClient) -> None:
    for mac in ("52:54:03:00:00:01", "52:54:03:00:00:02"):
        assert (await boot.post("/boot/discover", data={"mac": mac, "serial": f"SN-{mac[-2:]}"})).status == 200
    c = api.client
    listed = await (await c.get("/api/v1/discovered", headers=api.auth("admin"))).json()
    assert {d["mac"] for d in listed["items"]} == {"52:54:03:00:00:01", "52:54:03:00:00:02"}
    assert (await c.get("/api/v1/discovered", headers=api.auth("globex-admin"))).status == 403
    assert (await c.delete("/api/v1/discovered/52:54:03:00:00:02", headers=api.auth("admin"))).status == 204
    assert (await c.delete("/api/v1/discovered/52:54:03:00:00:02", headers=api.auth("admin"))).status == 404
    # The console: an appliance admin enrols the other one as a blade.
    UserService(api.store).add("root", "password1", role="admin")
    csrf = await login(c, "root", "password1")
    page = await (await c.get("/discovered")).text()
    assert "52:54:03:00:00:01" in page and "SN-01" in page
    done = await c.post("/discovered/52:54:03:00:00:01/enroll", allow_redirects=False,
                        data={"csrf_token": csrf, "name": "found-1", "bmc": "fake://found-1", "username": "u",
                              "password": "p"})
    assert done.status == 303 and done.headers["Location"] == "/blades/found-1"
    blade = await (await c.get("/api/v1/blades/found-1", headers=api.auth("admin"))).json()
    assert blade["nics"][0]["mac"] == "52:54:03:00:00:01"
    assert (await (await c.get("/api/v1/discovered", headers=api.auth("admin"))).json())["items"] == []
