"""The Redfish driver's BIOS and firmware-inventory reading against DMTF's published mockups.

The documents are DMTF's own (tests/fixtures/redfish/README.md), served over HTTP by
tests.support.recorded_redfish, so this checks the driver against shapes our emulator did
not invent: a Bios whose settings object lists every attribute (pending ones among them),
no published AttributeRegistry (only Base), and a FirmwareInventory shared between the
System, its Manager and its storage controller.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.domain import bios as dbios
from appliance.drivers.errors import BadSettings
from appliance.drivers.protocols import Bmc, Secret
from appliance.drivers.redfish import RedfishDriver
from appliance.drivers.redfish import bios as rbios
from tests.support.recorded_redfish import FIXTURES, recorded_bmc

pytestmark = pytest.mark.timeout(60)

CURRENT = {"AdminPhone": "", "BootMode": "Uefi", "EmbeddedSata": "Raid", "NicBoot1": "NetworkBoot",
           "NicBoot2": "Disabled", "PowerProfile": "MaxPerf", "ProcCoreDisable": 0,
           "ProcHyperthreading": "Enabled", "ProcTurboMode": "Enabled", "UsbControl": "UsbEnabled"}
CASES = {
    ("dmtf-public-rackmount1", "437XR1138R2"): (
        {"AdminPhone": "(404) 555-1212", "EmbeddedSata": "Ahci", "NicBoot2": "NetworkBoot",
         "ProcTurboMode": "Disabled"},
        {"BMC": "1.45.455b66-rev4", "SS": "2.50", "BIOS": "P79 v1.45"}),
    ("dmtf-public-tower", "437XR1238R2"): (
        {"AdminPhone": "(404) 555-1212", "EmbeddedSata": "RAID", "NicBoot2": "NetworkBoot",
         "ProcTurboMode": "Disabled"},
        {"BMC": "1.45.455b66-rev4", "BIOS": "P79 v1.45"}),
}


@pytest.fixture
async def driver() -> AsyncIterator[RedfishDriver]:
    d = RedfishDriver()
    try:
        yield d
    finally:
        await d.close()


@pytest.mark.parametrize(("source", "system"), list(CASES), ids=[s for s, _ in CASES])
async def test_bios_and_firmware_of_a_dmtf_mockup(driver: RedfishDriver, source: str, system: str) -> None:
    pending, firmware = CASES[(source, system)]
    with recorded_bmc(source) as bmc:
        target = Bmc(system, bmc.address(f"/redfish/v1/Systems/{system}"), bmc.username, Secret(bmc.password),
                     timeout=5)
        got = await driver.bios(target)
        assert dict(got.current) == CURRENT
        assert dict(got.pending) == pending
        assert got.registry == "BiosAttributeRegistryP89.v1_0_0"
        # The service publishes no BIOS registry (Registries lists Base only): the attributes it
        # has are the ones it knows; a profile naming another is refused before anything is sent.
        registry = await driver.bios_registry(target)
        assert registry.source == rbios.CURRENT and set(registry.attributes) == set(CURRENT)
        typed, problems = dbios.plan({"ProcTurboMode": "Disabled", "ProcCoreDisable": "2", "Turbo": "On"}, registry)
        assert typed == {"ProcTurboMode": "Disabled", "ProcCoreDisable": 2}
        assert problems == [f"BIOS attribute 'Turbo' is unknown to this blade (per {rbios.CURRENT})"]

        items = await driver.firmware(target)
        assert {i.component: i.version for i in items} == firmware
        assert all(i.uri == f"/redfish/v1/UpdateService/FirmwareInventory/{i.component}" for i in items)
        assert bmc.writes == []
        # Writing goes to the settings object (@Redfish.Settings), never to the Bios in effect.
        with pytest.raises(BadSettings, match="405"):
            await driver.set_bios(target, typed)
        assert bmc.writes == [("PATCH", f"/redfish/v1/Systems/{system}/Bios/Settings")]


def test_dsp2046_attribute_registry_example_parses() -> None:
    """DMTF's AttributeRegistry example (DSP2046): enumerations with their value names."""
    doc = json.loads(Path(FIXTURES / "dmtf-dsp2046" / "AttributeRegistry-v1-example.json").read_text())
    registry = rbios.registry_from_doc(doc)
    assert registry.source == "BiosAttributeRegistryG9000.v1_0_0"
    assert registry.attributes["NicBoot1"].values == ("NetworkBoot", "Disabled")
    assert registry.attributes["EmbeddedSata"].kind == "Enumeration"
    _, problems = dbios.plan({"EmbeddedSata": "Raid0"}, registry)
    assert problems == ["BIOS attribute EmbeddedSata: 'Raid0' is not one of Ahci, Raid"]
