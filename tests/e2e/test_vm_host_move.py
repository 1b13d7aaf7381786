"""Physical or virtual, one profile (issue 15 item 5's "done when"), end to end.

A real ``anvil lab up --vms 1 --vm-host-slots 1``: one QEMU blade behind its IPMI BMC
(vm-01) and a real libvirtd in the lab's namespace (QEMU under TCG), enrolled as VM host
``lab-vmhost`` whose one slot is the blade ``lab-vmhost-01`` (driver libvirt); a real
``anvil serve``; the boot role and tgtd of the lab.

An iSCSI profile (sanhook + the lab image, LUN in the lab's tgtd) is stamped on the libvirt
domain: libvirt defines the domain with the profile's UUID and MAC, it network-boots
through Anvil, and the image's callback reports — from inside the guest — the SMBIOS
system UUID and the NIC's MAC: both the profile's. The image writes a marker to the LUN.
Then ``anvil failover move`` takes the profile to the QEMU blade vm-01 (a planned move:
the domain is powered off, confirmed, and gets its own identity back), which boots the
same LUN as the same initiator and finds the marker the VM wrote; and back again to the
domain, which takes the profile's UUID and MAC once more.

Checked from outside the appliance too: libvirt's own view of the domain, tgtd's ACL,
the domain's serial console.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.lab import libvirtd
from appliance.store.tables import FailoverRow
from tests.e2e.conftest import VmLab, requires_vm_lab

pytestmark = [requires_vm_lab, pytest.mark.skipif(libvirtd.missing() is not None, reason=libvirtd.missing() or ""),
              pytest.mark.slow, pytest.mark.xdist_group("vm-lab"), pytest.mark.timeout(900)]

LAB_BIOS_VMS = 1
LAB_VM_HOST_SLOTS = 1

NAME = "pv-01"
UUID = "4c4c4544-0042-3510-8052-b4c04f385015"
MAC = "02:a0:00:00:e2:15"
IQN = "iqn.2026-11.io.anvil.e2e:pv-host"
TARGET = "iqn.2026-11.io.anvil.e2e:pv-disk"
MARKER = "WRITTEN-ON-THE-VM"
SLOT = "lab-vmhost-01"
DOMAIN = "anvil-lab-vmhost-01"


def _domain(vm_lab: VmLab) -> tuple[str, bool]:
    """(UUID, running) of the slot's domain, as libvirt itself says."""
    import libvirt

    conn = libvirt.open(vm_lab.state["vmHost"]["uri"])
    try:
        dom = conn.lookupByName(DOMAIN)
        return dom.UUIDString(), bool(dom.isActive())
    finally:
        conn.close()


def _console(vm_lab: VmLab) -> str:
    run_dir = next(p["libvirtRunDir"] for p in vm_lab.state["processes"] if p.get("libvirtRunDir"))
    try:
        raw = (Path(run_dir) / "log" / "qemu" / f"{DOMAIN}.serial.log").read_bytes()
    except OSError:
        return ""
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw.decode("utf-8", "replace")).replace("\r", "")


