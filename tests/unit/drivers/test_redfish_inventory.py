"""Which Redfish EthernetInterfaces are a blade's NICs, and its CPUs, threads and memory (pure rules).

The documents here are cut down to the properties each rule reads; whole recorded documents
are in tests/fixtures/redfish and go through the real driver in tests/integration/bmc.
"""

from __future__ import annotations

from typing import Any

import pytest

from appliance.drivers.protocols import NicFact
from appliance.drivers.redfish import inventory as inv
from appliance.drivers.redfish.identity import Ndf


def _eth(ident: str, perm: str | None = None, mac: str | None = None, **more: Any) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"Id": ident, **more}
    if perm is not None:
        body["PermanentMACAddress"] = perm
    if mac is not None:
        body["MACAddress"] = mac
    return f"/redfish/v1/Systems/1/EthernetInterfaces/{ident}", body


@pytest.mark.parametrize(("value", "want"), [
    ("12:44:6A:3B:04:11", "12:44:6a:3b:04:11"),
    ("12-44-6a-3b-04-11", "12:44:6a:3b:04:11"),
    (" 12446A3B0411 ", "12:44:6a:3b:04:11"),
    ("00:00:00:00:00:00", None),            # unset (bmclib's recorded manager NIC says this)
    ("FB:AA:1D:4E:D0:7A", None),            # multicast bit: DMTF's public-tower
    ("12:44:6a:3b:04", None),
    ("12:44:6a:3b:04:11:22", None),
    ("12:44:6a:3b:04:1g", None),
    ("", None),
    (None, None),
    (42, None),
])
def test_nic_mac_accepts_only_a_unicast_six_octet_mac(value: object, want: str | None) -> None:
    assert inv.nic_mac(value) == want


def test_virtual_host_and_related_interfaces_are_not_nics() -> None:
    got, skipped = inv.nics([
        _eth("nic1", "12:44:6a:3b:04:11", "12:44:6a:3b:04:11", EthernetInterfaceType="Physical"),
        _eth("vlan1", "12:44:6a:3b:04:11", "12:44:6a:3b:04:11", EthernetInterfaceType="Virtual",
             Links={"RelatedInterfaces": [{"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces/nic1"}]}),
        _eth("bond0", None, "02:00:00:00:00:09", EthernetInterfaceType="Virtual"),
        _eth("tomanager", "aa:bb:cc:dd:ee:fe", "aa:bb:cc:dd:ee:fe",
             Links={"HostInterface": {"@odata.id": "/redfish/v1/Managers/BMC/HostInterfaces/1"}}),
        _eth("vlan2", None, "12:44:6a:3b:88:90",
             Links={"RelatedInterfaces": [{"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces/nic2"}]}),
        _eth("empty-slot", "12:44:6a:3b:99:99", None, Status={"State": "Absent"}),
    ])
    assert got == (NicFact("nic1", "12:44:6a:3b:04:11", None, "12:44:6a:3b:04:11"),)
    assert {s.name: s.reason for s in skipped} == {
        "vlan1": "a virtual interface (EthernetInterfaceType Virtual)",
        "bond0": "a virtual interface (EthernetInterfaceType Virtual)",
        "tomanager": "the BMC's host interface (Links.HostInterface)",
        "vlan2": "built on other interfaces (Links.RelatedInterfaces)",
        "empty-slot": "absent (Status.State Absent)",
    }


def test_a_physical_nic_with_vlan_tagging_on_is_still_a_nic() -> None:
    """public-rackmount1's NIC 2 has VLANEnable true and its own RelatedInterfaces-free links."""
    got, _ = inv.nics([_eth("nic2", "12:44:6a:3b:88:90", "aa:bb:cc:dd:ee:00", EthernetInterfaceType="Physical",
                            VLAN={"VLANEnable": True, "VLANId": 101}, SpeedMbps=1000)])
    assert got == (NicFact("nic2", "12:44:6a:3b:88:90", 1000, "aa:bb:cc:dd:ee:00"),)


def test_identity_is_the_burned_in_mac_else_the_current_one() -> None:
    got, skipped = inv.nics([
        _eth("a", "12:44:6a:3b:88:90", "aa:bb:cc:dd:ee:00"),        # virtual MAC set: burned-in is the key
        _eth("b", None, "14:02:EC:D9:3C:80"),                        # iLO 5 / AMI: no permanent MAC reported
        ("/x/c", {"Id": "c", "PermanentMACAddress": "80:18:44:DE:4F:E6", "MacAddress": "80:18:44:DE:4F:E6"}),  # iDRAC 8
        _eth("d", "00:00:00:00:00:00", "52:54:00:12:34:56"),         # junk permanent, usable current
        _eth("e", "FB:AA:1D:4E:D0:7A", "FB:AA:1D:4E:D0:7A"),         # nothing usable
        _eth("f"),                                                    # no MAC at all
    ])
    assert [(n.name, n.mac, n.current_mac) for n in got] == [
        ("a", "12:44:6a:3b:88:90", "aa:bb:cc:dd:ee:00"),
        ("b", "14:02:ec:d9:3c:80", "14:02:ec:d9:3c:80"),
        ("c", "80:18:44:de:4f:e6", "80:18:44:de:4f:e6"),
        ("d", "52:54:00:12:34:56", "52:54:00:12:34:56"),
    ]
    assert {s.name: s.reason for s in skipped} == {
        "e": "MAC 'FB:AA:1D:4E:D0:7A' cannot be a NIC's", "f": "no MAC address"}


