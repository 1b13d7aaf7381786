"""``/metrics`` (and ``/api/v1/metrics``) need a token like every API route, and not a tenant-scoped
one; ``/readyz`` is open and says what is not ready; the boot routes stay open and count into the
same registry."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from appliance.api.app import create_app
from appliance.api.keys import METRICS, READINESS
from appliance.boot.http import create_boot_app
from appliance.config import load_settings
from appliance.engine.leader import Leadership
from appliance.lab import procs
from appliance.metrics import Metrics
from appliance.services.jobs import JobService
from appliance.store import Store
from tests.api.conftest import Api


def families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_metrics_need_an_unscoped_token_at_both_paths(api: Api) -> None:
    for path in ("/metrics", "/api/v1/metrics"):
        r = await api.client.get(path)
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await api.client.get(path, headers={"Authorization": "Bearer anvil_wrong"})
        assert r.status == 401
        r = await api.client.get(path, headers=api.auth("acme-viewer"))
        assert r.status == 403 and "tenant-scoped" in (await r.json())["detail"]
        r = await api.client.get(path, headers=api.auth("viewer"))
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=")
        got = families(await r.text())
        assert "anvil_build_info" in got and "anvil_db_pool_connections" in got


async def test_jobs_by_kind_and_state_come_from_the_store(api: Api) -> None:
    JobService(api.store).submit_assign("web-02", tenant="acme", blade="b03")
    r = await api.client.get("/metrics", headers=api.auth("viewer"))
    got = families(await r.text())
    assert got["anvil_jobs"] == {(("kind", "stamp"), ("state", "pending")): 1.0}
    assert got["anvil_scrape_source_up"][(("source", "jobs"),)] == 1.0
    assert "anvil_engine_leader" not in got            # this app runs no engine
    assert got["anvil_engine_leader_known"][()] == 0.0


async def test_each_app_has_its_own_registry(api: Api, store: Store, tmp_path: Path) -> None:
    settings = load_settings(env={"ANVIL_STATE_DIR": str(tmp_path / "other"), "ANVIL_CONFIG": str(tmp_path / "x")})
    other = create_app(settings, store)
    assert other[METRICS] is not api.client.server.app[METRICS]


async def test_readyz_names_what_is_not_ready_then_turns_ready(api: Api) -> None:
    r = await api.client.get("/readyz")                  # open, like /healthz
    body = await r.json()
    assert r.status == 503 and body["status"] == "not ready"
    assert body["checks"]["store"] == "ok" and body["checks"]["leader"] == "none"
    assert any("no engine leader" in why for why in body["reasons"])
    leader = Leadership(api.store)
    assert leader.try_acquire()
    try:
        r = await api.client.get("/readyz")
        body = await r.json()
        assert r.status == 200 and body == {**body, "status": "ready", "reasons": []}
        # A boot service this process should reach, and nothing listens there.
        api.client.server.app[READINESS].boot_url = f"http://127.0.0.1:{procs.free_tcp_port()}"
        r = await api.client.get("/readyz")
        body = await r.json()
        assert r.status == 503 and body["checks"]["boot"] == "error: unreachable"
        assert any(why.startswith("boot HTTP at http://127.0.0.1:") for why in body["reasons"])
    finally:
        leader.release()


async def test_readyz_says_when_the_schema_is_behind(api: Api) -> None:
    with api.store.write() as s:
        s.connection().exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    r = await api.client.get("/readyz")
    body = await r.json()
    assert r.status == 503 and body["checks"]["store"] == "error: schema 0001"
    assert "revision 0001" in body["reasons"][0]


async def test_boot_requests_are_counted_by_route_pattern_and_outcome(store: Store, tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = load_settings(env={"ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": str(tmp_path / "none.toml")})
    state.mkdir(parents=True, exist_ok=True)
    m = Metrics()
    async with TestClient(TestServer(create_boot_app(settings, store=store, metrics=m))) as client:
        r = await client.get("/boot/ipxe")                          # no MAC: refused, still open (no 401)
        assert r.status != 401
        await client.get("/boot/images/lab/nothing-here.img")
        await client.get("/boot/nowhere")
    got = families(m.render().decode())["anvil_boot_requests_total"]
    assert got[(("outcome", "client_error"), ("route", "/boot/images/{path}"))] == 1
    assert got[(("outcome", "client_error"), ("route", "unmatched"))] == 1
    assert sum(v for k, v in got.items() if ("route", "/boot/ipxe") in k) == 1
