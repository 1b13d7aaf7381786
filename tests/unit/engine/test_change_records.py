"""A scripted day of assigns, releases and a failure through the real engine (fake drivers),
on an injected clock: the change records replay to the store's bindings, and capacity and
usage come out exactly (blade-time to the second)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox
from appliance.services.blade_pools import BladePoolService
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.capacity import CapacityService
from appliance.services.changes import ChangeFilter, ChangeService
from appliance.services.failover import FailoverService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import ChangeRow, SwitchRow
from tests.unit.engine.fakes import FakeHardware, make_engine, run_until_idle

T0 = datetime(2026, 12, 1, tzinfo=UTC)

PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  requirements: {{minCpus: 8, minMemoryGiB: 64, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:a0:00:00:{n:02x}:01", vlans: {{native: 100, tagged: [200]}}, pxe: true}}
      - {{name: eth1, mac: "02:a0:00:00:{n:02x}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}}}
{extra}"""


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, hours: float = 0, minutes: float = 0, seconds: float = 0) -> None:
        self.now = T0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _rack(store: Store, tmp: Path) -> None:
    with store.write() as s:
        s.add(SwitchRow(name="sw1", driver="fake", address="fake://sw1"))
    svc = BladeService(store, SecretBox(tmp / "secrets.key"))
    for i in range(1, 6):
        svc.enroll(Enrollment(name=f"b{i:02d}", bmc=f"fake://b{i:02d}", username="admin", password=Secret("pw"),
                              cpus=16, memory_gib=128, chassis="c1" if i <= 3 else "c2", slot=i,
                              nics=(NicSpec("eth0", f"52:54:00:00:{i:02x}:01", "sw1", str(2 * i - 1)),
                                    NicSpec("eth1", f"52:54:00:00:{i:02x}:02", "sw1", str(2 * i)))))


def _profile(store: Store, name: str, tenant: str, n: int, *, protected: bool = False) -> None:
    extra = "  failover: {domain: prod, priority: 1, policy: n+1}\n" if protected else ""
    ProfileService(store).import_document(PROFILE.format(name=name, tenant=tenant, n=n, extra=extra))


async def _run(store: Store, hw: FakeHardware) -> None:
    await run_until_idle(make_engine(store, hw))


def _assert_replay_matches(store: Store) -> None:
    changes = ChangeService(store)
    assert changes.replayed_bindings() == changes.stored_bindings()


@pytest.fixture
def day(store: Store, tmp_path: Path) -> Clock:
    clock = Clock()
    store.clock = clock
    return clock


