"""GET /capacity, /usage and /changes: shapes, formats (CSV, JSON lines), bad input naming its
parameter, and a tenant-scoped caller's own numbers only. (The figures themselves are proven
through the engine in tests/unit/engine/test_change_records.py.)"""

from __future__ import annotations

import json

from tests.api.conftest import Api


async def test_capacity_per_pool_chassis_and_tenant_with_cpus_and_memory(api: Api) -> None:
    c = api.client
    got = await (await c.get("/api/v1/capacity", headers=api.auth("admin"))).json()
    assert got["total"] == 4 and got["stamped"] == 2          # the existing counters stay
    assert got["blades"] == {"total": 4, "spare": 2, "committed": 2, "inUse": 2, "failed": 0, "maintenance": 0}
    assert got["cpus"]["committed"] == 32 and got["memoryGiB"]["total"] == 256
    assert [p["name"] for p in got["pools"]] == ["spares"]
    assert [(ch["name"], ch["blades"]["total"]) for ch in got["chassis"]] == [("c1", 4)]
    assert {t["name"]: t["blades"]["inUse"] for t in got["tenants"]} == {"acme": 1, "globex": 1}

    mine = await (await c.get("/api/v1/capacity", headers=api.auth("acme-op"))).json()
    assert mine["blades"]["committed"] == 1 and mine["chassis"] == [] and mine["pools"] == []
    assert [t["name"] for t in mine["tenants"]] == ["acme"] and "globex" not in json.dumps(mine)


async def test_usage_as_json_and_csv_and_bad_times_name_the_parameter(api: Api) -> None:
    c = api.client
    q = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01"}
    got = await (await c.get("/api/v1/usage", headers=api.auth("admin"), params=q)).json()
    assert {p["profile"] for p in got["profiles"]} == {"acme/web-01", "globex/db-01"}
    resp = await c.get("/api/v1/usage", headers={**api.auth("admin"), "Accept": "text/csv"}, params=q)
    assert resp.content_type == "text/csv"
    assert (await resp.text()).splitlines()[0] == "scope,tenant,profile,from,to,blade_seconds,blade_hours"
    csv = await (await c.get("/api/v1/usage", headers=api.auth("acme-op"), params={**q, "format": "csv"})).text()
    assert "acme/web-01" in csv and "globex" not in csv

    for params, where in (({"from": "yesterday", "to": "2100-01-01"}, "query.from"),
                          ({"from": "2026-12-01", "to": "2026-12-01T10:00:00"}, "query.to"),
                          ({"from": "2026-12-02", "to": "2026-12-01"}, "to"),
                          ({"to": "2026-12-01"}, "query.from")):
        resp = await c.get("/api/v1/usage", headers=api.auth("admin"), params=params)
        assert resp.status == 400, params
        assert where in (await resp.json())["detail"], params


async def test_changes_by_resource_and_time_and_as_json_lines(api: Api) -> None:
    c = api.client
    got = await (await c.get("/api/v1/changes", headers=api.auth("admin"),
                             params={"resource": "binding/acme/web-01"})).json()
    assert [(i["action"], i["after"]["blade"]) for i in got["items"]] == [("assign", "b01")]
    resp = await c.get("/api/v1/changes", headers=api.auth("admin"), params={"resource": "blade", "format": "jsonl"})
    assert resp.content_type == "application/jsonl"
    lines = (await resp.text()).splitlines()
    assert lines and all(json.loads(line)["resource"] == "blade" for line in lines)
    mine = await (await c.get("/api/v1/changes", headers=api.auth("acme-op"), params={"tenant": "globex"})).json()
    assert mine["items"] and {i["tenant"] for i in mine["items"]} == {"acme"}
    future = await (await c.get("/api/v1/changes", headers=api.auth("admin"),
                                params={"since": "2999-01-01T00:00:00Z"})).json()
    assert future == {"items": [], "total": 0}
    for params, where in (({"resource": "rack/x"}, "query.resource"), ({"since": "noon"}, "query.since"),
                          ({"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "query.until")):
        resp = await c.get("/api/v1/changes", headers=api.auth("admin"), params=params)
        assert resp.status == 400 and where in (await resp.json())["detail"], params
