"""A monitor probe (power, then health) costs one GET of the System on a real sushy-tools
emulator; health alone, or later than HEALTH_REUSE_S, reads it afresh, and power always does."""

from __future__ import annotations

import time

import pytest

from appliance.drivers.protocols import HealthState, PowerState
from appliance.drivers.redfish import RedfishDriver
from appliance.drivers.redfish import driver as redfish_driver
from appliance.drivers.redfish.session import Connection

from .conftest import Rack

pytestmark = pytest.mark.timeout(60)


async def test_health_right_after_power_reuses_that_read(redfish_rack: Rack, rf: RedfishDriver,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bmc, _ = redfish_rack.take()
    gets: list[str] = []
    real_get = Connection.get

    def counting_get(self: Connection, path: str, blade: str, op: str) -> dict:  # type: ignore[type-arg]
        gets.append(op)
        return real_get(self, path, blade, op)

    monkeypatch.setattr(Connection, "get", counting_get)
    assert await rf.health(bmc) is not None and gets == ["health"]        # alone: its own GET
    gets.clear()
    assert await rf.get_power(bmc) is PowerState.OFF
    assert (await rf.health(bmc)).state is HealthState.OK
    assert gets == ["get_power"]                                          # the probe: one GET
    assert await rf.get_power(bmc) is PowerState.OFF
    assert gets == ["get_power", "get_power"]                             # power is never reused
    monkeypatch.setattr(redfish_driver, "HEALTH_REUSE_S", 0.0)
    time.sleep(0.01)
    await rf.health(bmc)
    assert gets[-1] == "health"                                           # too old: read afresh
