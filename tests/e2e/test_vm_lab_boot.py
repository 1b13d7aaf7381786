"""Stamping profiles onto the VM lab's QEMU blades boots them through Anvil, end to end.

Issue 6's "done when", with nothing done by hand: ``anvil lab up --redfish 0 --vms 2``
and ``anvil serve`` run as real processes; each stamp is ``anvil profile assign NAME
--blade vm-0N``; the VM powers on through its IPMI BMC, PXE-boots from the boot role's
dnsmasq (DHCP in the lab's namespace), fetches its iPXE script, kernel and initrd over
boot HTTP, and the lab image's agent posts the boot callback that ends the stamp. The
iSCSI profiles' LUNs live in the lab's tgtd, which ``anvil serve`` manages without any
``[storage]`` configuration (it finds the tgtd in lab.json).

Checked from outside the appliance: the VM's serial console, tgtd through ``tgtadm``,
the LUN's backing file; the boot signal as the boot role stored it in the job's events.
Each boot's power-on → boot-signal time is printed (and added to
test-artifacts/vm-lab-boot-times.txt when that folder exists).

The tests share one lab (module scope) and run in file order; the iSCSI tests share the
stamp made by the ``san_profile`` fixture and the last one moves that profile to vm-02.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import STRANGER_IP, VmLab, requires_vm_lab, stranger_host

pytestmark = [requires_vm_lab, pytest.mark.slow, pytest.mark.xdist_group("vm-lab"), pytest.mark.timeout(900)]

LAB_UEFI_VMS = 1           # vm-03: OVMF with a plain PXE NIC (the conftest's vm_lab reads this)
KERNEL, INITRD = "lab/vmlinuz", "lab/initrd.img"
SERVER = "10.77.0.1"
CONSOLE_WAIT_S = 120.0
MARKER = "MARKER-1"


def test_image_profile_pxe_boots_vm_and_reports_its_identity(
        vm_lab: VmLab, record_property: Callable[[str, object], None]) -> None:
    """(a) An image profile stamped on vm-01: DHCP + iPXE + HTTP into the lab image, whose agent
    reports the profile's identity back; the stamp succeeds on that report."""
    name, uuid = "img-01", "4c4c4544-0042-3510-8052-b4c04f384e01"
    vm_lab.import_profile(name, {
        "identity": {"uuid": uuid, "nics": [{"name": "eth0", "mac": "02:a0:00:00:e2:01", "pxe": True}]},
        "boot": {"mode": "legacy", "source": {"type": "image", "kernel": KERNEL, "initrd": INITRD,
                                              "cmdline": "console=ttyS0 panic=-1"}},
    })
    vm = vm_lab.vm("vm-01")
    try:
        job = vm_lab.assign(name, "vm-01")
        signal, seconds = vm_lab.boot_signal(job)
        vm_lab.record_boot("image", seconds, record_property)

        facts = signal["facts"]
        assert signal["blade"] == "vm-01" and signal["generation"] == 1
        assert facts["profile"] == f"{vm_lab.tenant}/{name}" and facts["uuid"] == uuid
        # No virtual MAC over IPMI: the image reports the NIC it booted on, the blade's own.
        assert facts["mac"] == vm["mac"]
        assert facts["hostname"] == name and facts["disk"] == "none"
        lease = facts["ip"]
        assert lease.startswith("10.77.0.") and 100 <= int(lease.rsplit(".", 1)[1]) <= 199, lease
        console = vm_lab.serial_text("vm-01")   # QEMU starts it afresh at each power-on
        # The whole chain, as the VM saw it: Anvil's DHCP pointed iPXE at Anvil's script.
        assert f"http://{SERVER}:8080/boot/ipxe" in console
        assert f"Anvil: vm-01 boots profile {vm_lab.tenant}/{name}" in console
        assert f"anvil-agent: eth0 ({vm['mac']}): DHCP lease {lease}" in console
        assert "anvil-agent: callback ok" in console
    finally:
        vm_lab.release(name)


