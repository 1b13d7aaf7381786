"""The VM lab's building blocks end to end, without the appliance: the lab image boots a
real QEMU VM from a real dnsmasq + HTTP server, powered through Anvil's own IPMI driver
against the VM's pyghmi BMC, and its agent calls back and heartbeats (lab/boot-vm.md).

TCG on hosts without hardware virtualisation: one boot is ~10-15 s of two shared cores.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from appliance.drivers import registry
from appliance.drivers.protocols import (
    BmcDriver,
    BootDevice,
    BootMode,
    BootSetting,
    PortConfig,
    PowerAction,
    PowerState,
    SwitchRef,
)
from appliance.lab.bootnet import BootNet
from appliance.lab.guest_image import ensure_lab_image
from appliance.lab.vm import LabVm
from tests.integration.vm.conftest import (
    CACHE,
    BootRig,
    IscsiTarget,
    LabImage,
    bmc_of,
    image_script,
    requires_vm_lab,
)

pytestmark = [requires_vm_lab, pytest.mark.slow, pytest.mark.timeout(240)]

BOOT_TIMEOUT = 90.0   # ~13 s measured per TCG boot; room for a loaded 2-core machine


def _cpio(data: bytes) -> dict[str, tuple[int, bytes]]:
    """{name: (mode, content)} of a newc archive."""
    out: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while pos < len(data):
        assert data[pos:pos + 6] == b"070701", f"bad cpio header at {pos}"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            break
        pos += 110 + namesize
        pos += -pos % 4
        out[name] = (mode, data[pos:pos + size])
        pos += size + (-size % 4)
    return out


def test_lab_image_holds_the_agent_modules_and_iscsistart(lab_image: LabImage) -> None:
    files = _cpio(gzip.decompress(lab_image.initrd.read_bytes()))
    for want in ("init", "bin/busybox", "usr/bin/wget", "etc/anvil/udhcpc.sh", "usr/sbin/iscsistart",
                 "lib64/ld-linux-x86-64.so.2", "lib/modules/virtio_net.ko", "lib/modules/e1000.ko",
                 "lib/modules/iscsi_tcp.ko", "lib/modules/crc32c_generic.ko", "lib/modules/sd_mod.ko"):
        assert want in files, want
    assert files["dev/console"][0] & 0o170000 == 0o020000   # a character device, made without mknod
    # dependencies load first: virtio_ring before virtio_net, scsi_mod before sd_mod
    order = files["etc/anvil/modules"][1].decode().split()
    assert order.index("virtio_ring") < order.index("virtio_net")
    assert order.index("scsi_mod") < order.index("sd_mod")
    # a warm call does no work and answers the paths relative to images/
    t0 = time.monotonic()
    assert ensure_lab_image(lab_image.dir.parent, CACHE) == ("lab/vmlinuz", "lab/initrd.img")
    assert time.monotonic() - t0 < 2.0


async def test_boot_net_taps_are_linux_bridge_switch_ports(boot_net: BootNet) -> None:
    switch = registry.create_switch(registry.switch_driver_for_address(boot_net.switch_address()))
    sw = SwitchRef(name="lab-sw", address=boot_net.switch_address())
    try:
        assert await switch.list_ports(sw) == boot_net.taps == ("tap01",)
        await switch.set_port(sw, "tap01", PortConfig(native=100, up=False))   # fence: the VM loses its cable
        assert not (await switch.get_port(sw, "tap01")).up
        await switch.set_port(sw, "tap01", PortConfig(native=100, up=True))
        assert (await switch.get_port(sw, "tap01")).up
    finally:
        await switch.close()


async def _power_on(ipmi: BmcDriver, vm: LabVm, device: BootDevice) -> float:
    bmc = bmc_of(vm)
    await ipmi.set_next_boot(bmc, BootSetting(device, BootMode.LEGACY, persistent=False))
    t0 = time.monotonic()
    await ipmi.set_power(bmc, PowerAction.ON)
    assert await ipmi.get_power(bmc) is PowerState.ON
    return t0


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:g}s")
        await asyncio.sleep(0.1)


def _serial(vm: LabVm) -> Callable[[], str]:
    def tail() -> str:
        try:
            text = vm.serial_log.read_text(errors="replace")
        except OSError:
            return "(no serial log)"
        return "serial:\n" + "\n".join(line for line in text.splitlines() if "anvil-agent" in line)[-3000:]
    return tail


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_ipmi_network_boot_calls_back_heartbeats_and_soft_powers_off(
        boot_rig: BootRig, lab_vm: LabVm, ipmi: BmcDriver, record_property: Callable[[str, object], None]) -> None:
    boot_rig.set_script(image_script(boot_rig, mode="agent"))
    bmc = bmc_of(lab_vm)
    t0 = await _power_on(ipmi, lab_vm, BootDevice.NETWORK)
    wall0 = time.time() - (time.monotonic() - t0)

    cb = await boot_rig.wait_for("callback", BOOT_TIMEOUT, "boot callback", debug=_serial(lab_vm))
    boot_s = cb["t"] - wall0
    record_property("power_on_to_callback_s", round(boot_s, 1))
    print(f"BMC power-on -> callback: {boot_s:.1f} s")
    fields = cb["fields"]
    assert cb["status"] == 200
    assert fields["token"] == boot_rig.token
    assert fields["profile"] == "acme/web-01"
    assert fields["mac"] == lab_vm.mac
    assert fields["mode"] == "agent"
    assert fields["disk"] == "none"
    assert fields["hostname"] == "web-01"
    assert fields["ip"].startswith("10.77.0.")
    assert fields["kernel"].endswith("-amd64")
    # iPXE asked for the script with the VM's MAC (dnsmasq's iPXE branch)
    asked = [parse_qs(urlsplit(e["path"]).query).get("mac") for e in boot_rig.entries("get")
             if e["path"].startswith("/boot.ipxe")]
    assert [lab_vm.mac] in asked

    beat = await boot_rig.wait_for("heartbeat", 15, "heartbeat", debug=_serial(lab_vm))
    assert beat["fields"] == {"secret": boot_rig.secret} and beat["status"] == 204
    # the one-time network boot was used up by this boot
    assert (await ipmi.get_next_boot(bmc)).device is BootDevice.DISK

    # soft off: the ACPI power button reaches the image's acpid, which powers the VM off
    qemu = lab_vm.state()["pid"]
    assert qemu and not _gone(qemu)
    await ipmi.set_power(bmc, PowerAction.SOFT_OFF)
    deadline = time.monotonic() + 30
    while await ipmi.get_power(bmc) is not PowerState.OFF:
        assert time.monotonic() < deadline, "soft off did not power the VM off\n" + _serial(lab_vm)()
        await asyncio.sleep(0.2)
    assert _gone(qemu), "QEMU still running after IPMI soft off"
    state = lab_vm.state()
    assert state["power"] == "off" and state["pid"] is None and state["last_exit"] == 0


async def test_killed_qemu_reads_power_off_then_hard_power_off(lab_vm: LabVm, ipmi: BmcDriver) -> None:
    """The blade dies: its QEMU is killed from outside, and the BMC says off."""
    bmc = bmc_of(lab_vm)
    await _power_on(ipmi, lab_vm, BootDevice.NETWORK)
    state = lab_vm.state()
    assert state["power"] == "on" and state["running_bootdev"] == "network"
    qemu = state["pid"]
    uuid = (await ipmi.facts(bmc)).system_uuid
    assert uuid == lab_vm.uuid

    os.kill(qemu, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while await ipmi.get_power(bmc) is not PowerState.OFF:
        assert time.monotonic() < deadline, "BMC still reports on 10 s after QEMU was killed"
        await asyncio.sleep(0.2)
    await _until(lambda: lab_vm.state()["power"] == "off", 5, "state file power off")
    assert lab_vm.state()["last_exit"] == -signal.SIGKILL

    # it powers on again, now from disk (the one-time network boot was used up) ...
    await ipmi.set_power(bmc, PowerAction.ON)
    assert await ipmi.get_power(bmc) is PowerState.ON
    state = lab_vm.state()
    assert state["running_bootdev"] == "disk" and state["boots"] == 2
    qemu = state["pid"]
    # ... as QEMU itself, not `ip netns exec` (which execs it): its PID is the one QEMU wrote
    assert int((Path(lab_vm.run_dir) / f"{lab_vm.name}.pid").read_text()) == qemu
    # ... and a hard power off (QMP quit) ends it at once
    await ipmi.set_power(bmc, PowerAction.OFF)
    assert await ipmi.get_power(bmc) is PowerState.OFF
    assert _gone(qemu), "QEMU still running after IPMI power off"

    # a BMC told to stop (SIGTERM to it alone, not its group) takes its running VM down
    await ipmi.set_power(bmc, PowerAction.ON)
    qemu = lab_vm.state()["pid"]
    assert qemu and not _gone(qemu)
    os.kill(lab_vm.pid, signal.SIGTERM)
    await _until(lambda: _gone(lab_vm.pid) and _gone(qemu), 10, "BMC and its QEMU gone after SIGTERM")


async def test_iscsi_sanhook_oneshot_reads_then_writes_the_disk_marker(
        boot_rig: BootRig, iscsi_target: IscsiTarget, lab_vm: LabVm, ipmi: BmcDriver) -> None:
    with open(iscsi_target.backing, "r+b") as fh:
        fh.seek(2 * 512)
        fh.write(b"MARKER-BEFORE\0")
    boot_rig.set_script(image_script(
        boot_rig, mode="oneshot", extra=f"anvil.disk_write=WRITTEN-BY-{lab_vm.name}",
        pre=f"set initiator-iqn {iscsi_target.initiator}\nsanhook {iscsi_target.root_path}\n"))
    bmc = bmc_of(lab_vm)
    await _power_on(ipmi, lab_vm, BootDevice.NETWORK)

    cb = await boot_rig.wait_for("callback", BOOT_TIMEOUT, "boot callback", debug=_serial(lab_vm))
    assert cb["fields"]["disk"] == "MARKER-BEFORE"
    assert cb["fields"]["mode"] == "oneshot"
    # oneshot: the guest powers itself off after the callback, and the BMC sees it
    deadline = time.monotonic() + 30
    while await ipmi.get_power(bmc) is not PowerState.OFF:
        assert time.monotonic() < deadline, "oneshot VM did not power off\n" + _serial(lab_vm)()
        await asyncio.sleep(0.5)
    with open(iscsi_target.backing, "rb") as fh:
        fh.seek(2 * 512)
        sector = fh.read(512)
    assert sector.rstrip(b"\0") == f"WRITTEN-BY-{lab_vm.name}".encode()
    assert not boot_rig.entries("heartbeat")
