"""A blade pool's firmware baseline over REST: set at create or with PUT /pools/{name}/firmware,
checked against the baselines on the appliance, and the default of firmware updates of the pool."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import Api


def _baseline(state: Path) -> None:
    folder = state / "firmware" / "baselines"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lab-2026.yaml").write_text('name: lab-2026\ncomponents:\n  BIOS: "2.19.1"\n')


async def test_a_pool_names_a_baseline_and_firmware_updates_of_the_pool_use_it(api: Api, tmp_path: Path) -> None:
    _baseline(tmp_path / "state")
    c, admin = api.client, api.auth("admin")
    for bad, status, text in (
            ({"name": "fwp", "firmwareBaseline": "lab-2062"}, 404, "firmware baseline 'lab-2062' not found; "
                                                                   "did you mean lab-2026?"),
            ({"name": "fwp", "firmwareBaseline": "lab-2026", "firmwarePolicy": "sometimes"}, 400, "firmwarePolicy"),
            ({"name": "fwp", "firmwarePolicy": "refuse"}, 400, "firmwarePolicy")):
        r = await c.post("/api/v1/pools", json=bad, headers=admin)
        assert (r.status, text in await r.text()) == (status, True), (bad, r.status, await r.text())
    assert (await c.get("/api/v1/pools/fwp", headers=admin)).status == 404, "a refused create wrote nothing"

    r = await c.post("/api/v1/pools", json={"name": "fwp", "blades": ["b03", "b04"], "firmwareBaseline": "lab-2026",
                                            "firmwarePolicy": "refuse"}, headers=admin)
    assert r.status == 201, await r.text()
    assert {k: (await r.json())[k] for k in ("firmwareBaseline", "firmwarePolicy")} == {
        "firmwareBaseline": "lab-2026", "firmwarePolicy": "refuse"}

    r = await c.put("/api/v1/pools/fwp/firmware", json={"firmwareBaseline": "lab-2026",
                                                        "firmwarePolicy": "update-first"}, headers=admin)
    assert r.status == 200, await r.text()
    got = await (await c.get("/api/v1/pools/fwp", headers=admin)).json()
    assert (got["firmwareBaseline"], got["firmwarePolicy"]) == ("lab-2026", "update-first")
    assert (await c.put("/api/v1/pools/fwp/firmware", json={"firmwareBaseline": "lab-2026"},
                        headers=api.auth("acme-op"))).status == 403

    # No baseline in the request: the pool's.
    r = await c.post("/api/v1/firmware/updates", json={"pool": "fwp"}, headers=admin)
    assert r.status == 202, await r.text()
    job = await r.json()
    assert job["subject"] == "firmware lab-2026 on pool fwp", job
    r = await c.post("/api/v1/firmware/updates", json={"pool": "spares"}, headers=admin)
    assert r.status == 400 and "blade pool spares names no firmware baseline" in await r.text(), await r.text()

    r = await c.put("/api/v1/pools/fwp/firmware", json={"firmwareBaseline": None}, headers=admin)
    assert r.status == 200 and (await r.json())["firmwareBaseline"] is None, await r.text()
    r = await c.get("/api/v1/firmware/compliance", params={"pool": "fwp"}, headers=admin)
    assert r.status == 400 and "blade pool fwp names no firmware baseline" in await r.text(), await r.text()