def test_uefi_vm_fetches_ipxe_over_tftp_then_boots_the_image(
        vm_lab: VmLab, record_property: Callable[[str, object], None]) -> None:
    """(a) on a UEFI blade whose NIC carries no iPXE ROM, as a vendor PXE stack: the firmware's
    own PXE asks Anvil's DHCP (client arch 7), gets ipxe.efi from Anvil's TFTP, and iPXE then
    takes the HTTP script into the image, which reports the profile's identity back."""
    name, uuid = "uefi-01", "4c4c4544-0042-3510-8052-b4c04f384e03"
    vm = vm_lab.vm("vm-03")
    assert vm["uefi"] is True
    vm_lab.import_profile(name, {
        "identity": {"uuid": uuid, "nics": [{"name": "eth0", "mac": "02:a0:00:00:e2:03", "pxe": True}]},
        "boot": {"mode": "uefi", "source": {"type": "image", "kernel": KERNEL, "initrd": INITRD,
                                            "cmdline": "console=ttyS0 panic=-1"}},
    })
    try:
        job = vm_lab.assign(name, "vm-03")
        signal, seconds = vm_lab.boot_signal(job)
        vm_lab.record_boot("uefi-image", seconds, record_property)

        facts = signal["facts"]
        assert signal["blade"] == "vm-03" and facts["profile"] == f"{vm_lab.tenant}/{name}"
        assert facts["uuid"] == uuid and facts["mac"] == vm["mac"] and facts["hostname"] == name
        console = vm_lab.serial_text("vm-03")
        # The firmware's PXE, not iPXE, made the first request; iPXE came over TFTP.
        pxe = console.find("Start PXE over IPv4")
        ipxe = console.find(f"http://{SERVER}:8080/boot/ipxe")
        assert 0 <= pxe < ipxe, console[-3000:]
        assert f"Anvil: vm-03 boots profile {vm_lab.tenant}/{name}" in console
        assert "anvil-agent: callback ok" in console
        assert "TFTP: sending ipxe.efi to 10.77.0." in vm_lab.process_log("boot"), "TFTP never sent ipxe.efi"
    finally:
        vm_lab.release(name)


def _boot_sector(message: str) -> bytes:
    """A 512-byte MBR that writes ``message`` to COM1, then halts: a stand-in for an OS loader
    on the LUN (16-bit code, assembled by hand: cli; cld; xor ax,ax; mov ds,ax; mov si,msg;
    next: lodsb; test al,al; jz done; mov dx,0x3f8; out dx,al; jmp next; done: hlt; jmp done)."""
    code = bytes.fromhex("fa fc 31c0 8ed8 be177c ac 84c0 7406 baf803 ee ebf5 f4 ebfd")
    assert len(code) == 0x17            # the message sits right after, at 0x7c17
    sector = code + message.encode() + b"\r\n\x00"
    return sector.ljust(510, b"\x00") + b"\x55\xaa"


def test_sanboot_profile_boots_the_luns_own_loader(
        vm_lab: VmLab, record_property: Callable[[str, object], None]) -> None:
    """(b) without an image: iPXE ``sanboot``s the profile's LUN as the profile's initiator, the
    BIOS runs the loader on it, and the stamp completes on the initiator's login (DESIGN §7:
    nothing of ours runs on the blade to call back)."""
    name, iqn = "sanboot-01", "iqn.2026-11.io.anvil.e2e:sanboot-01"
    target = "iqn.2026-11.io.anvil.san:e2e-sanboot-01"
    marker = "ANVIL-E2E-SANBOOT-LOADER-RAN"
    image = vm_lab.anvil.state_dir / "images" / "e2e" / "sanboot.img"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(_boot_sector(marker).ljust(1024 * 1024, b"\x00"))
    vm_lab.import_profile(name, {
        "identity": {"uuid": "4c4c4544-0042-3510-8052-b4c04f384e04", "iscsiInitiator": iqn,
                     "nics": [{"name": "eth0", "mac": "02:a0:00:00:e2:04", "pxe": True}]},
        "boot": {"mode": "legacy", "source": {"type": "iscsi", "portal": f"{SERVER}:3260", "target": target,
                                              "lun": 1, "image": "e2e/sanboot.img"}},
    })
    try:
        job = vm_lab.assign(name, "vm-02")
        events = vm_lab.events(job)
        power = next(e for e in events if e.kind == "step-started" and (e.data or {}).get("step") == "power-on")
        booted = next(e for e in events if e.kind == "step-done" and (e.data or {}).get("step") == "await-boot")
        assert (booted.data or {})["result"]["booted"] == "initiator login"
        vm_lab.record_boot("iscsi-sanboot", (booted.at - power.at).total_seconds(), record_property)

        console = vm_lab.wait_console("vm-02", 0, (marker,), CONSOLE_WAIT_S)
        assert f"Anvil: vm-02 boots profile {vm_lab.tenant}/{name}" in console
        # The loader writes COM1 itself while the firmware's console copy may still be
        # flushing its last line: only the order is certain, not whole lines.
        assert "Registered SAN device 0x80" in console, console[-2000:]
        assert 0 <= console.find("Booting from SAN device") < console.find(marker), console[-2000:]
        view = vm_lab.target(target)
        assert view.acl == (iqn,) and iqn in view.sessions
    finally:
        vm_lab.release(name)
    assert vm_lab.target(target).acl == ()