async def test_a_scripted_day_gives_exact_usage_capacity_and_a_replay_equal_to_the_store(
        store: Store, tmp_path: Path, day: Clock) -> None:
    _rack(store, tmp_path)
    BladePoolService(store).create("acme-pool", tenant="acme")
    BladePoolService(store).add("acme-pool", ("b01", "b02", "b03"))
    FailoverService(store).create_domain("prod")
    _profile(store, "web-01", "acme", 1)
    _profile(store, "web-02", "acme", 2, protected=True)
    _profile(store, "db-01", "ops", 3)
    hw = FakeHardware()
    jobs = JobService(store)

    day.at(0)
    jobs.submit_assign("web-01", tenant="acme", blade="b01", created_by="user:alice")
    await _run(store, hw)
    day.at(1)
    jobs.submit_assign("web-02", tenant="acme", blade="b02")
    await _run(store, hw)
    day.at(2, 30)
    jobs.submit_assign("db-01", tenant="ops", blade="b04")
    await _run(store, hw)
    _assert_replay_matches(store)
    day.at(4)
    BladeService(store, SecretBox(tmp_path / "secrets.key")).set_maintenance("b05", True, reason="fan")
    day.at(6)                       # b02 fails: web-02 moves to the only spare left, b03
    jobs.submit_failover("web-02", tenant="acme", reason="b02 died", from_blade="b02")
    await _run(store, hw)
    _assert_replay_matches(store)
    day.at(9, 15, 30)
    jobs.submit_release("web-01", tenant="acme")
    await _run(store, hw)
    _assert_replay_matches(store)
    day.at(18)
    jobs.submit_assign("web-01", tenant="acme", blade="b01")
    await _run(store, hw)
    day.at(24)

    changes = ChangeService(store)
    assert changes.stored_bindings() == {"acme/web-01": "b01", "acme/web-02": "b03", "ops/db-01": "b04"}
    _assert_replay_matches(store)
    assert changes.replayed_bindings(tenant="ops") == {"ops/db-01": "b04"}

    report = changes.usage(T0, T0 + timedelta(days=1))
    assert {u.profile: u.seconds for u in report.profiles} == {
        "acme/web-01": 9 * 3600 + 15 * 60 + 30 + 6 * 3600,     # 00:00-09:15:30, 18:00-24:00
        "acme/web-02": 5 * 3600 + 18 * 3600,                    # b02 01:00-06:00, b03 06:00-24:00
        "ops/db-01": 21.5 * 3600,                               # 02:30-24:00
    }
    assert report.tenants == {"acme": 33330 + 21600 + 82800, "ops": 77400}
    window = changes.usage(T0 + timedelta(hours=5), T0 + timedelta(hours=10))
    assert {u.profile: u.seconds for u in window.profiles} == {
        "acme/web-01": 4 * 3600 + 15 * 60 + 30, "acme/web-02": 5 * 3600, "ops/db-01": 5 * 3600}
    # Open bindings count until now, not until a `to` in the future.
    day.at(20)
    later = changes.usage(T0 + timedelta(hours=18), T0 + timedelta(days=2))
    assert {u.profile: u.seconds for u in later.profiles} == {
        "acme/web-01": 7200, "acme/web-02": 7200, "ops/db-01": 7200}
    assert "profile,acme,acme/web-01," in later.csv() and later.csv().startswith("scope,tenant,profile,")

    cap = CapacityService(store).capacity(Scope.appliance())
    assert cap.total is not None
    assert cap.total.blades == {"total": 5, "spare": 0, "committed": 3, "inUse": 3, "failed": 1, "maintenance": 1}
    assert cap.total.cpus == {"total": 80, "spare": 0, "committed": 48, "inUse": 48, "failed": 16,
                              "maintenance": 16}
    assert cap.total.memory_gib["committed"] == 384
    assert cap.chassis["c1"].blades == {"total": 3, "spare": 0, "committed": 2, "inUse": 2, "failed": 1,
                                        "maintenance": 0}
    assert cap.chassis["c2"].blades == {"total": 2, "spare": 0, "committed": 1, "inUse": 1, "failed": 0,
                                        "maintenance": 1}
    assert cap.pools["acme-pool"].blades["failed"] == 1 and cap.pools["acme-pool"].blades["committed"] == 2
    assert cap.tenants["acme"].blades == {"total": 3, "spare": 0, "committed": 2, "inUse": 2, "failed": 1,
                                          "maintenance": 0}
    assert cap.tenants["ops"].blades["committed"] == 1

    # A tenant sees its own pools and numbers only.
    ops = CapacityService(store).capacity(Scope("ops", "token:9"))
    assert ops.total is None and ops.chassis == {} and ops.pools == {} and list(ops.tenants) == ["ops"]
    assert CapacityService(store).capacity(Scope("acme", "token:8")).pools.keys() == {"acme-pool"}
    assert changes.usage(T0, T0 + timedelta(days=1), tenant="ops").tenants == {"ops": 17.5 * 3600}  # now: 20:00


async def test_records_say_who_what_before_after_and_which_job_step(store: Store, tmp_path: Path,
                                                                    day: Clock) -> None:
    _rack(store, tmp_path)
    _profile(store, "web-01", "acme", 1)
    hw = FakeHardware()
    day.at(1)
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01", created_by="user:alice")
    await _run(store, hw)
    day.at(2)
    rel = JobService(store).submit_release("web-01", tenant="acme")
    await _run(store, hw)
    svc = ChangeService(store)

    bindings, total = svc.list(ChangeFilter(resource="binding", name="acme/web-01"))
    assert total == 2
    assert [(b["action"], b["before"], b["after"], b["job"], b["step"], b["who"], b["at"]) for b in bindings] == [
        ("assign", None, {"blade": "b01", "generation": 1}, job.id, "bind", "user:alice", "2026-12-01T01:00:00+00:00"),
        ("release", {"blade": "b01", "generation": 1}, None, rel.id, "unbind", "engine", "2026-12-01T02:00:00+00:00"),
    ]
    blade, _ = svc.list(ChangeFilter(resource="blade", name="b01"))
    states = [(r["before"] or {}).get("state", "-") + ">" + (r["after"] or {}).get("state", "-") for r in blade]
    assert states == ["->spare", "spare>stamping", "stamping>active", "active>releasing", "releasing>spare"]
    assert blade[1]["job"] == job.id and blade[1]["step"] == "bind"
    vlans, _ = svc.list(ChangeFilter(resource="vlan", name="sw1:1"))
    assert [(v["action"], (v["before"] or {}).get("native"), v["after"]["native"], v["step"]) for v in vlans] == [
        ("set", None, 100, "set-vlans"), ("park", 100, 4094, "park-ports")]
    assert vlans[0]["after"]["profile"] == "acme/web-01" and vlans[0]["tenant"] == "acme"

    # By time: [since, until); and as JSON lines for a CMDB, oldest first.
    early, _ = svc.list(ChangeFilter(since=T0 + timedelta(hours=1, minutes=30)))
    assert early and all(r["at"] == "2026-12-01T02:00:00+00:00" for r in early)
    lines = list(svc.export(ChangeFilter(resource="binding")))
    assert [line.count("\n") for line in lines] == [0, 0] and '"action":"assign"' in lines[0]
    assert svc.list(ChangeFilter(tenant="ops"))[1] == 0


