"""The stamp's boot-signal wait and its storage steps, with in-process fakes (the real boot
service, tgt and VMs are proven in tests/integration and tests/e2e)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlalchemy import select

from appliance.drivers.protocols import DiskSpec, LunRef, PowerState
from appliance.engine.runner import Engine
from appliance.engine.steps import KINDS
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.tables import BootTokenRow, JobEventRow
from tests.unit.engine.fakes import FAST, FakeHardware, add_profile, rack, run_until_idle

ISCSI_PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: acme}}
spec:
  identity:
    iscsiInitiator: iqn.2026-11.io.anvil.host:{name}
    nics:
      - {{name: eth0, mac: "02:a0:00:00:0{n}:01", vlans: {{native: 100}}, pxe: true}}
  boot:
    mode: uefi
    source: {{type: iscsi, portal: "10.77.0.1:3260", target: "iqn.2026-11.io.anvil.san:{name}", lun: {lun}{extra}}}
"""


class FakeStorage:
    name = "fake-tgt"

    def __init__(self) -> None:
        self.luns: dict[LunRef, DiskSpec] = {}
        self.acl: dict[LunRef, set[str]] = {}
        self.logged_in: set[str] = set()

    async def ensure_lun(self, lun: LunRef, disk: DiskSpec) -> None:
        self.luns.setdefault(lun, disk)
        self.acl.setdefault(lun, set())

    async def bind(self, lun: LunRef, initiator: str) -> None:
        self.acl[lun].add(initiator)

    async def unbind(self, lun: LunRef, initiator: str) -> None:
        self.acl.get(lun, set()).discard(initiator)

    async def bindings(self, lun: LunRef) -> frozenset[str]:
        return frozenset(self.acl.get(lun, set()))

    async def sessions(self, lun: LunRef) -> frozenset[str]:
        return frozenset(i for i in self.logged_in if i in self.acl.get(lun, set()))

    async def remove_lun(self, lun: LunRef) -> None:
        self.luns.pop(lun, None)

    async def close(self) -> None:
        pass


class StorageHardware(FakeHardware):
    def __init__(self) -> None:
        super().__init__()
        self.disk = FakeStorage()

    def storage(self) -> FakeStorage:  # type: ignore[override]
        return self.disk


def engine(store: Store, hw: FakeHardware, tmp: Path, **kw: float) -> Engine:
    settings = dataclasses.replace(FAST, luns_dir=tmp / "luns", images_dir=tmp / "images", **kw)
    return Engine(store, hw, KINDS, settings=settings)  # type: ignore[arg-type]


async def test_no_boot_signal_fails_the_stamp_with_a_reason_and_rolls_back(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    hw = FakeHardware()
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01")
    await run_until_idle(engine(store, hw, tmp_path, boot_timeout=0.3), boots=False)
    info = JobService(store).get(job.id)
    assert info.state == "rolled_back"
    assert "posted no boot callback within 0.3 s" in (info.error or "")
    assert hw.bmcs.blade("fake://b01").power is PowerState.OFF


async def test_a_signal_of_an_older_generation_does_not_complete_the_stamp(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01")
    with store.write() as s:
        s.add(JobEventRow(job_id=job.id, kind="boot-signal", message="stale", data={"generation": 99}))
    await run_until_idle(engine(store, FakeHardware(), tmp_path, boot_timeout=0.3), boots=False)
    assert JobService(store).get(job.id).state == "rolled_back"


async def test_set_boot_issues_a_token_and_the_signal_completes_the_job(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01")
    await run_until_idle(engine(store, FakeHardware(), tmp_path))
    info = JobService(store).get(job.id)
    assert info.state == "succeeded", info.error
    assert next(s for s in info.steps if s.name == "await-boot").result["booted"] == "callback"
    with store.read() as s:
        assert s.scalars(select(BootTokenRow).where(BootTokenRow.kind == "boot")).first() is not None


async def test_local_boot_needs_no_signal(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    doc = ISCSI_PROFILE.format(name="loc-01", n=1, lun=1, extra="").replace(
        'source: {type: iscsi, portal: "10.77.0.1:3260", target: "iqn.2026-11.io.anvil.san:loc-01", lun: 1}',
        "source: {type: local}")
    ProfileService(store).import_document(doc)
    job = JobService(store).submit_assign("loc-01", tenant="acme", blade="b01")
    await run_until_idle(engine(store, FakeHardware(), tmp_path, boot_timeout=0.3), boots=False)
    info = JobService(store).get(job.id)
    assert info.state == "succeeded", info.error
    assert next(s for s in info.steps if s.name == "await-boot").result["booted"].startswith("power-on")


async def test_iscsi_stamp_grants_only_its_initiator_and_release_revokes(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    ProfileService(store).import_document(ISCSI_PROFILE.format(
        name="db-01", n=1, lun=1, extra=", kernel: lab/vmlinuz, initrd: lab/initrd.img, sizeMiB: 8"))
    hw = StorageHardware()
    lun = LunRef("iqn.2026-11.io.anvil.san:db-01", 1)
    hw.disk.acl[lun] = {"iqn.2026-11.io.anvil.host:stale"}   # left by an interrupted release
    jobs = JobService(store)
    job = jobs.submit_assign("db-01", tenant="acme", blade="b01")
    await run_until_idle(engine(store, hw, tmp_path))
    assert jobs.get(job.id).state == "succeeded", jobs.get(job.id).error
    assert hw.disk.acl[lun] == {"iqn.2026-11.io.anvil.host:db-01"}
    disk = hw.disk.luns[lun]
    assert disk.size == 8 * 1024 * 1024 and disk.path.parent == tmp_path / "luns" and disk.seed is None
    rel = jobs.submit_release("db-01", tenant="acme")
    await run_until_idle(engine(store, hw, tmp_path))
    assert jobs.get(rel.id).state == "succeeded"
    assert hw.disk.acl[lun] == set() and lun in hw.disk.luns   # access revoked, data kept


async def test_sanboot_completes_when_the_initiator_logs_in(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    ProfileService(store).import_document(ISCSI_PROFILE.format(name="db-02", n=2, lun=1, extra=""))
    hw = StorageHardware()
    hw.disk.logged_in.add("iqn.2026-11.io.anvil.host:db-02")
    job = JobService(store).submit_assign("db-02", tenant="acme", blade="b01")
    await run_until_idle(engine(store, hw, tmp_path, boot_timeout=2.0), boots=False)
    info = JobService(store).get(job.id)
    assert info.state == "succeeded", info.error
    assert next(s for s in info.steps if s.name == "await-boot").result["booted"] == "initiator login"


async def test_lun_zero_is_refused_with_a_reason(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    ProfileService(store).import_document(ISCSI_PROFILE.format(name="db-03", n=3, lun=0, extra=""))
    job = JobService(store).submit_assign("db-03", tenant="acme", blade="b01")
    await run_until_idle(engine(store, StorageHardware(), tmp_path))
    info = JobService(store).get(job.id)
    assert info.state == "rolled_back"
    assert "LUN 0 is the target's controller" in (info.error or "")