@dataclass(frozen=True)
class SanStamp:
    name: str
    iqn: str
    target: str
    job: str


SAN_IQN = "iqn.2026-11.io.anvil.e2e:san-01"
SAN_TARGET = "iqn.2026-11.io.anvil.san:e2e-san-01"


@pytest.fixture(scope="module")
def san_profile(vm_lab: VmLab) -> Iterator[SanStamp]:
    """An iSCSI profile (sanhook + the lab image, LUN 1, 8 MiB) stamped on vm-01; its image
    writes MARKER-1 to the disk."""
    name = "san-01"
    vm_lab.import_profile(name, {
        "identity": {"uuid": "4c4c4544-0042-3510-8052-b4c04f384e02", "iscsiInitiator": SAN_IQN,
                     "nics": [{"name": "eth0", "mac": "02:a0:00:00:e2:02", "pxe": True}]},
        "boot": {"mode": "legacy", "source": {
            "type": "iscsi", "portal": f"{SERVER}:3260", "target": SAN_TARGET, "lun": 1, "sizeMiB": 8,
            "kernel": KERNEL, "initrd": INITRD, "cmdline": f"console=ttyS0 panic=-1 anvil.disk_write={MARKER}"}},
    })
    job = vm_lab.assign(name, "vm-01")
    yield SanStamp(name, SAN_IQN, SAN_TARGET, job)


def _backing_marker(vm_lab: VmLab, target: str) -> bytes:
    paths = vm_lab.target(target).backing
    assert len(paths) == 1, paths
    path = Path(paths[0])
    assert path.is_relative_to(vm_lab.anvil.state_dir / "luns"), path
    with open(path, "rb") as fh:
        fh.seek(2 * 512)
        return fh.read(len(MARKER))


def test_iscsi_profile_attaches_its_lun_with_the_profiles_iqn(
        vm_lab: VmLab, san_profile: SanStamp, record_property: Callable[[str, object], None]) -> None:
    """(b) An iSCSI profile stamped on vm-01: Anvil (through the lab's tgtd, found in lab.json)
    creates the LUN and opens it to the profile's IQN only; iPXE sanhooks it with that IQN,
    the image logs in from the iBFT, reports the (empty) disk marker and writes MARKER-1."""
    signal, seconds = vm_lab.boot_signal(san_profile.job)
    vm_lab.record_boot("iscsi", seconds, record_property)
    facts = signal["facts"]
    assert facts["profile"] == f"{vm_lab.tenant}/{san_profile.name}"
    assert facts["mac"] == vm_lab.vm("vm-01")["mac"]
    assert facts["disk"] == ""            # a fresh LUN: attached, no marker yet

    target = vm_lab.target(san_profile.target)
    assert target.acl == (san_profile.iqn,)
    assert san_profile.iqn in target.sessions and set(target.sessions) == {san_profile.iqn}
    agent = vm_lab.agent_lines("vm-01")
    assert "iBFT found" in agent and "iSCSI disk /dev/sda attached" in agent, agent
    assert f"disk marker written: '{MARKER}'" in agent, agent
    assert _backing_marker(vm_lab, san_profile.target) == MARKER.encode()


FOREIGN_IQN = "iqn.2026-11.io.anvil.e2e:intruder"
FOREIGN_TEMPLATE = """\
#!ipxe
echo e2e: {{{{ blade }}}} boots {{{{ profile }}}} as initiator {iqn}
set initiator-iqn {iqn}
sanhook {{{{ root_path }}}} || goto refused
echo E2E-FOREIGN-IQN-ATTACHED
exit 1
:refused
echo E2E-FOREIGN-IQN-REFUSED ${{errno}}
exit 1
"""


def _reboot_from_network(vm_lab: VmLab, blade: str) -> int:
    """``anvil blade boot BLADE network`` + ``anvil blade power BLADE reset``; the console offset
    before (a reset keeps QEMU, and so its console file, running)."""
    offset = vm_lab.serial_size(blade)
    vm_lab.anvil("blade", "boot", blade, "network")
    vm_lab.anvil("blade", "power", blade, "reset")
    return offset


