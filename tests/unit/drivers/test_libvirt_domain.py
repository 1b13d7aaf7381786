"""A VM host's slot ↔ libvirt domain XML (pure): identity, VLANs as OVS tags, boot order."""

from __future__ import annotations

import pytest
from defusedxml import ElementTree as SafeET

from appliance.drivers import registry
from appliance.drivers.errors import BadSettings
from appliance.drivers.libvirt.domain import SlotError, new_slot, parse, render
from appliance.drivers.libvirt.driver import blade_address, split_address
from appliance.drivers.protocols import BootDevice, BootMode, NicVlans

UUID = "4c4c4544-0042-3510-8052-b4c04f384e0f"


def test_a_new_slot_has_a_stable_burned_in_identity_and_round_trips() -> None:
    a = new_slot("hv1", 1, cpus=2, memory_mib=512, bridge="br0", nics=2)
    assert a == new_slot("hv1", 1, cpus=2, memory_mib=512, bridge="br0", nics=2)    # enrolment is repeatable
    assert a.own_macs != new_slot("hv1", 2, cpus=2, memory_mib=512, bridge="br0", nics=2).own_macs
    assert a.name == "anvil-hv1-01" and a.uuid == a.own_uuid and len(set(a.own_macs)) == 2
    assert parse(render(a)) == a
    dom = SafeET.fromstring(render(a))
    assert dom.get("type") == "qemu"                        # TCG unless the host says kvm
    assert [b.get("dev") for b in dom.findall("os/boot")] == ["network", "hd"]


def test_a_profiles_identity_replaces_the_slots_and_clearing_brings_it_back() -> None:
    slot = new_slot("hv1", 1, cpus=1, memory_mib=256, bridge="br0", nics=2)
    worn = slot.with_identity(UUID, ("02:A0:00:00:00:01",), ())
    assert worn.uuid == UUID and worn.macs == ("02:a0:00:00:00:01", slot.own_macs[1])
    again = parse(render(worn))
    assert again.uuid == UUID and again.own_uuid == slot.own_uuid and again.own_macs == slot.own_macs
    assert again.cleared() == slot


def test_vlans_are_ovs_port_tags_access_or_trunk() -> None:
    slot = new_slot("hv1", 1, cpus=1, memory_mib=256, bridge="ovsbr", bridge_type="ovs", nics=2)
    worn = slot.with_identity(UUID, (), (NicVlans(native=100, tagged=(200, 201)), NicVlans(native=101)))
    dom = SafeET.fromstring(render(worn))
    nics = dom.findall("devices/interface")
    assert all(n.find("virtualport").get("type") == "openvswitch" for n in nics)
    trunk = nics[0].find("vlan")
    assert trunk.get("trunk") == "yes"
    assert [(t.get("id"), t.get("nativeMode")) for t in trunk.findall("tag")] == [
        ("100", "untagged"), ("200", None), ("201", None)]
    assert [(t.get("id"), t.get("nativeMode")) for t in nics[1].find("vlan").findall("tag")] == [("101", None)]
    assert parse(render(worn)).vlans == (NicVlans(100, (200, 201)), NicVlans(101, ()))


def test_vlans_on_a_linux_bridge_are_refused_by_name() -> None:
    slot = new_slot("hv1", 1, cpus=1, memory_mib=256, bridge="br0")
    with pytest.raises(SlotError, match="Open vSwitch bridge; br0 is a Linux bridge"):
        slot.with_identity(None, (), (NicVlans(native=100),))
    with pytest.raises(SlotError, match="the profile has 2 MACs, the slot 1 NICs"):
        slot.with_identity(None, ("02:a0:00:00:00:01", "02:a0:00:00:00:02"), ())


def test_boot_device_and_firmware_follow_the_setting() -> None:
    from dataclasses import replace

    slot = replace(new_slot("hv1", 1, cpus=1, memory_mib=256, bridge="br0"), boot=BootDevice.DISK,
                   mode=BootMode.UEFI)
    dom = SafeET.fromstring(render(slot))
    assert dom.find("os").get("firmware") == "efi"
    assert [b.get("dev") for b in dom.findall("os/boot")] == ["hd", "network"]
    assert parse(render(slot)).boot is BootDevice.DISK


def test_a_domain_anvil_did_not_define_is_not_taken() -> None:
    with pytest.raises(SlotError, match="not an Anvil slot"):
        parse("<domain type='kvm'><name>db1</name><uuid>" + UUID + "</uuid><memory>1024</memory>"
              "<vcpu>1</vcpu></domain>")


def test_addresses_name_the_libvirt_uri_and_the_domain() -> None:
    address = blade_address("qemu+ssh://root@hv1/system", "anvil-hv1-01")
    assert registry.driver_for_address(address) == "libvirt"
    assert split_address(address) == ("qemu+ssh://root@hv1/system", "anvil-hv1-01")
    with pytest.raises(BadSettings, match="names no domain"):
        split_address("libvirt+qemu:///system")
