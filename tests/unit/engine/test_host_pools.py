"""Host pools through the engine and its reconcile loop, on fake hardware in two chassis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from appliance.drivers.errors import BmcAuthFailed
from appliance.engine.runner import Engine
from appliance.engine.steps import KINDS
from appliance.errors import Conflict
from appliance.services.failover import FailoverService
from appliance.services.host_reconcile import Reconciler
from appliance.services.hostpools import HostPoolService
from appliance.services.jobs import JobService
from appliance.store import Store
from appliance.store.tables import HostPoolRow, HostRow, IdentityRow, JobRow, ProfileRow
from tests.unit.engine.fakes import FAST, FakeHardware
from tests.unit.engine.hostpool_rig import drive, events, hosts, live_bindings, ready, rig


def chassis_of(blade: str | None) -> str:
    return (blade or "?").split("-")[0]


async def test_grow_stamps_hosts_spread_over_both_chassis_and_tells_each_step(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path, small=2)
    svc = HostPoolService(store)
    svc.create("east", template="kvm-host", tenant="acme", max_size=4)
    info = svc.resize("east", grow=2, tenant="acme")
    assert info.size == 2 and info.hosts == {}           # the API only moves the size; the engine requests
    await drive(store, FakeHardware(), lambda: ready(store, 2))
    got = hosts(store)
    assert list(got) == ["east-001", "east-002"]
    assert {chassis_of(b) for _, b in got.values()} == {"c1", "c2"}   # never two in one chassis while c2 has room
    seen = events(store)
    assert [e for e, _, _ in seen].count("host.requested") == 2 and [e for e, _, _ in seen].count("host.ready") == 2
    # The identity is there from the request on, and the same once ready.
    first = {hid: data["host"] for e, hid, data in seen if e == "host.requested"}
    for e, hid, data in seen:
        if e == "host.ready":
            assert (data["host"]["uuid"], data["host"]["macs"], data["host"]["iqn"]) == \
                (first[hid]["uuid"], first[hid]["macs"], first[hid]["iqn"])
            assert data["host"]["uuid"].startswith("4c4c4544-") and len(data["host"]["macs"]) == 2
            assert data["host"]["blade"] in ("c1-1", "c1-2", "c2-1", "c2-2")
    assert svc.get("east", tenant="acme").converged


async def test_a_rerun_of_the_reconcile_pass_never_over_grows(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path)
    svc = HostPoolService(store)
    svc.create("east", template="kvm-host", tenant="acme", size=3)
    rec = Reconciler(store)
    for _ in range(5):      # passes with no engine running: hosts and their jobs exist, nothing more
        rec.run_once()
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(HostRow)) == 3
        assert s.scalar(select(func.count()).select_from(JobRow).where(JobRow.kind == "host-stamp")) == 3
        assert s.scalar(select(func.count()).select_from(ProfileRow).where(ProfileRow.kind == "ServerProfile")) == 3


async def test_an_engine_killed_mid_grow_resumes_and_makes_no_host_twice(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path, {"c1": 3, "c2": 3})
    HostPoolService(store).create("east", template="kvm-host", tenant="acme", size=4)
    hw = FakeHardware(power_delay=0.3)

    def some_bound() -> bool:
        return len(live_bindings(store)) >= 2

    with pytest.raises(TimeoutError):   # stop the first engine as soon as stamps are under way
        await drive(store, hw, lambda: False, timeout=30, between=lambda: _stop_when(some_bound))
    assert 2 <= len(live_bindings(store)) < 6
    await drive(store, hw, lambda: ready(store, 4))
    # On a loaded machine a host's stamp may fail (FAST timers) and the pool replace it: that host is
    # released with a host.replaced event. A replacement is not a host made twice; any other extra is.
    replaced = {hid for e, hid, _ in events(store) if e == "host.replaced"}
    with store.read() as s:
        rows = [(h.id, h.name, h.state, h.blade) for h in s.scalars(select(HostRow).order_by(HostRow.seq))]
    assert all(state == "released" for hid, _, state, _ in rows if hid in replaced), rows
    got = {name: (state, blade) for hid, name, state, blade in rows if hid not in replaced}
    assert len(got) == 4 and all(state == "ready" for state, _ in got.values()), (rows, replaced)
    bound = live_bindings(store)
    assert sorted(bound) == sorted(got) and len(set(bound.values())) == 4
    kinds = [e for e, _, _ in events(store)]
    assert kinds.count("host.requested") == 4 + len(replaced) and kinds.count("host.ready") == 4


def _stop_when(cond: object) -> None:
    if callable(cond) and cond():
        raise TimeoutError("stop the engine here, as a kill would")


async def test_shrink_releases_the_newest_hosts_and_returns_their_identities(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path)
    svc = HostPoolService(store)
    svc.create("east", template="kvm-host", tenant="acme", size=3)
    hw = FakeHardware()
    await drive(store, hw, lambda: ready(store, 3))
    with store.read() as s:
        held_before = s.scalar(select(func.count()).select_from(IdentityRow))
    svc.resize("east", size=1, tenant="acme")
    await drive(store, hw, lambda: hosts(store)["east-002"][0] == "released" and
                hosts(store)["east-003"][0] == "released")
    assert hosts(store)["east-001"][0] == "ready"
    assert list(live_bindings(store)) == ["east-001"]
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(IdentityRow)) == held_before // 3
        assert set(s.scalars(select(ProfileRow.name).where(ProfileRow.kind == "ServerProfile"))) == {"east-001"}
    released = [hid for e, hid, _ in events(store) if e == "host.released"]
    assert len(released) == 2
    for blade in ("c1-1", "c1-2", "c2-1", "c2-2"):
        if blade != hosts(store)["east-001"][1]:
            assert hw.bmcs.blade(f"fake://{blade}").power.value == "off"


async def test_releasing_one_host_by_id_keeps_its_profile_when_asked(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path)
    svc = HostPoolService(store)
    svc.create("east", template="kvm-host", tenant="acme", size=2, min_size=1)
    await drive(store, FakeHardware(), lambda: ready(store, 2))
    victim = svc.hosts("east", tenant="acme")[0]
    out = svc.release("east", victim.id, keep_profile=True, tenant="acme")
    assert out.state == "releasing" and svc.get("east", tenant="acme").size == 1
    await drive(store, FakeHardware(), lambda: hosts(store)[victim.name][0] == "released")
    with store.read() as s:
        prow = s.scalar(select(ProfileRow).where(ProfileRow.name == victim.name))
        assert prow is not None and prow.state == "unassigned"
    with pytest.raises(Conflict, match="has min 1"):
        svc.release("east", svc.hosts("east", tenant="acme")[0].id, tenant="acme")
    with pytest.raises(Conflict, match="already released"):
        svc.release("east", victim.id, tenant="acme")


async def test_quota_and_max_refuse_with_the_reason_and_change_nothing(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path)
    svc = HostPoolService(store)
    svc.set_quota("acme", 3)
    svc.create("east", template="kvm-host", tenant="acme", size=2, max_size=10)
    with pytest.raises(Conflict, match=r"tenant acme's quota is 3 hosts; its pools would hold 4 \(east 4\)"):
        svc.resize("east", size=4, tenant="acme")
    with pytest.raises(Conflict, match="quota is 3 hosts; its pools would hold 4"):
        svc.create("west", template="kvm-host", tenant="acme", size=2)
    with pytest.raises(Conflict, match="has max 10; 11 hosts asked"):
        svc.resize("east", size=11, tenant="acme")
    assert svc.get("east", tenant="acme").size == 2 and [p.name for p in svc.list(tenant="acme")] == ["east"]
    assert svc.quotas() == [{"tenant": "acme", "maxHosts": 3, "used": 2}]


async def test_strict_spread_waits_with_the_reason_when_every_chassis_holds_a_host(store: Store,
                                                                                   tmp_path: Path) -> None:
    rig(store, tmp_path)
    svc = HostPoolService(store)
    svc.create("east", template="kvm-host", tenant="acme", size=3, spread="chassis-strict")
    await drive(store, FakeHardware(), lambda: ready(store, 2))
    await drive(store, FakeHardware(), lambda: svc.get("east", tenant="acme").waiting)
    info = svc.get("east", tenant="acme")
    assert info.hosts == {"ready": 2} and not info.converged
    assert info.waiting == ("1 more host(s) wanted: spread chassis-strict: every chassis with a fitting spare (c1, "
                            "c2) already holds a host of the pool")
    with store.read() as s:
        rows = [(h.name, h.state, h.reason) for h in s.scalars(select(HostRow))]
        assert len(rows) == 2, rows    # refused, not attempted


async def test_a_host_whose_stamp_fails_is_reported_and_replaced(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path, {"c1": 1, "c2": 1})
    hw = FakeHardware()
    hw.bmcs.fail("fake://c1-1", "set_next_boot", BmcAuthFailed("c1-1", "fake", "set_next_boot", "bad password"))
    svc = HostPoolService(store)
    svc.create("east", template="kvm-host", tenant="acme", size=1)

    def lift_backoff() -> None:     # the pool waits 5 s after a failed stamp; not in a unit test
        with store.write() as s:
            for pool in s.scalars(select(HostPoolRow)):
                pool.backoff_until = None
    await drive(store, hw, lambda: ready(store, 1), between=lift_backoff)
    seen = [(e, hid) for e, hid, _ in events(store)]
    failed = next(hid for e, hid in seen if e == "host.failed")
    replaced = [data for e, hid, data in events(store) if e == "host.replaced"]
    assert len(replaced) == 1 and replaced[0]["host"]["id"] == failed
    new = replaced[0]["replacement"]
    assert ("host.requested", new) in seen and ("host.ready", new) in seen
    assert hosts(store)["east-002"][0] == "ready"
    failed_event = next(data for e, hid, data in events(store) if e == "host.failed")
    assert "bad password" in failed_event["reason"]
    await drive(store, hw, lambda: hosts(store)["east-001"][0] == "released")


async def test_a_failover_keeps_the_host_id_and_identity(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path, {"c1": 1, "c2": 1})
    FailoverService(store).create_domain("kvm")
    svc = HostPoolService(store)
    svc.create("east", template="kvm-host", tenant="acme", size=1)
    hw = FakeHardware()
    await drive(store, hw, lambda: ready(store, 1))
    before = svc.hosts("east", tenant="acme")[0]
    JobService(store).submit_failover(before.name, tenant="acme", reason="test: the blade died",
                                      from_blade=before.blade)
    await drive(store, hw, lambda: svc.hosts("east", tenant="acme")[0].blade != before.blade and ready(store, 1))
    after = svc.hosts("east", tenant="acme")[0]
    assert (after.id, after.identity) == (before.id, before.identity) and after.state == "ready"
    mine = [(e, d) for e, hid, d in events(store) if hid == before.id]
    assert [e for e, _ in mine] == ["host.requested", "host.ready", "host.failed", "host.ready"]
    assert mine[2][1]["failover"] == mine[3][1]["failover"] and mine[3][1]["host"]["blade"] == after.blade
    assert len(hosts(store)) == 1     # never a new host


async def test_the_loop_runs_only_on_the_leader(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path)
    HostPoolService(store).create("east", template="kvm-host", tenant="acme", size=1)
    calls: list[int] = []

    async def loop(engine: Engine, stop: asyncio.Event) -> None:
        calls.append(1)
        await stop.wait()

    first = Engine(store, FakeHardware(), KINDS, settings=FAST, loops=(loop,))
    second = Engine(store, FakeHardware(), KINDS, settings=FAST, loops=(loop,))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(first.run(stop)), asyncio.create_task(second.run(stop))]
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*tasks)
    assert calls == [1]
