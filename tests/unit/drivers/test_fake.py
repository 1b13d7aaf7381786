from __future__ import annotations

import pytest

from appliance.drivers.errors import BmcAuthFailed, BmcUnreachable, Unsupported
from appliance.drivers.fake import FakeBlade, FakeBmcDriver
from appliance.drivers.protocols import Bmc, IdentityCaps, PowerAction, PowerState, Secret, VirtualIdentities

BMC = Bmc("b1", "fake://b1", "admin", Secret("pw"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_power_changes_after_the_delay_on_the_injected_clock() -> None:
    clock = Clock()
    d = FakeBmcDriver(power_delay=2.0, clock=clock)
    await d.set_power(BMC, PowerAction.ON)
    assert await d.get_power(BMC) is PowerState.OFF
    clock.now = 2.0
    assert await d.get_power(BMC) is PowerState.ON
    assert d.calls.count(("fake://b1", "set_power")) == 1


async def test_injected_failures_are_raised_once_each() -> None:
    d = FakeBmcDriver()
    d.fail("fake://b1", "get_power", BmcUnreachable("b1", "fake", "get_power", "lab"), times=2)
    for _ in range(2):
        with pytest.raises(BmcUnreachable):
            await d.get_power(BMC)
    assert await d.get_power(BMC) is PowerState.OFF


async def test_wrong_password_and_missing_identity_support() -> None:
    d = FakeBmcDriver(blades={"fake://b1": FakeBlade(password="other", caps=IdentityCaps())})
    with pytest.raises(BmcAuthFailed):
        await d.get_power(BMC)
    d.blades["fake://b1"].password = None
    with pytest.raises(Unsupported):
        await d.apply(BMC, VirtualIdentities(macs=("02:00:00:00:00:01",)))
