"""libvirt BMC driver (entry point ``anvil.drivers.bmc: libvirt``): a VM host's domains as blades."""

from __future__ import annotations

from typing import Any

from appliance.drivers.libvirt.driver import LibvirtDriver


def create(**options: Any) -> LibvirtDriver:
    return LibvirtDriver(**options)


__all__ = ["LibvirtDriver", "create"]
