"""Stamp and unstamp through the engine, with in-process fake drivers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from appliance.drivers.errors import BmcAuthFailed, BmcUnreachable
from appliance.drivers.protocols import BootDevice, PortConfig, PowerState
from appliance.errors import Conflict
from appliance.services.jobs import JobService
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeRow, ProfileRow
from tests.unit.engine.fakes import FakeHardware, add_profile, make_engine, rack, run_until_idle


def states(store: Store) -> tuple[dict[str, str], dict[str, str]]:
    with store.read() as s:
        return ({b.name: b.state for b in s.scalars(select(BladeRow))},
                {p.name: p.state for p in s.scalars(select(ProfileRow))})


async def test_stamp_then_release_reverses_everything(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    hw = FakeHardware()
    jobs = JobService(store)
    job = jobs.submit_assign("web-01", tenant="acme", blade="b02")
    await run_until_idle(make_engine(store, hw))
    info = jobs.get(job.id)
    assert info.state == "succeeded", info.error
    assert [s.state for s in info.steps] == ["done"] * len(info.steps)
    blade = hw.bmcs.blade("fake://b02")
    assert blade.power is PowerState.ON
    assert blade.boot.device is BootDevice.NETWORK and not blade.boot.persistent
    assert blade.identities.macs == ("02:a0:00:00:01:01", "02:a0:00:00:01:02")
    assert hw.sw.ports["3"] == PortConfig(native=100, tagged=frozenset({200}), up=True)
    assert hw.sw.ports["4"] == PortConfig(native=101, tagged=frozenset(), up=True)
    assert states(store) == ({"b01": "spare", "b02": "active", "b03": "spare"}, {"web-01": "active"})

    rel = jobs.submit_release("web-01", tenant="acme")
    await run_until_idle(make_engine(store, hw))
    assert jobs.get(rel.id).state == "succeeded"
    assert blade.power is PowerState.OFF
    assert blade.identities.empty
    assert hw.sw.ports["3"] == PortConfig(native=4094, tagged=frozenset(), up=True)
    assert states(store) == ({"b01": "spare", "b02": "spare", "b03": "spare"}, {"web-01": "unassigned"})
    # One power-on, one power-off: never sent twice.
    assert hw.bmcs.calls.count(("fake://b02", "set_power")) == 2


async def test_fatal_error_rolls_back_completed_steps(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    hw = FakeHardware()
    hw.bmcs.fail("fake://b01", "set_next_boot", BmcAuthFailed("b01", "fake", "set_next_boot", "bad password"))
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01")
    await run_until_idle(make_engine(store, hw))
    info = JobService(store).get(job.id)
    assert info.state == "rolled_back"
    assert "set-boot" in (info.error or "") and "bad password" in (info.error or "")
    by_name = {s.name: s.state for s in info.steps}
    assert by_name["set-vlans"] == "undone" and by_name["bind"] == "undone"
    assert by_name["apply-identity"] == "undone" and by_name["power-on"] == "pending"
    assert hw.bmcs.blade("fake://b01").identities.empty
    assert hw.sw.ports["1"].native == 4094
    assert states(store) == ({"b01": "spare", "b02": "spare", "b03": "spare"}, {"web-01": "unassigned"})
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(BindingRow).where(BindingRow.state == "live")) == 0


async def test_retryable_errors_are_retried(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    hw = FakeHardware()
    hw.bmcs.fail("fake://b01", "set_next_boot", BmcUnreachable("b01", "fake", "set_next_boot", "timeout"), times=2)
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01")
    await run_until_idle(make_engine(store, hw))
    info = JobService(store).get(job.id)
    assert info.state == "succeeded"
    assert {s.name: s.attempts for s in info.steps}["set-boot"] == 3


async def test_placement_picks_the_best_fit(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path, blades=2, cpus=64, memory=512)
    from appliance.drivers.protocols import Secret
    from appliance.secrets import SecretBox
    from appliance.services.blades import BladeService, Enrollment, NicSpec
    from tests.unit.engine.fakes import FakeHardware as _  # noqa: F401

    BladeService(store, SecretBox(tmp_path / "secrets.key")).enroll(Enrollment(
        name="small", bmc="fake://small", username="a", password=Secret("p"), cpus=8, memory_gib=64,
        nics=(NicSpec("eth0", "52:54:00:00:99:01"), NicSpec("eth1", "52:54:00:00:99:02"))))
    add_profile(store, "web-01", 1)
    pl = JobService(store).dry_run("web-01", tenant="acme")
    assert pl.best == "small"
    add_profile(store, "big", 2, cpus=32)
    pl = JobService(store).dry_run("big", tenant="acme")
    assert pl.best == "b01"
    assert [(r.blade, r.reason) for r in pl.rejected] == [("small", "too few CPUs (8 < 32)")]


async def test_twenty_profiles_racing_for_ten_blades(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path, blades=10)
    jobs = JobService(store)
    ids = []
    for i in range(20):
        add_profile(store, f"p{i:02d}", 16 + i)
        ids.append(jobs.submit_assign(f"p{i:02d}", tenant="acme").id)
    await run_until_idle(make_engine(store, FakeHardware()), timeout=60)
    infos = [jobs.get(i) for i in ids]
    ok = [i for i in infos if i.state == "succeeded"]
    refused = [i for i in infos if i.state == "rolled_back"]
    assert len(ok) == 10 and len(refused) == 10
    assert all("no spare blade meets the requirements" in (i.error or "") for i in refused)
    with store.read() as s:
        live = list(s.scalars(select(BindingRow).where(BindingRow.state == "live")))
    assert len(live) == 10 and len({b.blade_id for b in live}) == 10


async def test_twenty_concurrent_assigns_of_one_profile_give_one_job(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    jobs = JobService(store)

    def submit() -> str:
        try:
            return jobs.submit_assign("web-01", tenant="acme").id
        except Conflict as exc:
            return f"conflict: {exc}"

    results = await asyncio.gather(*(asyncio.to_thread(submit) for _ in range(20)))
    accepted = [r for r in results if not r.startswith("conflict")]
    assert len(accepted) == 1
    assert all("already has a job in progress" in r for r in results if r.startswith("conflict"))
    await run_until_idle(make_engine(store, FakeHardware()))
    with pytest.raises(Conflict, match="already assigned to blade"):
        jobs.submit_assign("web-01", tenant="acme")


async def test_idempotency_key_returns_the_same_job(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    jobs = JobService(store)
    a = jobs.submit_assign("web-01", tenant="acme", idempotency_key="k1")
    b = jobs.submit_assign("web-01", tenant="acme", idempotency_key="k1")
    assert a.id == b.id


async def test_killed_engine_resumes_at_the_unfinished_step(store: Store, tmp_path: Path) -> None:
    """An engine stopped in the middle of power-on leaves the job to the next one, which finishes it
    without sending a second power-on while the first is still taking effect."""
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    hw = FakeHardware(power_delay=1.0)
    jobs = JobService(store)
    job = jobs.submit_assign("web-01", tenant="acme", blade="b01")
    first = make_engine(store, hw)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    for _ in range(400):
        await asyncio.sleep(0.01)
        if jobs.get(job.id).current_step == "power-on" and ("fake://b01", "set_power") in hw.bmcs.calls:
            break
    task.cancel()  # as abrupt as it gets inside one process: no step completes
    with pytest.raises(asyncio.CancelledError):
        await task
    assert jobs.get(job.id).state == "running"
    await run_until_idle(make_engine(store, hw))
    info = jobs.get(job.id)
    assert info.state == "succeeded", info.error
    assert hw.bmcs.calls.count(("fake://b01", "set_power")) == 1


async def test_released_profile_and_blade_can_be_deleted(store: Store, tmp_path: Path) -> None:
    from appliance.secrets import SecretBox
    from appliance.services.blades import BladeService
    from appliance.services.profiles import PROFILE, ProfileService

    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    hw = FakeHardware()
    jobs = JobService(store)
    jobs.submit_assign("web-01", tenant="acme", blade="b01")
    await run_until_idle(make_engine(store, hw))
    blades = BladeService(store, SecretBox(tmp_path / "secrets.key"))
    with pytest.raises(Conflict):
        blades.delete("b01")
    with pytest.raises(Conflict):
        ProfileService(store).delete(PROFILE, "acme", "web-01")
    jobs.submit_release("web-01", tenant="acme")
    await run_until_idle(make_engine(store, hw))
    blades.delete("b01")
    ProfileService(store).delete(PROFILE, "acme", "web-01")


async def test_assign_from_a_blade_pool(store: Store, tmp_path: Path) -> None:
    from appliance.errors import NotFound
    from appliance.services.blade_pools import BladePoolService

    rack(store, tmp_path, blades=3)
    pools = BladePoolService(store)
    pools.create("web", description="web tier")
    pools.add("web", ("b03",))
    add_profile(store, "web-01", 1)
    jobs = JobService(store)
    pl = jobs.dry_run("web-01", tenant="acme", pool="web")
    assert pl.chosen == ("b03",)
    assert {r.blade: r.reason for r in pl.rejected} == {"b01": "not in the requested pool",
                                                        "b02": "not in the requested pool"}
    job = jobs.submit_assign("web-01", tenant="acme", pool="web")
    await run_until_idle(make_engine(store, FakeHardware()))
    assert jobs.get(job.id).data["blade"] == "b03"
    assert [(p.name, p.available) for p in pools.list()] == [("spares", 2), ("web", 0)]
    with pytest.raises(NotFound):
        jobs.submit_assign("web-01", tenant="acme", pool="nope")


async def test_maintenance_takes_a_blade_out_of_placement(store: Store, tmp_path: Path) -> None:
    from appliance.secrets import SecretBox
    from appliance.services.blades import BladeService

    rack(store, tmp_path, blades=2)
    blades = BladeService(store, SecretBox(tmp_path / "secrets.key"))
    assert blades.set_maintenance("b01", True, reason="DIMM swap").state == "maintenance"
    add_profile(store, "web-01", 1)
    pl = JobService(store).dry_run("web-01", tenant="acme")
    assert pl.chosen == ("b02",) and pl.rejected[0].reason == "in maintenance"
    job = JobService(store).submit_assign("web-01", tenant="acme")
    await run_until_idle(make_engine(store, FakeHardware()))
    with pytest.raises(Conflict, match="only a spare or failed blade"):
        blades.set_maintenance(JobService(store).get(job.id).data["blade"], True)
    assert blades.set_maintenance("b01", False).state == "spare"
    with pytest.raises(Conflict, match="not in maintenance"):
        blades.set_maintenance("b01", False)
