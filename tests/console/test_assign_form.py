"""The assign form offers only what fits: fitting blades first (the best one selected and named
in the confirmation), the others greyed out with the dry run's reason, each pool once; with
nothing that fits there is no Assign; a stale choice is refused before any job exists."""

from __future__ import annotations

import re

from appliance.services.blade_pools import BladePoolService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.services.users import UserService
from tests.api.conftest import Api
from tests.console.test_console_forms import login

BIG = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: big-01, tenant: acme}
spec:
  requirements: {minCpus: 64}
  identity:
    nics:
      - {name: eth0, mac: "02:a0:00:00:00:77"}
"""


def options(page: str) -> list[tuple[str, bool, bool, str]]:
    """(value, disabled, selected, label) of the target select's options."""
    select = page[page.index('<select id="target"'):page.index("</select>", page.index('<select id="target"'))]
    out = []
    for m in re.finditer(r'<option value="([^"]+)"([^>]*)>([^<]*)</option>', select):
        attrs = m.group(2)
        out.append((m.group(1), " disabled" in attrs, " selected" in attrs, m.group(3)))
    return out


async def test_an_operator_sees_fitting_blades_first_and_the_others_greyed_with_why(api: Api) -> None:
    UserService(api.store).add("op", "password1", role="operator")
    BladePoolService(api.store).create("web")
    BladePoolService(api.store).add("web", ("b01",))      # b01 runs acme/web-01: nothing of pool web fits
    c = api.client
    await login(c, "op", "password1")
    page = await (await c.get("/profiles/acme/web-02")).text()
    opts = options(page)
    assert [o[0] for o in opts] == ["pool:spares", "pool:web", "blade:b03", "blade:b04", "blade:b01", "blade:b02"]
    assert [o[0] for o in opts].count("pool:spares") == 1
    by = {o[0]: o for o in opts}
    assert by["pool:spares"][1:3] == (False, True) and "→ b03" in by["pool:spares"][3]
    assert by["pool:web"][1] and "(no blade fits)" in by["pool:web"][3]
    assert not by["blade:b03"][1] and "best fit" in by["blade:b03"][3] and "16 CPUs, 64 GiB" in by["blade:b03"][3]
    assert by["blade:b01"][1] and "bound to profile web-01" in by["blade:b01"][3]
    assert 'data-confirm="Stamp acme/web-02 onto blade b03?"' in page
    assert 'id="assign-button" disabled' not in page


async def test_with_nothing_that_fits_there_is_no_assign_and_a_stale_choice_makes_no_job(api: Api) -> None:
    ProfileService(api.store).import_document(BIG)
    UserService(api.store).add("op", "password1", role="operator")
    c = api.client
    csrf = await login(c, "op", "password1")
    page = await (await c.get("/profiles/acme/big-01")).text()
    assert 'id="nothing-fits"' in page and 'id="assign-button" disabled' in page
    assert all(disabled for _v, disabled, _s, _l in options(page))
    assert "too few CPUs (16 &lt; 64)" in page
    refused = await c.post("/profiles/acme/big-01/assign", data={"target": "blade:b03", "csrf_token": csrf})
    assert refused.status == 409 and "too few CPUs (16 &lt; 64)" in await refused.text()
    assert JobService(api.store).list() == []


async def test_a_tenant_chooses_among_its_pools_and_is_shown_no_blade(api: Api) -> None:
    UserService(api.store).add("ann", "password1", role="operator", tenant="acme")
    BladePoolService(api.store).create("acme-pool", tenant="acme")
    BladePoolService(api.store).create("globex-pool", tenant="globex")
    c = api.client
    await login(c, "ann", "password1")
    page = await (await c.get("/profiles/acme/web-02")).text()
    assert [o[0] for o in options(page)] == ["pool:spares", "pool:acme-pool"]
    assert "b03" not in page and "b02" not in page and "globex" not in page
    assert 'data-confirm="Stamp acme/web-02 onto the best blade of pool spares?"' in page
