"""Driver registry: BMC drivers in the entry-point group ``anvil.drivers.bmc``, switch
drivers in ``anvil.drivers.switch``, iSCSI target drivers in ``anvil.drivers.storage``.

Each BMC entry point names a factory ``create(**options) -> BmcDriver``, each switch
entry point ``create() -> SwitchDriver``; a vendor driver ships as its own package with
its own entry point. Built in: ``redfish``, ``ipmi``, ``libvirt``, ``fake`` (BMC) and ``snmp``,
``ovs``, ``linux-bridge`` (switch). (New entry points show up only after the package is
(re)installed.)
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from appliance.drivers.errors import BadSettings
from appliance.drivers.protocols import BmcDriver, StorageDriver, SwitchDriver

GROUP = "anvil.drivers.bmc"
SWITCH_GROUP = "anvil.drivers.switch"
STORAGE_GROUP = "anvil.drivers.storage"

_SCHEMES = {
    "redfish+http": "redfish",
    "redfish+https": "redfish",
    "ipmi": "ipmi",
    "fake": "fake",
}

_SWITCH_SCHEMES = {
    "snmp": "snmp",
    "ovs": "ovs",
    "linuxbridge": "linux-bridge",
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
    """The driver name for a BMC address, by URL scheme (redfish+http(s) → redfish, ipmi, fake,
    libvirt+… → libvirt)."""
    scheme = urlsplit(address).scheme.lower()
    if scheme.startswith("libvirt+"):   # libvirt+<libvirt URI>#<domain>: a VM host's domain
        return "libvirt"
    try:
        return _SCHEMES[scheme]
    except KeyError:
        raise BadSettings("-", "registry", "driver_for_address",
                          f"unknown BMC address scheme {scheme!r} in {address!r}") from None


def available_switch() -> tuple[str, ...]:
    """Names of the installed switch drivers, sorted."""
    return tuple(sorted(ep.name for ep in entry_points(group=SWITCH_GROUP)))


def create_switch(name: str) -> SwitchDriver:
    """Instantiate switch driver ``name``; BadSettings when no such driver is installed."""
    matches = [ep for ep in entry_points(group=SWITCH_GROUP) if ep.name == name]
    if not matches:
        installed = ", ".join(available_switch()) or "none"
        raise BadSettings("-", name, "create", f"no switch driver {name!r} (installed: {installed})")
    driver = matches[0].load()()
    if not all(callable(getattr(driver, m, None)) for m in ("get_port", "set_port", "list_ports", "close")):
        raise BadSettings("-", name, "create", f"entry point {matches[0].value} did not return a SwitchDriver")
    return driver  # type: ignore[no-any-return]


def available_storage() -> tuple[str, ...]:
    """Names of the installed storage (iSCSI target) drivers, sorted."""
    return tuple(sorted(ep.name for ep in entry_points(group=STORAGE_GROUP)))


def create_storage(name: str, settings: object | None = None) -> StorageDriver:
    """Instantiate storage driver ``name`` with ``settings``; BadSettings when it is not installed."""
    matches = [ep for ep in entry_points(group=STORAGE_GROUP) if ep.name == name]
    if not matches:
        installed = ", ".join(available_storage()) or "none"
        raise BadSettings("-", name, "create", f"no storage driver {name!r} (installed: {installed})")
    driver = matches[0].load()(settings)
    if not isinstance(driver, StorageDriver):
        raise BadSettings("-", name, "create", f"entry point {matches[0].value} did not return a StorageDriver")
    return driver


def switch_driver_for_address(address: str) -> str:
    """The switch driver name for an address, by scheme (snmp://, ovs:, linuxbridge://)."""
    scheme = urlsplit(address).scheme.lower()
    try:
        return _SWITCH_SCHEMES[scheme]
    except KeyError:
        raise BadSettings("-", "registry", "switch_driver_for_address",
                          f"unknown switch address scheme {scheme!r} in {address!r} "
                          "(snmp://HOST:PORT, ovs:unix:/path/db.sock?bridge=BR, linuxbridge://…)") from None
