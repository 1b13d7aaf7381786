"""The Redfish driver's inspect against real Redfish documents, not only our sushy-tools lab.

Each source under tests/fixtures/redfish is a DMTF mockup or a recording of a real BMC
(HPE iLO 5, Dell iDRAC 8, Gigabyte/AMI), served over HTTP on loopback by document
(tests.support.recorded_redfish): the driver logs in with a session and reads them over
its real HTTP path. What each system should yield is written out here by hand from the
documents, so a rule change shows up as a diff in this table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from appliance.drivers.protocols import BladeFacts, Bmc, Secret
from appliance.drivers.redfish import RedfishDriver
from tests.support.recorded_redfish import recorded_bmc

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Want:
    cpus: int | None
    threads: int | None
    memory_gib: int | None
    nics: list[tuple[str, str, str | None]]            # name, identity (burned-in) MAC, current MAC
    uuid: str | None = None
    model: str | None = None
    serial: str | None = None
    bios: str | None = None
    hbas: list[str] = field(default_factory=list)


CASES: dict[tuple[str, str], Want] = {
    # The system of issue 21: VLAN1 (Virtual, RelatedInterfaces, NIC 1's MAC) and ToManager (the BMC's host
    # interface) are not NICs; NIC 2 is known by its burned-in MAC, the MAC it uses now beside it.
    ("dmtf-public-rackmount1", "437XR1138R2"): Want(
        2, 16, 96,
        [("12446A3B0411", "12:44:6a:3b:04:11", "12:44:6a:3b:04:11"),
         ("12446A3B8890", "12:44:6a:3b:88:90", "aa:bb:cc:dd:ee:00")],
        uuid="38947555-7742-3448-3784-823347823834", model="3500", serial="437XR1138R2",
        bios="P79 v1.45 (12/06/2017)"),
    # EthernetInterfaces with multicast MACs (FB:AA:…): the NetworkDeviceFunctions give the NICs.
    ("dmtf-public-tower", "437XR1238R2"): Want(
        8, 256, 1024,
        [("1", "00:0c:29:9a:98:ed", "00:0c:29:9a:98:ed"), ("2", "00:0c:29:9a:98:ef", "00:0c:29:9a:98:ef")],
        uuid="38947555-7742-3448-3784-823347823834", model="3500", serial="437XR1238R2",
        bios="P79 v1.95 (12/06/2019)"),
    # Blades behind one manager: no NICs, no UUID; threads from Processors (the summary has only Count).
    **{("dmtf-public-bladed", f"529QB945{i}R6"): Want(1, 8, 64, [], model="SX1000", serial=f"529QB945{i}R6",
                                                      bios="P86 v1.58 (10/15/2015)") for i in range(4)},
    # No summaries at all: CPUs, threads and memory counted from Processors and Memory.
    ("dmtf-public-composability", "SystemPreResourceBlock"): Want(
        1, 16, 8, [("SystemNIC", "aa:bb:cc:dd:ee:fd", "aa:bb:cc:dd:ee:fd")],
        uuid="37596f04-b032-48ce-9bad-7d55a61fe579"),
    ("dmtf-public-composability", "ComposedSystem"): Want(
        2, 32, 32, [("Block1OnboardNIC", "aa:bb:cc:dd:ee:fd", "aa:bb:cc:dd:ee:fd")],
        uuid="37596f04-b032-48ce-9bad-7d55a61fe574"),
    # Partition 2 lists one MAC twice (one NIC) and an interface without a MAC (no NIC).
    ("dmtf-public-bladed-partitions", "ComposedPartition2"): Want(
        6, 184, 384, [("2", "aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff")],
        uuid="92384634-2938-2342-8820-489239905423", model="Constoto-2S-B Server Partition", bios="5.2.3"),
    # iLO 5: links end in "/", no PermanentMACAddress, threads only per Processor.
    ("hpe-ilo5-proliant-dl325-gen10plus", "1"): Want(
        1, 32, 128, [("1", "14:02:ec:d9:3c:80", "14:02:ec:d9:3c:80"), ("2", "14:02:ec:d9:3c:81", "14:02:ec:d9:3c:81")],
        uuid="36383150-3630-584d-5130-313930323048", model="ProLiant DL325 Gen10 Plus", serial="MXQ019020H",
        bios="A43 v1.20 (02/28/2020)"),
    # iDRAC 8: "MacAddress" (sic), Model " ", sessions at /redfish/v1/Sessions, NICs in the BMC's order.
    ("dell-idrac8-poweredge-13g", "System.Embedded.1"): Want(
        2, 48, 128,
        [("NIC.Integrated.1-3-1", "80:18:44:de:4f:e6", "80:18:44:de:4f:e6"),
         ("NIC.Integrated.1-4-1", "80:18:44:de:4f:e7", "80:18:44:de:4f:e7"),
         ("NIC.Integrated.1-1-1", "80:18:44:de:4f:e4", "80:18:44:de:4f:e4"),
         ("NIC.Integrated.1-2-1", "80:18:44:de:4f:e5", "80:18:44:de:4f:e5")],
        uuid="4c4c4544-0057-3010-8057-b9c04f484b32", model=None, serial="CNIVC0076B0735", bios="2.4.3"),
    # AMI (Gigabyte): only MACAddress; ProcessorSummary without threads.
    ("gigabyte-ami-h262-z63", "Self"): Want(
        2, 128, 244, [("1", "b4:2e:99:b5:d7:11", "b4:2e:99:b5:d7:11"), ("2", "b4:2e:99:b5:d7:12", "b4:2e:99:b5:d7:12")],
        uuid="cd210000-3b17-11ea-8000-b42e99b5d711", model="H262-Z63-YF", serial="GJGAN7012A014201", bios="C12"),
}


@pytest.fixture
async def driver() -> AsyncIterator[RedfishDriver]:
    d = RedfishDriver()
    try:
        yield d
    finally:
        await d.close()


def _got(facts: BladeFacts) -> Want:
    return Want(facts.cpus, facts.threads, facts.memory_gib,
                [(n.name, n.mac, n.current_mac) for n in facts.nics],
                uuid=facts.system_uuid, model=facts.model, serial=facts.serial, bios=facts.firmware.get("bios"),
                hbas=[h.wwpn for h in facts.hbas])


@pytest.mark.parametrize(("source", "system"), list(CASES), ids=[f"{s}/{i}" for s, i in CASES])
async def test_inspect_reads_the_recorded_system(driver: RedfishDriver, source: str, system: str) -> None:
    with recorded_bmc(source) as bmc:
        path = f"/redfish/v1/Systems/{system}"
        facts = await driver.facts(Bmc(system, bmc.address(path), bmc.username, Secret(bmc.password), timeout=5))
        assert _got(facts) == CASES[(source, system)]
        # The real login path ran (every root here names Links.Sessions), and inspect wrote nothing.
        assert bmc.logins == 1 and bmc.writes == []


async def test_summaries_spare_the_processor_and_memory_reads(driver: RedfishDriver) -> None:
    """A System whose summaries say everything costs no GET of Processors or Memory."""
    with recorded_bmc("dmtf-public-rackmount1") as bmc:
        path = "/redfish/v1/Systems/437XR1138R2"
        await driver.facts(Bmc("rack", bmc.address(path), bmc.username, Secret(bmc.password), timeout=5))
        assert not [p for p in bmc.gets if "/Processors" in p or "/Memory" in p]
        assert len(bmc.gets) == 8, bmc.gets   # root, System, Chassis (NDFs), EthernetInterfaces + 4 members