def test_target_refuses_the_same_vm_with_another_iqn(vm_lab: VmLab, san_profile: SanStamp) -> None:
    """(c) While the LUN's ACL holds san-01's IQN, vm-01 booting san-01's LUN as another
    initiator is refused by the target; the same VM with san-01's own IQN gets in.

    How the other IQN is produced: the boot service's per-profile iPXE template
    (``profiles/TENANT/NAME.ipxe.j2`` in its template folder, picked up within a second) —
    the operator's own way to change what one profile's blade runs, so the script still
    comes from Anvil's boot service, for this binding, through Anvil's DHCP. It differs
    from the stock iSCSI template only in ``set initiator-iqn``, so the only thing that
    changes between the refused and the accepted boot is the initiator name the target
    sees. Both boots are IPMI resets issued with ``anvil blade boot|power``; the ACL is
    left as the stamp made it (and checked before and after). Evidence of the refusal:
    iPXE's "Could not open SAN device" on the console, and no session of the foreign name
    in tgtd. The template goes to the lab boot role's own template folder ([boot]
    template_dirs), in a tenant of this test run only, and is removed at once.
    """
    template = Path(vm_lab.state["vmlab"]["templateDir"]) / "profiles" / vm_lab.tenant / f"{san_profile.name}.ipxe.j2"
    assert vm_lab.target(san_profile.target).acl == (san_profile.iqn,)
    # What the LUN holds now, read around the appliance: MARKER-1 when the iBFT test ran before
    # this one on this lab, nothing on a fresh LUN (pytest-xdist decides the order).
    held = _backing_marker(vm_lab, san_profile.target).split(b"\0")[0].decode()
    template.parent.mkdir(parents=True, exist_ok=True)
    try:
        template.write_text(FOREIGN_TEMPLATE.format(iqn=FOREIGN_IQN))
        time.sleep(1.5)   # the boot service looks templates up again after 1 s
        offset = _reboot_from_network(vm_lab, "vm-01")
        console = vm_lab.wait_console("vm-01", offset, ("E2E-FOREIGN-IQN-REFUSED", "E2E-FOREIGN-IQN-ATTACHED"),
                                      CONSOLE_WAIT_S)
    finally:
        template.unlink(missing_ok=True)
        template.parent.rmdir()
        if not any(template.parent.parent.iterdir()):
            template.parent.parent.rmdir()
    assert f"as initiator {FOREIGN_IQN}" in console
    assert "E2E-FOREIGN-IQN-REFUSED" in console and "E2E-FOREIGN-IQN-ATTACHED" not in console
    assert "Could not open SAN device" in console
    target = vm_lab.target(san_profile.target)
    assert FOREIGN_IQN not in target.sessions and target.acl == (san_profile.iqn,)

    time.sleep(1.5)   # the stock template again
    offset = _reboot_from_network(vm_lab, "vm-01")
    console = vm_lab.wait_console("vm-01", offset, ("anvil-agent: callback", "Could not open SAN device"),
                                  CONSOLE_WAIT_S)
    assert "Could not open SAN device" not in console
    assert "Registered SAN device" in console
    agent = "\n".join(line for line in console.splitlines() if "anvil-agent" in line)
    assert "iSCSI disk /dev/sda attached" in agent and f"disk marker: '{held}'" in agent, agent
    assert san_profile.iqn in vm_lab.target(san_profile.target).sessions


def test_released_profile_boots_its_lun_on_another_vm_with_the_data(
        vm_lab: VmLab, san_profile: SanStamp, record_property: Callable[[str, object], None]) -> None:
    """(d) Release san-01 and stamp it on vm-02: the same LUN, opened to the same IQN, now
    attached by vm-02, still holds what vm-01 wrote."""
    vm_lab.release(san_profile.name)
    assert vm_lab.target(san_profile.target).acl == ()      # released: nobody may log in
    job = vm_lab.assign(san_profile.name, "vm-02")
    signal, seconds = vm_lab.boot_signal(job)
    vm_lab.record_boot("iscsi-moved", seconds, record_property)

    facts = signal["facts"]
    assert signal["blade"] == "vm-02" and facts["mac"] == vm_lab.vm("vm-02")["mac"]
    assert facts["profile"] == f"{vm_lab.tenant}/{san_profile.name}"
    assert facts["disk"] == MARKER            # written by vm-01, read by vm-02
    assert vm_lab.target(san_profile.target).acl == (san_profile.iqn,)
    assert "iSCSI disk /dev/sda attached" in vm_lab.agent_lines("vm-02")


