"""A profile's BIOS settings through the stamp, against the emulated rack (appliance.lab.inproc):
real sushy-tools BMCs with the lab's Bios resources, the production engine and drivers. What
the BIOS holds is read around the appliance, from the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.drivers.protocols import Secret
from appliance.lab import ipmi_emulator, procs, redfish_emulator
from appliance.lab.inproc import InprocRig, fast_engine
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.changes import ChangeFilter, ChangeService
from appliance.services.jobs import JobInfo, JobService
from appliance.services.profiles import ProfileService
from appliance.store.tables import BindingRow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: acme}}
spec:
  requirements: {{minCpus: 8, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:b1:00:00:{n:02x}:01", vlans: {{native: 100}}, pxe: true}}
      - {{name: eth1, mac: "02:b1:00:00:{n:02x}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}}}
  bios: {bios}
"""
FINAL = ("succeeded", "failed", "rolled_back", "cancelled")


async def _run(rig: InprocRig, name: str, n: int, bios: str, blade: str | None = None) -> JobInfo:
    ProfileService(rig.store).import_document(PROFILE.format(name=name, n=n, bios=bios))
    job = JobService(rig.store).submit_assign(name, tenant="acme", blade=blade)
    jobs = JobService(rig.store)
    return await rig.until(f"{name} final", lambda: (lambda i: i if i.state in FINAL else None)(jobs.get(job.id)), 90)


def _bios(rig: InprocRig, blade: str, which: str = "") -> dict:
    b = rig.blade(blade)
    return redfish_emulator.get_json(b.emulator, f"/redfish/v1/Systems/{b.system['uuid']}/BIOS{which}")["Attributes"]


async def test_bios_settings_are_staged_before_power_on_and_read_back_after_the_boot(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[2], engine=fast_engine()) as rig:
        assert _bios(rig, "b001")["ProcVirtualization"] == "Enabled"
        info = await _run(rig, "bios-01", 1, "{ProcVirtualization: Disabled, NumaNodesPerSocket: 2, "
                                             "SriovGlobalEnable: true}", blade="b001")
        assert info.state == "succeeded", info.error
        steps = {s.name: s for s in info.steps}
        assert steps["stage-bios"].result["biosStaged"] == {"ProcVirtualization": "Disabled",
                                                           "NumaNodesPerSocket": "2", "SriovGlobalEnable": "True"}
        assert steps["verify-bios"].result["biosVerified"] is True
        # Around the appliance: the BIOS holds them, nothing is left pending.
        current = _bios(rig, "b001")
        assert (current["ProcVirtualization"], current["NumaNodesPerSocket"], current["SriovGlobalEnable"]) == (
            "Disabled", 2, True)
        assert _bios(rig, "b001", "/Settings") == {}
        assert _bios(rig, "b002")["ProcVirtualization"] == "Enabled"   # the other blade untouched
        # The change is on record for the CMDB: what was staged, by which job and step.
        records, _ = ChangeService(rig.store).list(ChangeFilter(resource="bios", name="b001"))
        assert [(r["action"], r["after"], r["job"], r["step"]) for r in records] == [
            ("stage", {"ProcVirtualization": "Disabled", "NumaNodesPerSocket": "2", "SriovGlobalEnable": "True"},
             info.id, "stage-bios")], records


async def test_an_unknown_attribute_is_refused_before_anything_changes(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[1], engine=fast_engine()) as rig:
        info = await _run(rig, "bios-02", 2, "{ProcVirtualization: Disabled, TurboWarpDrive: Engaged}")
        assert info.state in ("failed", "rolled_back"), info.state
        assert "BIOS attribute 'TurboWarpDrive' is unknown to this blade (per AnvilLabBiosRegistry.v1_0_0)" in (
            info.error or ""), info.error
        done = [s.name for s in info.steps if s.state != "pending"]
        assert done == ["check-requirements", "choose-blade", "check-bios"], [(s.name, s.state) for s in info.steps]
        # Around the appliance: nothing staged, never powered, identities untouched, no binding.
        b = rig.blade("b001")
        assert _bios(rig, "b001", "/Settings") == {}
        assert redfish_emulator.power_history(b.emulator) == []
        with rig.store.read() as s:
            assert s.scalars(select(BindingRow)).all() == []


async def test_an_ipmi_blade_fails_early_unless_the_profile_says_enforce_false(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[1], enroll=0, engine=fast_engine()) as rig:
        port = procs.free_udp_port()
        emu = ipmi_emulator.start_ipmi(tmp_path / "ipmi", [port])
        try:
            BladeService(rig.store, rig.box).enroll(Enrollment(
                name="ipmi-1", bmc=emu.address(port), username="admin", password=Secret("password"),
                cpus=16, memory_gib=64,
                nics=(NicSpec("eth0", "52:54:00:99:00:01"), NicSpec("eth1", "52:54:00:99:00:02"))))
            info = await _run(rig, "bios-03", 3, "{ProcVirtualization: Disabled}", blade="ipmi-1")
            assert info.state in ("failed", "rolled_back")
            assert ("profile bios-03 asks for BIOS settings (ProcVirtualization) but blade ipmi-1's BMC (ipmi) "
                    "cannot set them") in (info.error or ""), info.error
            ran = [s.name for s in info.steps if s.state != "pending"]
            assert ran == ["check-requirements", "choose-blade", "check-bios"]
            # With enforce: false the same blade gets past the check (the rest of the stamp is IPMI's as usual).
            ProfileService(rig.store).import_document(PROFILE.format(
                name="bios-04", n=4, bios="{ProcVirtualization: Disabled, enforce: false}"))
            job = JobService(rig.store).submit_assign("bios-04", tenant="acme", blade="ipmi-1")
            jobs = JobService(rig.store)
            check = await rig.until("check-bios done", lambda: next(
                (s for s in jobs.get(job.id).steps if s.name == "check-bios" and s.state == "done"), None), 60)
            assert "enforce: false" in check.result["bios"]
        finally:
            ipmi_emulator.stop(emu)


async def test_a_changed_attribute_on_a_running_blade_is_drift_within_one_monitor_pass(tmp_path: Path) -> None:
    from appliance.monitor.runner import MonitorSettings
    from appliance.services.failover import FailoverService

    # The monitor's own loop runs rarely here: the passes that count are the ones this test runs.
    async with InprocRig(tmp_path, chassis=[1], engine=fast_engine(),
                         monitor=MonitorSettings(interval=3600)) as rig:
        assert rig.monitor is not None
        info = await _run(rig, "bios-05", 5, "{ProcVirtualization: Disabled, ProcTurboMode: Enabled}", blade="b001")
        assert info.state == "succeeded", info.error
        clean = {v.blade: v for v in await rig.monitor.poll_once()}["b001"]
        assert clean.ok and clean.drift == "", clean

        b = rig.blade("b001")
        redfish_emulator.change_bios(b.emulator, b.system, {"ProcVirtualization": "Enabled"})
        drifted = {v.blade: v for v in await rig.monitor.poll_once()}["b001"]
        want = "BIOS drift: ProcVirtualization=Enabled (profile acme/bios-05: Disabled)"
        assert drifted.drift == want
        assert drifted.ok, "drift is reported, it is not a failure (no failover)"
        assert rig.monitor.drifts == {"b001": want}
        # What the console shows: the blade's last monitor sample carries it.
        latest = FailoverService(rig.store).health_history("b001", limit=1)[0]
        assert latest.ok and want in latest.detail
