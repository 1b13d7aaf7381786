"""BMC driver registry: drivers are found through the entry-point group ``anvil.drivers.bmc``.

Each entry point names a factory ``create(**options) -> BmcDriver``; a vendor driver
ships as its own package with its own entry point. Built in: ``redfish``, ``ipmi``,
``fake``. (New entry points show up only after the package is (re)installed.)
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from appliance.drivers.errors import BadSettings
from appliance.drivers.protocols import BmcDriver

GROUP = "anvil.drivers.bmc"

_SCHEMES = {
    "redfish+http": "redfish",
    "redfish+https": "redfish",
    "ipmi": "ipmi",
    "fake": "fake",
}


def available() -> tuple[str, ...]:
    """Names of the installed BMC drivers, sorted."""
    return tuple(sorted(ep.name for ep in entry_points(group=GROUP)))


def create(name: str, **options: Any) -> BmcDriver:
    """Instantiate driver ``name`` with ``options``; BadSettings when no such driver is installed."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        installed = ", ".join(available()) or "none"
        raise BadSettings("-", name, "create", f"no BMC driver {name!r} (installed: {installed})")
    factory = matches[0].load()
    driver = factory(**options)
    if not isinstance(driver, BmcDriver):
        raise BadSettings("-", name, "create", f"entry point {matches[0].value} did not return a BmcDriver")
    return driver


def driver_for_address(address: str) -> str:
    """The driver name for a BMC address, by URL scheme (redfish+http(s) → redfish, ipmi, fake)."""
    scheme = urlsplit(address).scheme.lower()
    try:
        return _SCHEMES[scheme]
    except KeyError:
        raise BadSettings("-", "registry", "driver_for_address",
                          f"unknown BMC address scheme {scheme!r} in {address!r}") from None
