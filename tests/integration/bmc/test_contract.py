"""One contract, every BMC driver: the same behaviour over Redfish (sushy-tools) and IPMI (pyghmi BMC)."""

from __future__ import annotations

import pytest

from appliance.drivers.errors import Unsupported
from appliance.drivers.protocols import (
    BmcDriver,
    BootDevice,
    BootMode,
    BootSetting,
    HealthState,
    IdentityCaps,
    PowerAction,
    PowerState,
    VirtualIdentities,
)

from .conftest import Rack, facts_macs, wait_power

pytestmark = pytest.mark.timeout(60)


async def test_power_on_then_off_is_confirmed_by_polling(rack: Rack, driver: BmcDriver) -> None:
    bmc, _ = rack.take()
    assert await driver.get_power(bmc) is PowerState.OFF
    await driver.set_power(bmc, PowerAction.ON)
    await wait_power(driver, bmc, PowerState.ON, deadline=5)
    await driver.set_power(bmc, PowerAction.OFF)
    await wait_power(driver, bmc, PowerState.OFF, deadline=5)


async def test_soft_off_reaches_off(rack: Rack, driver: BmcDriver) -> None:
    bmc, _ = rack.take()
    await driver.set_power(bmc, PowerAction.ON)
    await wait_power(driver, bmc, PowerState.ON, deadline=5)
    await driver.set_power(bmc, PowerAction.SOFT_OFF)
    await wait_power(driver, bmc, PowerState.OFF, deadline=5)


async def test_power_on_twice_is_harmless(rack: Rack, driver: BmcDriver) -> None:
    bmc, _ = rack.take()
    await driver.set_power(bmc, PowerAction.ON)
    await wait_power(driver, bmc, PowerState.ON, deadline=5)
    await driver.set_power(bmc, PowerAction.ON)
    assert await driver.get_power(bmc) is PowerState.ON


@pytest.mark.parametrize("persistent", [False, True])
async def test_boot_device_network_then_disk_reads_back(rack: Rack, driver: BmcDriver, persistent: bool) -> None:
    bmc, _ = rack.take()
    want = BootSetting(BootDevice.NETWORK, BootMode.UEFI, persistent=persistent)
    await driver.set_next_boot(bmc, want)
    assert await driver.get_next_boot(bmc) == want
    want = BootSetting(BootDevice.DISK, BootMode.UEFI, persistent=persistent)
    await driver.set_next_boot(bmc, want)
    assert await driver.get_next_boot(bmc) == want


async def test_set_boot_is_idempotent(rack: Rack, driver: BmcDriver) -> None:
    bmc, _ = rack.take()
    want = BootSetting(BootDevice.NETWORK, BootMode.UEFI, persistent=True)
    for _ in range(2):
        await driver.set_next_boot(bmc, want)
    assert await driver.get_next_boot(bmc) == want


async def test_inspect_fills_facts_from_the_bmc(rack: Rack, driver: BmcDriver) -> None:
    bmc, expected = rack.take()
    facts = await driver.facts(bmc)
    assert facts.system_uuid == expected["uuid"]
    # IPMI has no standard way to list host NIC MACs: expected["macs"] is [] there.
    assert facts_macs(facts) == expected["macs"]
    assert [h.wwpn for h in facts.hbas] == expected["wwpns"]
    if rack.kind == "redfish":
        assert (facts.cpus, facts.memory_gib) == (expected["cpus"], expected["memory_gib"])
        assert facts.firmware.get("bios")
    else:
        assert facts.firmware.get("bmc")


async def test_healthy_blade_reports_ok(rack: Rack, driver: BmcDriver) -> None:
    bmc, _ = rack.take()
    assert (await driver.health(bmc)).state is HealthState.OK


async def test_identity_capabilities_are_stated_as_data(rack: Rack, driver: BmcDriver) -> None:
    bmc, _ = rack.take()
    caps = await driver.capabilities(bmc)
    if rack.kind == "redfish":
        assert caps == IdentityCaps(mac=True, wwpn=True, wwnn=True, iscsi_initiator=True)
    else:
        assert caps == IdentityCaps()
        with pytest.raises(Unsupported):
            await driver.apply(bmc, VirtualIdentities(macs=("02:00:00:00:00:01",)))
        with pytest.raises(Unsupported):
            await driver.read(bmc)
