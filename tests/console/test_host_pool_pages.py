"""The console's host pools: create a pool, see its hosts, set its size, release a host."""

from __future__ import annotations

import re

from appliance.services.host_reconcile import Reconciler
from appliance.services.users import UserService
from tests.api.conftest import Api
from tests.api.test_host_pools import world
from tests.console.test_console_forms import login


async def test_an_operator_runs_a_pool_from_the_console(api: Api) -> None:
    world(api)
    UserService(api.store).add("ann", "password1", role="operator", tenant="acme")
    c = api.client
    csrf = await login(c, "ann", "password1")
    page = await (await c.get("/host-pools")).text()
    assert "No host pool yet." in page and 'value="acme/kvm"' in page and "globex/kvm" not in page
    made = await c.post("/host-pools", data={"name": "east", "template": "acme/kvm", "size": "2", "max": "4",
                                             "spread": "chassis", "csrf_token": csrf}, allow_redirects=False)
    assert made.status == 303 and made.headers["Location"].startswith("/host-pools/acme/east?msg=")
    Reconciler(api.store).run_once()
    shown = await (await c.get("/host-pools/acme/east")).text()
    assert "0 of 2 hosts ready" in shown and "east-001" in shown and "east-002" in shown
    assert shown.count("<strong>host.requested</strong>") == 2 and "No webhook" in shown
    host = re.search(r'data-host="([0-9a-f-]{36})"', shown)
    assert host is not None
    sized = await c.post("/host-pools/acme/east/size", data={"size": "3", "csrf_token": csrf}, allow_redirects=False)
    assert sized.status == 303 and "converges%20to%203%20hosts" in sized.headers["Location"]
    too_big = await c.post("/host-pools/acme/east/size", data={"size": "9", "csrf_token": csrf})
    assert too_big.status == 409 and "has max 4; 9 hosts asked" in await too_big.text()
    released = await c.post(f"/host-pools/acme/east/hosts/{host.group(1)}/release",
                            data={"replace": "on", "csrf_token": csrf}, allow_redirects=False)
    assert released.status == 303 and "will%20be%20replaced" in released.headers["Location"]
    listed = await (await c.get("/host-pools")).text()
    assert 'data-pool="east"' in listed and "converging" in listed
