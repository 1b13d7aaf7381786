"""Set-then-confirm-by-poll against sushy-tools' own random 1-11 s power delay."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.drivers.protocols import Bmc, PowerAction, PowerState, Secret
from appliance.drivers.redfish import RedfishDriver
from appliance.lab import procs, redfish_emulator

from .conftest import wait_power


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_power_on_with_stock_random_delay_is_confirmed_by_polling(tmp_path: Path) -> None:
    systems = redfish_emulator.make_systems(1, seed=3)
    emu = redfish_emulator.start_redfish(tmp_path, procs.free_tcp_port(), systems, power_delay=None)
    driver = RedfishDriver()
    try:
        bmc = Bmc("slow-1", emu.address(systems[0]), "admin", Secret("password"), timeout=5)
        await driver.set_power(bmc, PowerAction.ON)
        # sushy-tools applies it at int(now) + randint(1, 11): anywhere from ~0 to 11 s later.
        await wait_power(driver, bmc, PowerState.ON, deadline=15)
    finally:
        await driver.close()
        redfish_emulator.stop(emu)
