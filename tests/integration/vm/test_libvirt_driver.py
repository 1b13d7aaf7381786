"""The libvirt BMC driver against a real libvirtd (the lab's, in a namespace of this test's own)
and real QEMU under TCG: power, boot order, inspect, and a profile's identity on a domain.

Checked from outside the driver: the QEMU command line libvirt built (``-uuid``, the NIC's
``mac=``), and libvirt's own view of the domain. No guest boots here (tests/e2e does that).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.drivers import registry
from appliance.drivers.errors import BadSettings
from appliance.drivers.libvirt.domain import new_slot
from appliance.drivers.libvirt.driver import blade_address, define_slot, undefine_slot
from appliance.drivers.protocols import (
    Bmc,
    BmcDriver,
    BootDevice,
    BootMode,
    BootSetting,
    NicVlans,
    PowerAction,
    PowerState,
    Secret,
    VirtualIdentities,
)
from appliance.lab import bootnet, libvirtd, netns
from appliance.lab.ovs_switch import OvsSwitch
from appliance.lab.ovs_switch import missing_tools as ovs_missing
from tests.integration.vm.conftest import CACHE

pytestmark = [pytest.mark.skipif(libvirtd.missing() is not None, reason=libvirtd.missing() or ""),
              pytest.mark.timeout(180)]

PROFILE_UUID = "4c4c4544-0042-3510-8052-b4c04f384e9a"
PROFILE_MAC = "02:a0:00:00:e2:9a"


@pytest.fixture(scope="module")
def vm_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[libvirtd.Libvirtd]:
    ns = netns.unique_prefix("lv") + "h"
    bootnet.create(ns, taps=0)
    lv = None
    try:
        lv = libvirtd.start(tmp_path_factory.mktemp("lv"), ns, CACHE / "libvirt")
        yield lv
    finally:
        if lv is not None:
            libvirtd.stop(lv)
        netns.delete(ns)
    assert not netns.exists(ns)


def _qemu_cmdline(lv: libvirtd.Libvirtd, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = libvirtd.qemu_pids(lv.run_dir)
        if pids:
            return Path(f"/proc/{pids[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        time.sleep(0.1)
    raise AssertionError("libvirt started no QEMU")


async def _until_power(driver: BmcDriver, bmc: Bmc, want: PowerState, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await driver.get_power(bmc) is want:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"power never read {want}")


async def test_a_slot_takes_a_profiles_uuid_and_mac_and_gives_them_back(vm_host: libvirtd.Libvirtd) -> None:
    slot = new_slot("lvt", 1, cpus=1, memory_mib=128, bridge=bootnet.BRIDGE)
    assert await asyncio.to_thread(define_slot, vm_host.uri, slot) == "defined"
    assert await asyncio.to_thread(define_slot, vm_host.uri, slot) == "kept"     # enrolling again
    driver = registry.create(registry.driver_for_address(blade_address(vm_host.uri, slot.name)))
    bmc = Bmc(blade="lvt-01", address=blade_address(vm_host.uri, slot.name), username="", password=Secret(""),
              timeout=30.0)
    try:
        assert driver.name == "libvirt"
        assert await driver.get_power(bmc) is PowerState.OFF
        facts = await driver.facts(bmc)
        assert facts.cpus == 1 and [n.mac for n in facts.nics] == list(slot.own_macs)
        caps = await driver.capabilities(bmc)
        assert caps.mac and caps.uuid and caps.vlans and not caps.iscsi_initiator

        await driver.apply(bmc, VirtualIdentities(macs=(PROFILE_MAC,), uuid=PROFILE_UUID))
        got = await driver.read(bmc)
        assert got.uuid == PROFILE_UUID and got.macs == (PROFILE_MAC,)
        await driver.set_next_boot(bmc, BootSetting(BootDevice.DISK, BootMode.LEGACY))
        assert (await driver.get_next_boot(bmc)).device is BootDevice.DISK
        await driver.set_next_boot(bmc, BootSetting(BootDevice.NETWORK, BootMode.LEGACY))
        assert (await driver.get_next_boot(bmc)).device is BootDevice.NETWORK

        await driver.set_power(bmc, PowerAction.ON)
        await _until_power(driver, bmc, PowerState.ON)
        cmdline = _qemu_cmdline(vm_host)
        # What the guest sees: SMBIOS UUID and NIC MAC are the profile's; TCG, not KVM.
        assert f"-uuid {PROFILE_UUID}" in cmdline, cmdline
        assert f'"mac":"{PROFILE_MAC}"' in cmdline, cmdline
        assert "accel=tcg" in cmdline or "-accel tcg" in cmdline, cmdline
        with pytest.raises(BadSettings, match="running"):
            await driver.apply(bmc, VirtualIdentities(macs=(PROFILE_MAC,), uuid=str(slot.own_uuid)))
        await driver.set_power(bmc, PowerAction.OFF)
        await _until_power(driver, bmc, PowerState.OFF)
        assert libvirtd.qemu_pids(vm_host.run_dir) == []

        with pytest.raises(BadSettings, match="Open vSwitch"):
            await driver.apply(bmc, VirtualIdentities(macs=(PROFILE_MAC,), vlans=(NicVlans(native=100),)))
        assert (await driver.read(bmc)).uuid == PROFILE_UUID      # the refused change changed nothing
        await driver.clear(bmc)
        back = await driver.read(bmc)
        assert back.uuid == slot.own_uuid and back.macs == slot.own_macs
    finally:
        await driver.close()
    assert await asyncio.to_thread(undefine_slot, vm_host.uri, slot.name) == "undefined"
    assert await asyncio.to_thread(undefine_slot, vm_host.uri, slot.name) == "gone"


async def test_an_unknown_domain_is_a_clear_error(vm_host: libvirtd.Libvirtd) -> None:
    driver = registry.create("libvirt")
    bmc = Bmc(blade="ghost", address=blade_address(vm_host.uri, "anvil-none-01"), username="", password=Secret(""))
    try:
        with pytest.raises(BadSettings, match="has no domain anvil-none-01"):
            await driver.get_power(bmc)
    finally:
        await driver.close()


def test_anvil_vm_host_enrolls_lists_shows_and_deletes_against_libvirtd(
        vm_host: libvirtd.Libvirtd, tmp_path: Path) -> None:
    import json

    import libvirt

    from tests.integration.engine.rig import Anvil

    anvil = Anvil(tmp_path)
    bad = anvil("vm-host", "enroll", "hv", "--uri", "qemu:///system?socket=/nonexistent/sock", check=False)
    assert bad.code != 0 and bad.err.startswith("anvil: error:") and "/nonexistent/sock" in bad.err, bad.err
    assert json.loads(anvil("vm-host", "list", "-o", "json").out) == []        # nothing half-enrolled

    out = anvil("vm-host", "enroll", "hv", "--uri", vm_host.uri, "--slots", "2", "--memory-mib", "128").out
    assert "blades hv-01, hv-02" in out, out
    shown = json.loads(anvil("vm-host", "show", "hv", "-o", "json").out)
    assert shown["uri"] == vm_host.uri and [b["state"] for b in shown["blades"]] == ["spare", "spare"]
    blade = json.loads(anvil("blade", "show", "hv-02", "-o", "json").out)
    assert blade["driver"] == "libvirt" and blade["chassis"] == "hv", blade
    conn = libvirt.open(vm_host.uri)
    try:
        assert sorted(conn.listDefinedDomains()) == ["anvil-hv-01", "anvil-hv-02"]
        power = anvil("blade", "power", "hv-01", "status", check=False)
        assert power.code == 0 and "off" in power.out, (power.out, power.err)
        again = anvil("vm-host", "enroll", "hv", "--uri", vm_host.uri, check=False)
        assert again.code != 0 and "already enrolled" in again.err
        anvil("vm-host", "delete", "hv")
        assert conn.listDefinedDomains() == []
    finally:
        conn.close()
    assert json.loads(anvil("blade", "list", "-o", "json").out) == []


@pytest.mark.skipif(ovs_missing() is not None, reason=ovs_missing() or "")
async def test_on_an_ovs_bridge_a_profiles_vlans_become_the_domains_port_tags(tmp_path: Path) -> None:
    """A VM host whose bridge is Open vSwitch (the lab's userspace OVS, libvirtd in the switch's
    namespace): libvirt plugs the domain's port with the tags the profile's VLANs became, as
    OVS itself reads them back — an access port, then a trunk with a native VLAN."""
    ovs = OvsSwitch(tmp_path / "ovs", bridge="vmbr")
    ovs.up()
    lv = None
    try:
        lv = libvirtd.start(tmp_path / "lv", ovs.switch_ns, CACHE / "libvirt", ovs_rundir=ovs.rundir)
        slot = new_slot("ovt", 1, cpus=1, memory_mib=128, bridge="vmbr", bridge_type="ovs")
        await asyncio.to_thread(define_slot, lv.uri, slot)
        driver = registry.create("libvirt")
        bmc = Bmc(blade="ovt-01", address=blade_address(lv.uri, slot.name), username="", password=Secret(""),
                  timeout=30.0)
        try:
            for vlans, want in ((NicVlans(native=100), {"tag": "100", "trunks": "[]"}),
                                (NicVlans(native=100, tagged=(200, 201)),
                                 # libvirt lists the native VLAN among the trunks too, as OVS expects
                                 {"tag": "100", "trunks": "[100, 200, 201]", "vlan_mode": "native-untagged"})):
                await driver.apply(bmc, VirtualIdentities(macs=(PROFILE_MAC,), vlans=(vlans,)))
                await driver.set_power(bmc, PowerAction.ON)
                await _until_power(driver, bmc, PowerState.ON)
                ports = [p for p in ovs.vsctl("list-ports", "vmbr").split() if p.startswith("vnet")]
                assert len(ports) == 1, ports
                got = {col: ovs.vsctl("get", "port", ports[0], col).strip() for col in want}
                assert got == want, got
                await driver.set_power(bmc, PowerAction.OFF)
                await _until_power(driver, bmc, PowerState.OFF)
            await driver.clear(bmc)
            assert (await driver.read(bmc)).vlans == ()
        finally:
            await driver.close()
    finally:
        if lv is not None:
            libvirtd.stop(lv)
        ovs.down()
    assert not netns.exists(ovs.switch_ns)