def test_one_mac_twice_is_one_nic_the_physical_one_else_the_first() -> None:
    got, _ = inv.nics([
        _eth("sub", "12:44:6a:3b:04:11", "12:44:6a:3b:04:11", VLAN={"VLANEnable": True, "VLANId": 7}),
        _eth("other", "12:44:6a:3b:04:22", "12:44:6a:3b:04:22"),
        _eth("port", "12:44:6a:3b:04:11", "12:44:6a:3b:04:11", EthernetInterfaceType="Physical"),
        _eth("again", "12:44:6A:3B:04:22", None),
    ])
    # The Physical one wins MAC ..:11 and takes its own place in the BMC's order; ..:22 stays with the first.
    assert [(n.name, n.mac) for n in got] == [("other", "12:44:6a:3b:04:22"), ("port", "12:44:6a:3b:04:11")]
    # Neither says Physical: the one not VLAN-tagged wins, else the first.
    got, _ = inv.nics([_eth("tagged", "12:44:6a:3b:04:11", VLAN={"VLANEnable": True, "VLANId": 7}),
                       _eth("plain", "12:44:6a:3b:04:11", VLAN={"VLANEnable": False}),
                       _eth("plain-too", "12:44:6a:3b:04:11")])
    assert [n.name for n in got] == ["plain"]


def test_speed_is_known_only_when_positive() -> None:
    got, _ = inv.nics([_eth("a", "12:44:6a:3b:04:11", SpeedMbps=0), _eth("b", "12:44:6a:3b:04:12", SpeedMbps=25000),
                       _eth("c", "12:44:6a:3b:04:13", SpeedMbps=None), _eth("d", "12:44:6a:3b:04:14", SpeedMbps=True)])
    assert [n.speed_mbps for n in got] == [None, 25000, None, None]


def test_nics_from_network_device_functions() -> None:
    ndfs = [
        Ndf("/c/1/ndf/1", {"Id": "1", "NetDevFuncType": "Ethernet",
                           "Ethernet": {"PermanentMACAddress": "00:0C:29:9A:98:ED",
                                        "MACAddress": "02:00:00:00:00:01"}}),
        Ndf("/c/1/ndf/fc", {"Id": "fc", "NetDevFuncType": "FibreChannel",
                            "FibreChannel": {"WWPN": "10:00:00:00:00:00:00:01"}}),
        Ndf("/c/2/ndf/1", {"Id": "1", "NetDevFuncType": "Ethernet",
                           "Ethernet": {"PermanentMACAddress": "00:0c:29:9a:98:ed"}}),   # same port seen twice
        Ndf("/c/2/ndf/2", {"Id": "2", "NetDevFuncType": "Ethernet", "Ethernet": {"MACAddress": "a1:b1:c1:d1:e1:f1"}}),
    ]
    got, skipped = inv.nics_from_functions(ndfs)
    assert got == (NicFact("1", "00:0c:29:9a:98:ed", None, "02:00:00:00:00:01"),)
    assert [(s.name, s.reason) for s in skipped] == [("2", "MAC 'a1:b1:c1:d1:e1:f1' cannot be a NIC's")]


def test_summaries_give_cpus_threads_and_memory_when_they_know() -> None:
    system = {"ProcessorSummary": {"Count": 2, "LogicalProcessorCount": 112},
              "MemorySummary": {"TotalSystemMemoryGiB": 127.9}}
    assert inv.processor_summary(system) == (2, 112)
    assert inv.memory_summary(system) == 128
    # Missing, zero (some BMCs before POST) or not a number: unknown, to be counted from the collections.
    for summary in ({}, {"ProcessorSummary": {"Count": 0}, "MemorySummary": {"TotalSystemMemoryGiB": 0}},
                    {"ProcessorSummary": {"Count": "2"}, "MemorySummary": {"TotalSystemMemoryGiB": None}},
                    {"ProcessorSummary": None, "MemorySummary": []}):
        assert inv.processor_summary(summary) == (None, None)
        assert inv.memory_summary(summary) is None
    assert inv.processor_summary({"ProcessorSummary": {"Count": 1}}) == (1, None)


def test_processors_count_present_cpus_and_their_threads() -> None:
    cpu = {"ProcessorType": "CPU", "TotalThreads": 24, "Status": {"State": "Enabled"}}
    assert inv.processors([cpu, dict(cpu), {"ProcessorType": "GPU", "TotalThreads": 4096},
                           {"ProcessorType": "CPU", "Status": {"State": "Absent"}}]) == (2, 48)
    assert inv.processors([{"TotalThreads": 8}]) == (1, 8)                 # no ProcessorType: a CPU
    assert inv.processors([cpu, {"ProcessorType": "CPU"}]) == (2, None)   # one CPU does not say: unknown
    assert inv.processors([]) == (None, None)                               # Cray EX node cards list none


def test_memory_adds_present_dram() -> None:
    dimm = {"MemoryType": "DRAM", "CapacityMiB": 16384, "Status": {"State": "Enabled"}}
    assert inv.memory([dimm, dict(dimm), {"CapacityMiB": 32768},
                       {"MemoryType": "IntelOptane", "CapacityMiB": 131072},
                       {"MemoryType": "DRAM", "Status": {"State": "Absent"}, "CapacityMiB": 16384},
                       {"MemoryType": "DRAM", "CapacityMiB": None}]) == 64
    assert inv.memory([{"CapacityMiB": 15625}] * 16) == 244                 # Gigabyte: 16 x 15625 MiB
    assert inv.memory([]) is None


@pytest.mark.parametrize(("value", "want"), [(" ", None), ("", None), (" R640 ", "R640"), (None, None), (3, None)])
def test_text_properties_are_trimmed_and_blank_is_unknown(value: object, want: str | None) -> None:
    assert inv.text(value) == want
