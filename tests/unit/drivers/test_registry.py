from __future__ import annotations

import pytest

from appliance.drivers import registry
from appliance.drivers.errors import BadSettings
from appliance.drivers.protocols import BmcDriver


def test_builtin_drivers_are_registered_as_entry_points() -> None:
    assert {"redfish", "ipmi", "fake"} <= set(registry.available())


@pytest.mark.parametrize("name", ["redfish", "ipmi", "fake"])
async def test_create_returns_a_bmc_driver(name: str) -> None:
    driver = registry.create(name)
    assert isinstance(driver, BmcDriver)
    assert driver.name == name
    await driver.close()


def test_unknown_driver_is_bad_settings() -> None:
    with pytest.raises(BadSettings, match="no BMC driver"):
        registry.create("nope")


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("redfish+https://10.0.0.9/redfish/v1/Systems/1", "redfish"),
        ("redfish+http://127.0.0.1:8000/redfish/v1/Systems/abc", "redfish"),
        ("ipmi://10.0.0.9:623", "ipmi"),
        ("fake://blade-1", "fake"),
    ],
)
def test_driver_is_chosen_by_address_scheme(address: str, name: str) -> None:
    assert registry.driver_for_address(address) == name


def test_unknown_scheme_is_bad_settings() -> None:
    with pytest.raises(BadSettings):
        registry.driver_for_address("http://10.0.0.9/")