def test_a_stranger_on_the_provisioning_network_neither_completes_nor_blocks_a_stamp(
        vm_lab: VmLab, record_property: Callable[[str, object], None]) -> None:
    """Issue 14 §2 against the real boot role in its namespace: another host on the provisioning
    network reads a VM's script and its token, posts the callback, replays it after the VM's own:
    the stamp completes only on the VM's callback, the stranger's are refused and change nothing,
    and the VM's agent keeps beating. (8f9e50f: the forged callback completed the stamp.)"""
    import re

    from sqlalchemy import select

    from appliance.store.tables import BootTokenRow

    name = "trust-01"
    vm_lab.import_profile(name, {
        "identity": {"uuid": "4c4c4544-0042-3510-8052-b4c04f384e21",
                     "nics": [{"name": "eth0", "mac": "02:a0:00:00:e2:21", "pxe": True}]},
        "boot": {"mode": "legacy", "source": {"type": "image", "kernel": KERNEL, "initrd": INITRD,
                                              "cmdline": "console=ttyS0 panic=-1"}},
    })
    # A BIOS VM nobody holds (the iSCSI tests above may have left their profile on one).
    import json

    blades = {b["name"]: b for b in json.loads(vm_lab.anvil("blade", "list", "-o", "json").out)}
    target = next(b for b in ("vm-02", "vm-01") if blades[b]["state"] == "spare" and not blades[b].get("profile"))
    vm = vm_lab.vm(target)
    script_url = f"http://{SERVER}:8080/boot/ipxe?mac={vm['mac']}"
    with stranger_host(vm_lab.netns) as stranger:
        submitted = vm_lab.anvil("profile", "assign", name, "--tenant", vm_lab.tenant, "--blade", target,
                                 "--no-wait")
        job = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", submitted.out)
        assert job, submitted.out
        vm_lab.stamped.add(name)
        token = ""
        deadline = time.monotonic() + 120
        while not token and time.monotonic() < deadline:      # the engine opens the attempt at set-boot
            status, text = stranger.http("GET", script_url)
            assert status == 200
            found = re.search(r"anvil\.token=(\S+)", text)
            token = found.group(1) if found else ""
            if not token:
                time.sleep(0.5)
        assert token, f"{target}'s script never carried a boot token"
        for _ in range(20):                                    # fetching writes nothing, rotates nothing
            assert stranger.http("GET", script_url)[1].count(f"anvil.token={token}") == 1
        forged = stranger.http("POST", f"http://{SERVER}:8080/boot/callback",
                               {"token": token, "mac": vm["mac"], "ip": STRANGER_IP})
        assert forged[0] == 403, forged
        followed = vm_lab.job("job", "watch", job.group(0))
        assert followed.code == 0 and "succeeded" in followed.out, followed.out + followed.err
        signal, seconds = vm_lab.boot_signal(job.group(0))
        vm_lab.record_boot("image, with a stranger on the network", seconds, record_property)
        assert signal["peer"] != STRANGER_IP and signal["peer_rule"] in ("lease", "neighbour"), signal
        assert signal["facts"]["ip"] == signal["peer"]
        replayed = stranger.http("POST", f"http://{SERVER}:8080/boot/callback", {"token": token})
        assert replayed[0] == 403, replayed
        # The VM's agent still beats with the secret its own callback got (every 2 s, recorded within
        # a second): a beat of this profile's binding after the replay, looked for until one comes.
        from datetime import UTC, datetime

        from appliance.store.tables import BindingRow, ProfileRow

        replayed_at = datetime.now(UTC)
        beaten = False
        store = vm_lab.anvil.store()
        try:
            deadline = time.monotonic() + 30
            while not beaten and time.monotonic() < deadline:
                time.sleep(1)
                with store.read() as s:
                    beats = list(s.scalars(
                        select(BootTokenRow.last_seen_at)
                        .join(BindingRow, BindingRow.id == BootTokenRow.binding_id)
                        .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                        .where(ProfileRow.name == name, ProfileRow.tenant == vm_lab.tenant,
                               BootTokenRow.kind == "heartbeat", BootTokenRow.voided_at.is_(None))))
                beaten = any(b is not None and (b if b.tzinfo else b.replace(tzinfo=UTC)) > replayed_at for b in beats)
        finally:
            store.close()
        assert beaten, f"{target}'s heartbeats stopped after the stranger's replay (none within 30 s)"
    vm_lab.release(name)
