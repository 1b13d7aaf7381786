"""DR jobs with the engine and fake hardware at two in-process sites (the two-appliance
integration test proves them over HTTPS against the emulated racks).

Site A holds the profiles live; site B holds their replicas (site lease "a") and the plan
replicated from A. The recovery site's calls of its primary go straight to A's functions here
(appliance.dr.primary), in place of the pinned HTTPS client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from appliance.dr import jobs as dr_jobs
from appliance.dr import primary, remote, runs
from appliance.dr.plan import parse as parse_plan
from appliance.dr.service import PlanService
from appliance.drivers.protocols import PowerState
from appliance.errors import Conflict, ValidationError
from appliance.secrets import SecretBox
from appliance.services.jobs import JobService
from appliance.sites.lease import HeldElsewhere
from appliance.store import Store, open_store
from appliance.store.audit import Actor, acting_as
from appliance.store.tables import (
    AuditRow,
    BindingRow,
    BladeRow,
    DrPlanRow,
    IdentityRow,
    JobRow,
    LocalSiteRow,
    ProfileRow,
)
from tests.unit.engine.fakes import FakeHardware, add_profile, make_engine, rack, signal_boots

PLAN = """
apiVersion: anvil/v1
kind: DrPlan
metadata: {name: prod}
spec:
  recoverySite: b
  profiles: [{tenant: acme}]
  vlans: {100: 1100, 101: 1101, 200: 1200}
  rehearsalVlans: {100: 2100, 101: 2101, 200: 2200}
  priorities: {"db-*": 10}
  dependencies: ["db-01 before web-*"]