def test_a_profile_boots_on_a_libvirt_domain_then_moves_to_a_qemu_blade_with_its_lun(
        vm_lab: VmLab, record_property: Callable[[str, object], None]) -> None:
    anvil = vm_lab.anvil
    hosts = json.loads(anvil("vm-host", "list", "-o", "json").out)
    assert [(h["name"], [b["name"] for b in h["blades"]]) for h in hosts] == [("lab-vmhost", [SLOT])]
    blade = json.loads(anvil("blade", "show", SLOT, "-o", "json").out)
    assert blade["driver"] == "libvirt", blade
    anvil("failover", "domain", "create", "pv", "--vm-host", "lab-vmhost")
    vm_lab.import_profile(NAME, {
        "identity": {"uuid": UUID, "iscsiInitiator": IQN, "nics": [{"name": "eth0", "mac": MAC, "pxe": True}]},
        "boot": {"mode": "legacy", "source": {
            "type": "iscsi", "portal": "10.77.0.1:3260", "target": TARGET, "lun": 1, "sizeMiB": 8,
            "kernel": "lab/vmlinuz", "initrd": "lab/initrd.img",
            "cmdline": f"console=ttyS0 panic=-1 anvil.disk_write={MARKER}"}},
        "failover": {"domain": "pv", "priority": 10, "policy": "n+1"},
    })

    # -- virtual: the profile on the libvirt domain ------------------------------------------------
    job = vm_lab.assign(NAME, SLOT)
    facts, took = vm_lab.boot_signal(job)
    vm_lab.record_boot("libvirt-domain-iscsi", took, record_property)
    seen = facts["facts"]
    assert seen["sysuuid"] == UUID, seen        # SMBIOS UUID inside the guest: the profile's
    assert seen["mac"] == MAC, seen             # the NIC inside the guest carries the profile's MAC
    assert seen["profile"] == f"{vm_lab.tenant}/{NAME}" and seen["disk"] == "", seen
    assert _domain(vm_lab) == (UUID, True)      # libvirt's own view
    deadline = time.monotonic() + 30
    while f"disk marker written: '{MARKER}'" not in _console(vm_lab) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert f"disk marker written: '{MARKER}'" in _console(vm_lab), _console(vm_lab)[-2000:]
    assert vm_lab.target(TARGET).acl == (IQN,)

    # -- physical: a planned move to the QEMU blade ----------------------------------------------------
    t0 = time.monotonic()
    res = vm_lab.job("failover", "move", NAME, "--tenant", vm_lab.tenant, "--to", "vm-01")
    assert res.code == 0 and "succeeded" in res.out, f"{res.out}{res.err}\n{vm_lab.serve.log_tail()}"
    moved = time.monotonic() - t0
    move_job = re.search(r"job (\S+)", res.out)
    assert move_job, res.out
    facts, took = vm_lab.boot_signal(move_job.group(1))
    vm_lab.record_boot("move-to-qemu-blade", took, record_property)
    seen = facts["facts"]
    assert seen["disk"] == MARKER, seen         # the data written on the VM is there
    assert seen["profile"] == f"{vm_lab.tenant}/{NAME}" and seen["mac"] == vm_lab.vm("vm-01")["mac"], seen
    assert vm_lab.target(TARGET).acl == (IQN,)  # same initiator, same LUN
    store = anvil.store()
    try:
        with store.read() as s:
            row = s.scalar(select(FailoverRow).where(FailoverRow.profile == NAME))
            assert row is not None and row.state == "succeeded", row and (row.state, row.reason)
            assert (row.from_blade, row.to_blade, row.drill, row.fence) == (SLOT, "vm-01", True, "power")
    finally:
        store.close()
    # The domain is off and has its own identity back: the profile lives on one machine only.
    own_uuid, running = _domain(vm_lab)
    assert not running and own_uuid != UUID
    assert json.loads(anvil("blade", "show", SLOT, "-o", "json").out)["state"] == "spare"
    record_property("pv_move_s", round(moved, 1))
    print(f"P<->V: move from the libvirt domain to vm-01 took {moved:.1f} s (command to succeeded)")

    # -- and back: physical to virtual, the domain takes the profile's identity again --------------------
    res = vm_lab.job("failover", "move", NAME, "--tenant", vm_lab.tenant, "--to", SLOT)
    assert res.code == 0 and "succeeded" in res.out, f"{res.out}{res.err}\n{vm_lab.serve.log_tail()}"
    back_job = re.search(r"job (\S+)", res.out)
    assert back_job, res.out
    facts, took = vm_lab.boot_signal(back_job.group(1))
    vm_lab.record_boot("move-back-to-libvirt-domain", took, record_property)
    seen = facts["facts"]
    assert (seen["sysuuid"], seen["mac"], seen["disk"]) == (UUID, MAC, MARKER), seen
    assert _domain(vm_lab) == (UUID, True)