async def test_a_rolled_back_stamp_leaves_a_binding_record_pair_and_the_replay_holds(
        store: Store, tmp_path: Path, day: Clock) -> None:
    from appliance.drivers.errors import BmcAuthFailed

    _rack(store, tmp_path)
    _profile(store, "web-01", "acme", 1)
    hw = FakeHardware()
    hw.bmcs.fail("fake://b01", "set_next_boot", BmcAuthFailed("b01", "fake", "set_next_boot", "bad password"))
    JobService(store).submit_assign("web-01", tenant="acme", blade="b01")
    await _run(store, hw)
    svc = ChangeService(store)
    rows, _ = svc.list(ChangeFilter(resource="binding"))
    assert [(r["action"], r["step"]) for r in rows] == [("assign", "bind"), ("rollback", "undo bind")]
    assert svc.replayed_bindings() == svc.stored_bindings() == {}
    vlans, _ = svc.list(ChangeFilter(resource="vlan", name="sw1:1"))
    assert [(v["action"], v["step"]) for v in vlans] == [("set", "set-vlans"), ("park", "undo set-vlans")]


def test_change_records_are_append_only(store: Store, tmp_path: Path) -> None:
    _rack(store, tmp_path)
    with pytest.raises(DBAPIError), store.write() as s:
        s.execute(update(ChangeRow).values(who="mallory"))
    with store.read() as s:
        assert set(s.scalars(select(ChangeRow.who))) == {"appliance"}


async def test_usage_per_host_pool_sums_its_hosts_profiles_to_the_second(
        store: Store, tmp_path: Path, day: Clock) -> None:
    from appliance.store.tables import HostPoolRow, HostRow

    _rack(store, tmp_path)
    for name, tenant, n in (("kvm-1", "acme", 1), ("kvm-2", "acme", 2), ("web-01", "acme", 3)):
        _profile(store, name, tenant, n)
    # The pool's hosts, as the host pool service keeps them (a released host's row stays as history).
    with store.write() as s:
        pool = HostPoolRow(name="kvm", tenant="acme", template="kvm-tpl")
        s.add(pool)
        s.flush()
        for seq, prof in enumerate(("kvm-1", "kvm-2"), 1):
            s.add(HostRow(id=f"00000000-0000-4000-8000-00000000000{seq}", pool_id=pool.id, tenant="acme",
                          name=prof, seq=seq, state="ready"))
    hw, jobs = FakeHardware(), JobService(store)
    day.at(0)
    jobs.submit_assign("kvm-1", tenant="acme", blade="b01")
    jobs.submit_assign("web-01", tenant="acme", blade="b03")
    await _run(store, hw)
    day.at(2, 0, 15)
    jobs.submit_assign("kvm-2", tenant="acme", blade="b02")
    await _run(store, hw)
    day.at(5)
    jobs.submit_release("kvm-1", tenant="acme")
    await _run(store, hw)
    day.at(10)

    report = ChangeService(store).usage(T0, T0 + timedelta(hours=8))
    assert report.host_pools == {"acme/kvm": 5 * 3600 + (8 * 3600 - (2 * 3600 + 15))}   # web-01 is no host
    assert report.public()["hostPools"] == [{"hostPool": "kvm", "tenant": "acme", "bladeSeconds": 39585.0,
                                             "bladeHours": round(39585 / 3600, 6)}]
    assert "host-pool,acme,acme/kvm," in report.csv()
    assert ChangeService(store).usage(T0, T0 + timedelta(hours=8), tenant="ops").host_pools == {}