"""
NAMES = ["db-01", "web-01", "web-02"]


class Hw(FakeHardware):
    def __init__(self, box: SecretBox) -> None:
        super().__init__()
        self.box = box


def _site(tmp: Path, name: str) -> tuple[Store, Hw]:
    d = tmp / name
    d.mkdir()
    store = open_store(f"sqlite:///{d / 'anvil.db'}")
    rack(store, d, blades=4)
    for i, n in enumerate(NAMES, 1):
        add_profile(store, n, i)
    with store.write() as s:
        s.add(LocalSiteRow(name=name))
    return store, Hw(SecretBox(d / "secrets.key"))


def _replicate(a: Store, b: Store) -> None:
    """What replication leaves at B: the profiles held by A, the plan from A."""
    with b.write() as s:
        for row in s.scalars(select(ProfileRow)):
            row.site_lease = "a"
        with a.read() as sa:
            plan = sa.scalar(select(DrPlanRow))
            assert plan is not None
            s.add(DrPlanRow(name=plan.name, recovery_site=plan.recovery_site, origin_site="a",
                            document=plan.document, version=plan.version))


async def _drive(sites: list[tuple[Store, Hw]], store: Store, job_id: str, *, timeout: float = 60.0) -> str:
    """Run an engine at each site (a new one: an engine runs once) until ``job_id`` ends."""
    engines = [make_engine(st, hw) for st, hw in sites]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(e.run(stop)) for e in engines]
    try:
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.sleep(0.05)
                for e in engines:
                    signal_boots(e.store)
                with store.read() as s:
                    job = s.get(JobRow, job_id)
                    assert job is not None
                    if job.state in ("succeeded", "failed", "rolled_back", "cancelled"):
                        return job.state + (f": {job.error}" if job.error else "")
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def _live(store: Store) -> dict[str, str]:
    with store.read() as s:
        rows = s.execute(select(ProfileRow.name, BladeRow.name).join(BindingRow, BindingRow.profile_id == ProfileRow.id)
                         .join(BladeRow, BladeRow.id == BindingRow.blade_id).where(BindingRow.state == "live"))
        return {r[0]: r[1] for r in rows}


@pytest.fixture
def sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    a, hw_a = _site(tmp_path, "a")
    b, hw_b = _site(tmp_path, "b")
    PlanService(a).create(PLAN)
    _replicate(a, b)

    async def call(store: Store, box: SecretBox, site: str, path: str, body: Any = None) -> Any:
        assert site == "a" and store is b
        name = path.split("/")[-2]
        if path.endswith("/fence"):
            return await asyncio.to_thread(primary.fence, a, name, "b")
        if path.endswith("/return"):
            return await asyncio.to_thread(primary.give_back, a, name, "b")
        return {"site": "a", "ok": True}
    monkeypatch.setattr(remote, "call", call)
    monkeypatch.setattr(dr_jobs, "POLL", 0.05)
    monkeypatch.setattr(dr_jobs, "PRIMARY_POLL", 0.05)
    yield a, hw_a, b, hw_b
    a.close()
    b.close()


async def _stamp_all(store: Store, hw: Hw) -> None:
    ids = [JobService(store).submit_assign(n, tenant="acme").id for n in NAMES]
    assert await _drive([(store, hw)], store, ids[-1]) == "succeeded"
    assert len(_live(store)) == len(NAMES)


def test_a_plan_made_at_a_is_refused_there_for_rehearsal_and_shows_its_waves(sites: Any) -> None:
    a, _, b, _ = sites
    with pytest.raises(Conflict, match="runs at its recovery site b"):
        runs.submit(a, "rehearsal", "prod")
    info = PlanService(b).get("prod")
    assert info.origin_site == "a"
    assert info.waves == (("acme/db-01",), ("acme/web-01", "acme/web-02"))


def test_activation_without_primary_needs_a_reason(sites: Any) -> None:
    _, _, b, _ = sites
    with pytest.raises(ValidationError, match="reason"):
        runs.submit(b, "activation", "prod", primary_lost=True, reason=" ")
    with pytest.raises(Conflict, match="not active here"):
        runs.submit(b, "failback", "prod")


async def test_a_rehearsal_brings_clones_up_on_rehearsal_vlans_reports_rto_and_tears_down(sites: Any) -> None:
    a, hw_a, b, hw_b = sites
    await _stamp_all(a, hw_a)
    live_a = _live(a)
    run = runs.submit(b, "rehearsal", "prod", created_by="local:test")
    assert run.job_id is not None
    state = await _drive([(b, hw_b)], b, run.job_id)
    assert state == "succeeded"
    info = PlanService(b).runs("prod")[0]
    assert info.state == "succeeded" and info.rto_seconds is not None and info.rto_seconds > 0
    rtos = {p.name: p.rto_seconds for p in info.profiles}
    assert set(rtos) == set(NAMES) and all(v is not None and v > 0 for v in rtos.values())
    assert rtos["db-01"] < min(rtos["web-01"], rtos["web-02"])       # the dependency came up first
    assert all(p.state == "torn-down" and p.blade and p.stamped_as.endswith(f"-rh-{run.id[:8]}")
               for p in info.profiles)
    # The switch saw only rehearsal VLANs for the clones, then the parking VLAN.
    natives = {c.native for _, c in hw_b.sw.calls}
    assert {2100, 2101} <= natives and not natives & {100, 101, 1100, 1101}
    # Torn down: no clone, no identity of a clone, nothing live at B; A untouched; B's replicas still A's.
    assert _live(b) == {} and _live(a) == live_a
    with b.read() as s:
        assert sorted(s.scalars(select(ProfileRow.name))) == NAMES
        assert set(s.scalars(select(ProfileRow.site_lease))) == {"a"}
        assert not [v for v in s.scalars(select(IdentityRow.value)) if v.startswith("0a:")]
    last = PlanService(b).last_success("prod")
    assert last is not None and last.id == run.id


async def test_activation_fences_a_then_stamps_at_b_and_failback_returns_them(sites: Any) -> None:
    a, hw_a, b, hw_b = sites
    await _stamp_all(a, hw_a)
    blades_a = _live(a)
    run = runs.submit(b, "activation", "prod", created_by="local:test")
    assert run.job_id is not None
    assert await _drive([(a, hw_a), (b, hw_b)], b, run.job_id) == "succeeded"
    # A: every blade the profiles ran on is off, the lease is B's, and A refuses to stamp them.
    assert _live(a) == {}
    assert all(hw_a.bmcs.blade(f"fake://{blade}").power is PowerState.OFF for blade in blades_a.values())
    with a.read() as s:
        assert set(s.scalars(select(ProfileRow.site_lease))) == {"b"}
    with pytest.raises(HeldElsewhere):
        JobService(a).submit_assign("db-01", tenant="acme")
    # B: all live with the VLAN map applied, the lease held here.
    assert set(_live(b)) == set(NAMES)
    assert {1100, 1101} <= {c.native for _, c in hw_b.sw.calls}
    with b.read() as s:
        assert set(s.scalars(select(ProfileRow.site_lease))) == {None}
        doc = s.scalar(select(ProfileRow.document).where(ProfileRow.name == "db-01"))
        assert doc["spec"]["identity"]["nics"][0]["vlans"] == {"native": 1100, "tagged": [1200]}
    with pytest.raises(Conflict, match="active here already"):
        runs.submit(b, "activation", "prod")

    back = runs.submit(b, "failback", "prod", created_by="local:test")
    assert back.job_id is not None
    assert await _drive([(a, hw_a), (b, hw_b)], b, back.job_id) == "succeeded"
    assert _live(b) == {} and set(_live(a)) == set(NAMES)
    fb = PlanService(b).runs("prod", kind="failback")[0]
    assert fb.state == "succeeded" and sorted(p.name for p in fb.profiles) == sorted(NAMES)
    assert {p.state for p in fb.profiles} == {"returned"}
    with a.read() as s:
        assert set(s.scalars(select(ProfileRow.site_lease))) == {None}
    with b.read() as s:
        assert set(s.scalars(select(ProfileRow.site_lease))) == {"a"}
        doc = s.scalar(select(ProfileRow.document).where(ProfileRow.name == "db-01"))
        assert doc["spec"]["identity"]["nics"][0]["vlans"] == {"native": 100, "tagged": [200]}


async def test_activation_with_the_primary_lost_is_audited_and_skips_the_fence(sites: Any) -> None:
    a, _hw_a, b, hw_b = sites
    with acting_as(Actor("local:alice", "cli")):
        run = runs.submit(b, "activation", "prod", created_by="local:alice", primary_lost=True,
                          reason="site A flooded")
    assert run.job_id is not None
    assert await _drive([(b, hw_b)], b, run.job_id) == "succeeded"
    assert set(_live(b)) == set(NAMES)
    with b.read() as s:
        entry = s.scalar(select(AuditRow).where(AuditRow.action == "dr.primary-lost"))
        assert entry is not None and entry.who == "local:alice"
        assert entry.after is not None and entry.after["reason"] == "site A flooded"
    with a.read() as s:       # nobody asked A anything
        assert set(s.scalars(select(ProfileRow.site_lease))) == {None}


async def test_an_activation_whose_engine_stops_mid_recovery_resumes_and_stamps_each_profile_once(
        sites: Any) -> None:
    _, _, b, hw_b = sites
    run = runs.submit(b, "activation", "prod", created_by="local:test", primary_lost=True, reason="drill")
    assert run.job_id is not None
    first = make_engine(b, hw_b)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    try:
        async with asyncio.timeout(60):
            while True:        # until the recovery has submitted its first stamp, then the engine is gone
                await asyncio.sleep(0.02)
                with b.read() as s:
                    if s.scalar(select(JobRow.id).where(JobRow.kind == "stamp")) is not None:
                        break
    finally:
        stop.set()
        await task
    with b.read() as s:
        job = s.get(JobRow, run.job_id)
        assert job is not None and job.state not in ("succeeded", "failed")
    assert await _drive([(b, hw_b)], b, run.job_id) == "succeeded"
    assert set(_live(b)) == set(NAMES)
    with b.read() as s:
        stamps = list(s.scalars(select(JobRow.subject).where(JobRow.kind == "stamp")))
    assert sorted(stamps) == sorted(f"profile acme/{n}" for n in NAMES)     # once each
    info = PlanService(b).runs("prod")[0]
    assert info.state == "succeeded" and all(p.state == "up" and p.rto_seconds for p in info.profiles)


ISCSI = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: san-01, tenant: acme}
spec:
  requirements: {nics: 2}
  identity:
    iscsiInitiator: iqn.2026-11.io.anvil:san-01
    nics:
      - {name: eth0, mac: "02:a0:00:00:09:01", vlans: {native: 100}, pxe: true}
  boot: {mode: uefi, source: {type: iscsi, portal: "10.77.0.1:3260", target: "iqn.2026-11.io.anvil.san:san-01",
                              lun: 1}}
"""
SAN_PLAN = """
apiVersion: anvil/v1
kind: DrPlan
metadata: {name: san}
spec:
  recoverySite: b
  profiles: [{tenant: acme}]
  vlans: {100: 1100}
  rehearsalVlans: {100: 2100}
  storage:
    - target: iqn.2026-11.io.anvil.san:san-01
      lun: 1
      replica: {name: san-01-r, portal: "10.78.0.1:3260", target: "iqn.2026-11.io.anvil.b:san-01", lun: 1}
      copyFrom: COPY_FROM
"""


async def test_lun_replicas_are_copied_for_an_activation_and_a_rehearsal_gets_its_own_copy(tmp_path: Path) -> None:
    from dataclasses import replace

    from appliance.engine.runner import Engine
    from appliance.engine.steps import KINDS
    from appliance.engine.steps.stamp import backing_path
    from tests.unit.engine.fakes import FAST

    b = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        rack(b, tmp_path, blades=2)
        luns, primary_lun = tmp_path / "luns", tmp_path / "a-san-01-lun1.img"
        primary_lun.write_bytes(b"MARKER-AT-A".ljust(4096, b"\0"))
        from appliance.services.profiles import ProfileService

        ProfileService(b).import_document(ISCSI)
        doc = parse_plan(SAN_PLAN.replace("COPY_FROM", str(primary_lun)))
        with b.write() as s:
            s.add(LocalSiteRow(name="b"))
            s.add(DrPlanRow(name="san", recovery_site="b", origin_site="a", document=doc.document))
            for row in s.scalars(select(ProfileRow)):
                row.site_lease = "a"
        hw = Hw(SecretBox(tmp_path / "secrets.key"))
        settings = replace(FAST, luns_dir=luns)

        async def drive(job_id: str) -> str:
            engine = Engine(b, hw, KINDS, settings=settings)
            stop = asyncio.Event()
            task = asyncio.create_task(engine.run(stop))
            copies_seen: set[str] = set()
            try:
                async with asyncio.timeout(60):
                    while True:
                        await asyncio.sleep(0.02)
                        signal_boots(b)
                        if luns.exists():
                            copies_seen.update(p.name for p in luns.glob("*.img"))
                        with b.read() as s:
                            job = s.get(JobRow, job_id)
                            assert job is not None
                            if job.state in ("succeeded", "failed", "rolled_back"):
                                return job.state + "|" + ",".join(sorted(copies_seen))
            finally:
                stop.set()
                await task

        run = runs.submit(b, "rehearsal", "san")
        assert run.job_id is not None
        state, _, seen = (await drive(run.job_id)).partition("|")
        rehearsal_copy = backing_path(luns, f"iqn.2026-11.io.anvil.b:san-01.rh-{run.id.replace('-', '')[:8]}", 1)
        assert state == "succeeded" and rehearsal_copy.name in seen.split(",")
        assert not rehearsal_copy.exists()                   # torn down with the rehearsal
        replica = backing_path(luns, "iqn.2026-11.io.anvil.b:san-01", 1)
        assert not replica.exists()                          # a rehearsal never writes the replica

        run = runs.submit(b, "activation", "san", primary_lost=True, reason="drill")
        assert run.job_id is not None
        assert (await drive(run.job_id)).startswith("succeeded")
        assert replica.read_bytes().startswith(b"MARKER-AT-A")
        with b.read() as s:
            src = s.scalar(select(ProfileRow.document))["spec"]["boot"]["source"]
        assert (src["portal"], src["target"], src["lun"]) == ("10.78.0.1:3260", "iqn.2026-11.io.anvil.b:san-01", 1)
    finally:
        b.close()
